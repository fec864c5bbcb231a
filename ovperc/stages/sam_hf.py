"""Segmenter: the transformers SAM family (SAM, SAM-HQ, SAM 2.1, EdgeTAM, SAM 3 tracker).

These models share one interface: a processor that resizes the image and rescales box
prompts, ``get_image_embeddings`` for the image encoder, a forward that takes those
embeddings with ``input_boxes``, and ``post_process_masks`` that brings the low-resolution
masks back to the image's size. So one class serves them all: each image is embedded once
(several images per encoder forward on a GPU), then its boxes are decoded in groups.

The architecture comes from the model's ``config.json`` (``model_type``, see
:data:`ARCHITECTURES`), never from its name. Hub ids: ``facebook/sam2.1-hiera-tiny`` (also
``-small``, ``-base-plus``, ``-large``), ``syscv-community/sam-hq-vit-base`` (``-large``,
``-huge``), ``yonigozlan/EdgeTAM-hf``, ``facebook/sam3`` (its tracker, gated),
``facebook/sam-vit-base``; or any local ``save_pretrained`` folder.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ovperc.device import resolve_device, resolve_dtype
from ovperc.stages.hf_loading import Licence, from_pretrained, model_type
from ovperc.stages.quantize import check_quantize, quantize_linear
from ovperc.stages.sam import CPU_BOXES_PER_CALL, GPU_BOXES_PER_CALL, _check_inputs, _with_masks

if TYPE_CHECKING:
    import supervision as sv

logger = logging.getLogger(__name__)

#: ``model_type`` in ``config.json`` -> transformers model class. ``sam3_video`` is the
#: combined ``facebook/sam3`` checkpoint, whose tracker is loaded.
ARCHITECTURES: dict[str, str] = {
    "sam": "SamModel",
    "sam_hq": "SamHQModel",
    "sam2": "Sam2Model",
    "edgetam": "EdgeTamModel",
    "sam3_tracker": "Sam3TrackerModel",
    "sam3_video": "Sam3TrackerModel",
}
#: ``model_type`` -> processor class, named rather than left to ``AutoProcessor``: the
#: combined SAM 3 folder also holds the detector's processor, which reads boxes differently.
PROCESSORS: dict[str, str] = {
    "sam": "SamProcessor",
    "sam_hq": "SamHQProcessor",
    "sam2": "Sam2Processor",
    "edgetam": "Sam2Processor",
    "sam3_tracker": "Sam3TrackerProcessor",
    "sam3_video": "Sam3TrackerProcessor",
}

DEFAULT_MODEL = "facebook/sam2.1-hiera-tiny"
SAM3_LICENCE = Licence("SAM License", "read its terms on the model page before use")

#: Upper bound on floats held at once while upsampling masks to image size (~256 MB).
_UPSAMPLE_BUDGET = 64 * 1024 * 1024


class HfSamSegmenter:
    """Masks for detected boxes with a transformers SAM-family model.

    Each image is embedded once; its boxes are prompts of batched mask-decoder calls; masks
    come back at the image's size from the processor's own ``post_process_masks``.

    Args:
        model: hub id (default ``facebook/sam2.1-hiera-tiny``) or local folder.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        dtype: ``float32``; ``float16``/``bfloat16`` on a GPU.
        multimask: decode three candidate masks per box and keep the one the model scores
            best (default: one mask per box, as recommended for box prompts).
        encoder_batch_size: images per encoder forward; default 4 on a GPU, 1 on the cpu.
        max_boxes_per_call: boxes per mask-decoder call; default 128 on a GPU, 4 on the cpu
            (see :class:`ovperc.stages.sam.SamSegmenter`).
        cache_dir: Hugging Face cache folder for hub downloads.
        revision: hub revision (branch, tag or commit).
        quantize: ``"int8"``: the model's linear layers as dynamic int8, CPU only (see
            :mod:`ovperc.stages.quantize`); default ``None``, the float model.

    The returned detections are copies of the given ones with ``mask`` (bool ``(N, H, W)``)
    and ``data["mask_score"]`` (the model's predicted IoU). Boxes are clipped to the image.

    Example:
        >>> import supervision as sv
        >>> segmenter = HfSamSegmenter("facebook/sam2.1-hiera-tiny", device="cpu")  # doctest: +SKIP
        >>> boxes = sv.Detections(xyxy=np.array([[10.0, 20.0, 200.0, 220.0]]))
        >>> [masked] = segmenter.segment([image], [boxes])  # doctest: +SKIP
        >>> masked.mask.shape  # doctest: +SKIP
        (1, 480, 640)
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: str = "float32",
        multimask: bool = False,
        encoder_batch_size: int | None = None,
        max_boxes_per_call: int | None = None,
        cache_dir: str | None = None,
        revision: str | None = None,
        quantize: str | None = None,
    ) -> None:
        if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
            raise TypeError(f"model must be a hub id or a folder path, got {model!r}")
        for label, value in (("encoder_batch_size", encoder_batch_size),
                             ("max_boxes_per_call", max_boxes_per_call)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{label} must be a positive int, got {value!r}")
        self.model_name = os.fspath(model)
        self.multimask = bool(multimask)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.encoder_batch_size = encoder_batch_size or (1 if self.device.type == "cpu" else 4)
        self.max_boxes_per_call = max_boxes_per_call or (
            CPU_BOXES_PER_CALL if self.device.type == "cpu" else GPU_BOXES_PER_CALL)
        self.quantize = check_quantize(quantize, device=self.device, dtype=self.dtype)
        self.cache_dir = cache_dir
        self.revision = revision
        self.architecture: str | None = None
        self._model: Any = None
        self._processor: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"HfSamSegmenter({self.model_name!r}, device={str(self.device)!r}, "
                f"dtype={str(self.dtype).removeprefix('torch.')!r})")

    # ------------------------------------------------------------------ loading
    def load(self) -> HfSamSegmenter:
        """Load processor and model now instead of on first use; returns ``self``.

        Raises:
            ValueError: the folder's ``model_type`` is not a SAM-family architecture.
            ModelNotAvailableError: a hub id that cannot be fetched (gated, offline).

        Example:
            >>> segmenter = HfSamSegmenter("./sam-hq-vit-base").load()  # doctest: +SKIP
        """
        with self._lock:
            if self._model is None:
                self._load_locked()
        return self

    def _load_locked(self) -> None:
        import transformers

        hub = {"cache_dir": self.cache_dir, "revision": self.revision}
        kind = model_type(self.model_name, licence=SAM3_LICENCE, **hub)
        if kind not in ARCHITECTURES:
            raise ValueError(
                f"{self.model_name!r} is a {kind!r} model, not a SAM-family segmenter; "
                f"supported model_type values: {', '.join(ARCHITECTURES)}"
            )
        model_class = getattr(transformers, ARCHITECTURES[kind])
        processor = from_pretrained(getattr(transformers, PROCESSORS[kind]), self.model_name,
                                    licence=SAM3_LICENCE, **hub)
        model = from_pretrained(model_class, self.model_name, licence=SAM3_LICENCE, **hub)
        self._processor = processor
        self.architecture = kind
        self._model = quantize_linear(model.to(device=self.device, dtype=self.dtype).eval(), self.quantize)
        logger.info("loaded %s (%s) on %s (%s)", self.model_name, kind, self.device, self.dtype)

    @property
    def model(self) -> Any:
        """The loaded transformers model (loaded on first access, once)."""
        return self.load()._model

    @property
    def processor(self) -> Any:
        """The model's processor (image resizing, box rescaling, mask post-processing)."""
        return self.load()._processor

    # ------------------------------------------------------------------ segmentation
    def segment(
        self, images: Sequence[np.ndarray], detections: Sequence[sv.Detections]
    ) -> list[sv.Detections]:
        """The given detections, in order, with ``mask`` bool ``(N, H, W)`` in image pixels.

        Args:
            images: RGB ``uint8`` arrays ``(H, W, 3)``.
            detections: one ``sv.Detections`` per image, boxes in that image's pixels.

        Example:
            >>> [masked] = HfSamSegmenter().segment([image], [boxes])  # doctest: +SKIP
        """
        import torch

        images, detections = _check_inputs(images, detections)
        results: list[sv.Detections | None] = [None] * len(images)
        todo = []
        for index, (image, dets) in enumerate(zip(images, detections)):
            if len(dets) == 0:
                results[index] = _with_masks(
                    dets, np.zeros((0, *image.shape[:2]), dtype=bool), np.zeros(0, np.float32))
            else:
                todo.append(index)
        if not todo:
            return results  # type: ignore[return-value]
        model = self.model
        with torch.inference_mode():
            for start in range(0, len(todo), self.encoder_batch_size):
                chunk = todo[start:start + self.encoder_batch_size]
                inputs = [self._prompt_inputs(images[i], detections[i].xyxy) for i in chunk]
                pixels = torch.cat([inp["pixel_values"] for inp in inputs])
                embeddings = model.get_image_embeddings(pixels.to(self.device, self.dtype))
                for row, (i, inp) in enumerate(zip(chunk, inputs)):
                    masks, scores = self._decode(_batch_row(embeddings, row), inp)
                    results[i] = _with_masks(detections[i], masks, scores)
        return results  # type: ignore[return-value]

    def _prompt_inputs(self, image: np.ndarray, xyxy: np.ndarray) -> Any:
        """Processor outputs for one image and its boxes (clipped to the image)."""
        height, width = image.shape[:2]
        boxes = np.asarray(xyxy, dtype=np.float64).copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        return self.processor(images=[image], input_boxes=[boxes.tolist()], return_tensors="pt")

    def _decode(self, embeddings: Any, inputs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Masks (bool, image size) and predicted IoUs for one image's boxes, in groups."""
        import torch

        boxes = inputs["input_boxes"].to(self.device, self.dtype)
        sizes = {key: inputs[key] for key in ("original_sizes", "reshaped_input_sizes") if key in inputs}
        height, width = (int(v) for v in inputs["original_sizes"][0])
        count = boxes.shape[1]
        masks = np.empty((count, height, width), dtype=bool)
        scores = np.empty(count, dtype=np.float32)
        extra = {}
        if self.architecture == "sam_hq":  # SAM-HQ also feeds early ViT features to its decoder
            embeddings, extra["intermediate_embeddings"] = embeddings
        step = max(1, _UPSAMPLE_BUDGET // max(1, height * width))
        for start in range(0, count, self.max_boxes_per_call):
            stop = min(count, start + self.max_boxes_per_call)
            out = self._model(image_embeddings=embeddings, input_boxes=boxes[:, start:stop],
                              multimask_output=self.multimask, **extra)
            iou = out.iou_scores[0].float()  # (boxes, candidates)
            best = iou.argmax(dim=1)
            rows = torch.arange(len(best), device=best.device)
            low_res = out.pred_masks[0][rows, best][:, None].float()  # (boxes, 1, h, w)
            scores[start:stop] = iou[rows, best].cpu().numpy()
            for first in range(0, len(low_res), step):
                [upsampled] = self._processor.post_process_masks(
                    low_res[first:first + step][None], **sizes)
                masks[start + first:start + first + len(upsampled)] = upsampled[:, 0].cpu().numpy()
        return masks, scores


def _batch_row(value: Any, row: int) -> Any:
    """Row ``row`` (kept as a batch of one) of a tensor or of nested lists/tuples of tensors."""
    if isinstance(value, (list, tuple)):
        return type(value)(_batch_row(item, row) for item in value)
    return value[row:row + 1]
