"""Segmenter: SAM (``segment-anything``) turns every box into a mask.

Each image is embedded once (several images share one encoder forward on a GPU), then all
the boxes of that image are decoded together in one mask-decoder call and the masks are
upsampled back to the image's own size.

Models: ``vit_b`` / ``vit_l`` / ``vit_h`` download the official checkpoint once into
``ovperc.hub.cache_dir("sam")`` (checked against its sha256), or pass a local ``.pth``
state dict. The architecture of a local file comes from ``variant``, else from a
``<name>.json`` file next to it (the fields of :class:`SamArchitecture`), else from the
shapes in the state dict.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ovperc.device import resolve_device, resolve_dtype
from ovperc.stages.quantize import check_quantize, quantize_linear
from ovperc.stages.sam_attention import fuse_attention
from ovperc.stages.sam_decoder import share_image_tokens
from ovperc.stages.sam_model import (
    SAM_MODELS,
    SamArchitecture,
    SamCheckpoint,
    load_sam,
    load_state_dict,
    variant_architecture,
)

__all__ = ["SAM_MODELS", "SamArchitecture", "SamCheckpoint", "SamSegmenter", "load_sam",
           "load_state_dict"]

if TYPE_CHECKING:
    import supervision as sv
    import torch
    from segment_anything.modeling import Sam

logger = logging.getLogger(__name__)

#: Upper bound on floats held at once while upsampling masks to image size (~256 MB).
_UPSAMPLE_BUDGET = 64 * 1024 * 1024
#: Boxes per mask-decoder call by default: all of an image's at once on a GPU; small groups
#: on the cpu, where they stay in cache (``bench/bench_sam.py``: 50 vit_b boxes in groups
#: of 4 take half the time of one 50-box call).
GPU_BOXES_PER_CALL = 128
CPU_BOXES_PER_CALL = 4


class SamSegmenter:
    """Masks for detected boxes with Segment Anything.

    Each image is embedded once; all its boxes are prompts of one batched mask-decoder
    call; masks come back at the image's size, thresholded at the model's mask threshold.

    Args:
        model: ``vit_b`` (default), ``vit_l``, ``vit_h``, or a local ``.pth`` state dict.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        dtype: ``float32``; ``float16``/``bfloat16`` on a GPU (image encoder and mask
            decoder are cast; prompts are encoded in float32 and cast to match).
        variant: architecture of a local file (see :func:`load_sam`).
        cache_dir: folder for downloaded official checkpoints.
        multimask: decode three candidate masks per box and keep the one SAM scores best
            (default: one mask per box, as recommended for box prompts).
        encoder_batch_size: images embedded together in one encoder forward; default 4 on
            a GPU and 1 on the cpu (batching does not pay there and the global attention
            of one 1024x1024 image already takes about 1 GB).
        max_boxes_per_call: boxes decoded together at most; more are split into calls.
            Default 128 on a GPU, 4 on the cpu: there the decoder is bound by memory
            traffic (every box runs over all 64x64 image tokens) and small groups that
            stay in cache decode 50 boxes about twice as fast as one call with all of them.
        fused_attention: run the image encoder's attention through PyTorch's fused
            ``scaled_dot_product_attention`` (same result within float tolerance, about 2x
            faster on a CPU; see :mod:`ovperc.stages.sam_attention`); ``False`` keeps
            segment-anything's own code path.
        quantize: ``"int8"``: the image encoder's linear layers (and, with
            ``quantize_decoder``, the mask decoder's) as dynamic int8, CPU only (see
            :mod:`ovperc.stages.quantize`); default ``None``, the float model.
        quantize_decoder: also quantize the mask decoder when ``quantize`` is set.
        shared_decoder: decode the boxes against one copy of the image tokens, projecting
            what all boxes share once and reordering the rest onto the few prompt tokens
            (same masks within float tolerance; see :mod:`ovperc.stages.sam_decoder`);
            ``False`` calls segment-anything's ``MaskDecoder``, which copies the image
            embedding per box. An int8 decoder (``quantize_decoder``) always uses the latter.

    The returned detections are copies of the given ones with ``mask`` set and
    ``data["mask_score"]`` (SAM's predicted IoU of each mask). Boxes are clipped to the
    image before prompting.

    Example:
        >>> import supervision as sv
        >>> segmenter = SamSegmenter("vit_b", device="cpu")  # doctest: +SKIP
        >>> boxes = sv.Detections(xyxy=np.array([[10.0, 20.0, 200.0, 220.0]]))
        >>> [masked] = segmenter.segment([image], [boxes])  # doctest: +SKIP
        >>> masked.mask.shape  # doctest: +SKIP
        (1, 480, 640)
    """

    def __init__(
        self,
        model: str | os.PathLike = "vit_b",
        *,
        device: str = "auto",
        dtype: str = "float32",
        variant: str | SamArchitecture | None = None,
        cache_dir: str | os.PathLike | None = None,
        multimask: bool = False,
        encoder_batch_size: int | None = None,
        max_boxes_per_call: int | None = None,
        fused_attention: bool = True,
        quantize: str | None = None,
        quantize_decoder: bool = False,
        shared_decoder: bool = True,
    ) -> None:
        name = os.fspath(model)
        if name not in SAM_MODELS and not Path(name).expanduser().is_file():
            raise ValueError(
                f"unknown SAM model {name!r}: use one of {', '.join(SAM_MODELS)} or the path of "
                "an existing .pth state dict"
            )
        variant_architecture(variant)
        for label, value in (("encoder_batch_size", encoder_batch_size),
                             ("max_boxes_per_call", max_boxes_per_call)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{label} must be a positive int, got {value!r}")
        self.model_name = name
        self.variant = variant
        self.cache_dir = cache_dir
        self.multimask = bool(multimask)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.encoder_batch_size = encoder_batch_size or (1 if self.device.type == "cpu" else 4)
        self.max_boxes_per_call = max_boxes_per_call or (
            CPU_BOXES_PER_CALL if self.device.type == "cpu" else GPU_BOXES_PER_CALL)
        self.fused_attention = bool(fused_attention)
        self.quantize = check_quantize(quantize, device=self.device, dtype=self.dtype)
        self.quantize_decoder = bool(quantize_decoder)
        self.shared_decoder = bool(shared_decoder)
        self._sam: Sam | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"SamSegmenter({self.model_name!r}, device={str(self.device)!r}, "
                f"dtype={str(self.dtype).removeprefix('torch.')!r})")

    @property
    def sam(self) -> Sam:
        """The loaded ``segment_anything`` model (loaded on first access, once)."""
        with self._lock:
            if self._sam is None:
                sam = load_sam(self.model_name, variant=self.variant, cache_dir=self.cache_dir)
                if self.fused_attention:
                    fuse_attention(sam)
                if self.shared_decoder and not (self.quantize and self.quantize_decoder):
                    share_image_tokens(sam)  # reads the float projection weights
                sam.to(self.device)
                # The prompt encoder always computes in float32; only the heavy parts are cast.
                sam.image_encoder.to(self.dtype)
                sam.mask_decoder.to(self.dtype)
                quantize_linear(sam.image_encoder, self.quantize)
                if self.quantize_decoder:
                    quantize_linear(sam.mask_decoder, self.quantize)
                self._sam = sam
            return self._sam

    def load(self) -> SamSegmenter:
        """Load the model now instead of on first use; returns ``self``.

        Example:
            >>> segmenter = SamSegmenter("vit_b").load()  # doctest: +SKIP
        """
        _ = self.sam
        return self

    def segment(
        self, images: Sequence[np.ndarray], detections: Sequence[sv.Detections]
    ) -> list[sv.Detections]:
        """The given detections, in order, with ``mask`` bool ``(N, H, W)`` in image pixels.

        Args:
            images: RGB ``uint8`` arrays ``(H, W, 3)``.
            detections: one ``sv.Detections`` per image, boxes in that image's pixels.

        Example:
            >>> [masked] = SamSegmenter("vit_b").segment([image], [boxes])  # doctest: +SKIP
        """
        import torch

        images, detections = _check_inputs(images, detections)
        results: list[sv.Detections | None] = [None] * len(images)
        todo = []
        for index, (image, dets) in enumerate(zip(images, detections)):
            if len(dets) == 0:
                results[index] = _with_masks(
                    dets, np.zeros((0, *image.shape[:2]), dtype=bool), np.zeros(0, np.float32)
                )
            else:
                todo.append(index)
        if not todo:
            return results  # type: ignore[return-value]
        sam = self.sam
        logger.debug("segmenting %d boxes in %d images", sum(len(detections[i]) for i in todo),
                     len(todo))
        with torch.inference_mode():
            for start in range(0, len(todo), self.encoder_batch_size):
                chunk = todo[start:start + self.encoder_batch_size]
                inputs, input_sizes = self._preprocess([images[i] for i in chunk])
                embeddings = sam.image_encoder(inputs)
                for i, embedding, input_size in zip(chunk, embeddings, input_sizes):
                    masks, scores = self._decode(embedding, detections[i].xyxy,
                                                 input_size, images[i].shape[:2])
                    results[i] = _with_masks(detections[i], masks, scores)
        return results  # type: ignore[return-value]

    def _preprocess(
        self, images: Sequence[np.ndarray]
    ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Resize (long side to the model input), normalise and pad, stacked as one batch."""
        import torch

        sam = self.sam
        transform = _resize_longest_side(sam.image_encoder.img_size)
        batch, sizes = [], []
        for image in images:
            resized = transform.apply_image(image)
            tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()
            sizes.append((int(tensor.shape[1]), int(tensor.shape[2])))
            batch.append(sam.preprocess(tensor[None])[0])
        return torch.stack(batch).to(self.dtype), sizes

    def _decode(
        self,
        embedding: torch.Tensor,
        xyxy: np.ndarray,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks (bool, image size) and predicted IoUs for one image's boxes."""
        import torch

        sam = self.sam
        height, width = original_size
        boxes = np.asarray(xyxy, dtype=np.float64).copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        transform = _resize_longest_side(sam.image_encoder.img_size)
        prompts = transform.apply_boxes_torch(
            torch.as_tensor(boxes, dtype=torch.float32, device=self.device), original_size
        )
        image_pe = sam.prompt_encoder.get_dense_pe().to(self.dtype)
        masks = np.empty((len(boxes), height, width), dtype=bool)
        scores = np.empty(len(boxes), dtype=np.float32)
        for start in range(0, len(boxes), self.max_boxes_per_call):
            stop = start + self.max_boxes_per_call
            sparse, dense = sam.prompt_encoder(points=None, boxes=prompts[start:stop], masks=None)
            low_res, iou = sam.mask_decoder(
                image_embeddings=embedding[None],
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse.to(self.dtype),
                # without mask inputs the dense prompt is the same for every box: pass it once
                dense_prompt_embeddings=dense[:1].to(self.dtype),
                multimask_output=self.multimask,
            )
            best = iou.float().argmax(dim=1)
            rows = torch.arange(len(best), device=best.device)
            low_res, iou = low_res[rows, best][:, None].float(), iou[rows, best].float()
            scores[start:stop] = iou.cpu().numpy()
            step = max(1, _UPSAMPLE_BUDGET // max(1, height * width, sam.image_encoder.img_size**2))
            for first in range(0, len(low_res), step):
                upsampled = sam.postprocess_masks(low_res[first:first + step], input_size,
                                                  original_size)
                masks[start + first:start + first + len(upsampled)] = (
                    (upsampled[:, 0] > sam.mask_threshold).cpu().numpy()
                )
        return masks, scores


def input_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """SAM's input size for an image: the long side scaled to ``long_side``, no side below 1.

    segment-anything's own rule rounds the short side of a very thin image (1x3000 ->
    0x1024) to 0 and fails; here it is at least one pixel, otherwise the same.

    Example:
        >>> input_shape(480, 640, 1024), input_shape(1, 3000, 1024)
        ((768, 1024), (1, 1024))
    """
    scale = long_side * 1.0 / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


@functools.lru_cache(maxsize=8)
def _resize_longest_side(long_side: int) -> Any:
    """segment-anything's ``ResizeLongestSide`` (images and boxes) using :func:`input_shape`."""
    from segment_anything.utils.transforms import ResizeLongestSide

    class _Clamped(ResizeLongestSide):
        @staticmethod
        def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
            return input_shape(oldh, oldw, long_side_length)

    return _Clamped(long_side)


def _check_inputs(
    images: Sequence[np.ndarray], detections: Sequence[sv.Detections]
) -> tuple[list[np.ndarray], list[sv.Detections]]:
    import supervision as sv

    images, detections = list(images), list(detections)
    if len(images) != len(detections):
        raise ValueError(f"got {len(images)} images but {len(detections)} detections; "
                         "give one sv.Detections per image")
    for index, (image, dets) in enumerate(zip(images, detections)):
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", type(image).__name__)
            raise ValueError(f"image {index} must be an RGB array (H, W, 3), got {shape}")
        if image.dtype != np.uint8:
            raise TypeError(f"image {index} must be uint8, got {image.dtype}")
        if not isinstance(dets, sv.Detections):
            raise TypeError(f"detections {index} must be sv.Detections, got {type(dets).__name__}")
    return images, detections


def _with_masks(dets: sv.Detections, masks: np.ndarray, scores: np.ndarray) -> sv.Detections:
    """A copy of ``dets`` with ``mask`` and ``data["mask_score"]`` set; the input is unchanged."""
    return dataclasses.replace(dets, mask=masks, data={**dets.data, "mask_score": scores})
