"""SAM 3 as a detector that also segments: every instance of each class, with its mask.

SAM 3 (``Sam3Model``) takes one noun phrase per forward and returns every matching
instance (box, score, mask). Many classes per image cost little more than one here:

1. the image goes through the vision encoder once (``get_vision_features``);
2. all of the batch's distinct phrases go through the text encoder once;
3. an image's phrases are decoded together, ``prompts_per_call`` at a time, each row of
   that batch pairing the shared vision features with one phrase;
4. transformers' ``post_process_instance_segmentation`` turns each row into scores,
   pixel boxes and masks at the image's size.

So the results equal one full run per class, for the price of one vision pass per image.
Weights: ``facebook/sam3`` is gated on the hub under the SAM License (not Apache-2.0);
request access on its page first, or pass a local ``save_pretrained`` folder.
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

if TYPE_CHECKING:
    import supervision as sv
    import torch

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "facebook/sam3"
#: Tokens SAM 3's text encoder reads per phrase, start and end tokens included.
MAX_PROMPT_TOKENS = 32
#: ``model_type`` values whose folders hold the SAM 3 detector (``sam3_video`` is the
#: combined detector + tracker checkpoint published as ``facebook/sam3``).
MODEL_TYPES = ("sam3", "sam3_video")
LICENCE = Licence("SAM License", "read its terms on the model page before use")
#: Phrases decoded together per call by default (every row holds the image's features).
GPU_PROMPTS_PER_CALL = 16
CPU_PROMPTS_PER_CALL = 4


class Sam3Detector:
    """Boxes and masks for every instance of each class, from SAM 3; one vision pass per image.

    Args:
        model: hub id (default ``facebook/sam3``, gated) or local folder.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        dtype: ``float32``; ``float16``/``bfloat16`` on a GPU.
        box_threshold: keep instances whose score (query score times presence score, as
            in transformers' post-processing) is above this (default 0.3).
        mask_threshold: mask probability above which a pixel is in the mask (default 0.5).
        prompts_per_call: phrases decoded together; default 16 on a GPU, 4 on the cpu.
        cache_dir: Hugging Face cache folder for hub downloads.
        revision: hub revision (branch, tag or commit).

    Detections per image: ``xyxy`` in the image's pixels (clipped to it), ``confidence``
    (float32), ``mask`` bool ``(N, H, W)``, ``class_id`` = index of the prompt in that
    image's list, ``data["prompt"]`` and ``data["class_name"]`` = the prompt text; sorted
    by confidence, best first. :attr:`provides_masks` tells a pipeline that no segmenter
    needs to run on these boxes.

    Example:
        >>> detector = Sam3Detector("./sam3", device="cuda")  # doctest: +SKIP
        >>> dets = detector.detect([image], [["person", "bicycle"]])[0]  # doctest: +SKIP
        >>> dets.mask.shape, dets.data["class_name"]  # doctest: +SKIP
        ((3, 480, 640), array(['person', 'person', 'bicycle'], dtype=object))
    """

    #: Detections come with masks: a pipeline skips its segmenter for them.
    provides_masks = True

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: str = "float32",
        box_threshold: float = 0.3,
        mask_threshold: float = 0.5,
        prompts_per_call: int | None = None,
        cache_dir: str | None = None,
        revision: str | None = None,
    ) -> None:
        if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
            raise TypeError(f"model must be a hub id or a folder path, got {model!r}")
        for name, value in (("box_threshold", box_threshold), ("mask_threshold", mask_threshold)):
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if prompts_per_call is not None and (
                isinstance(prompts_per_call, bool) or not isinstance(prompts_per_call, int)
                or prompts_per_call < 1):
            raise ValueError(f"prompts_per_call must be a positive int, got {prompts_per_call!r}")
        self.model_name = os.fspath(model)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.box_threshold = float(box_threshold)
        self.mask_threshold = float(mask_threshold)
        self.prompts_per_call = prompts_per_call or (
            CPU_PROMPTS_PER_CALL if self.device.type == "cpu" else GPU_PROMPTS_PER_CALL)
        self.cache_dir = cache_dir
        self.revision = revision
        self._processor: Any = None
        self._model: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"Sam3Detector({self.model_name!r}, device={str(self.device)!r}, "
                f"dtype={str(self.dtype).removeprefix('torch.')!r}, box_threshold={self.box_threshold})")

    # ------------------------------------------------------------------ loading
    @property
    def processor(self) -> Any:
        """The ``Sam3Processor`` (image processor and CLIP tokenizer); loads without the model."""
        with self._lock:
            if self._processor is None:
                from transformers import Sam3Processor

                self._check_architecture()
                self._processor = from_pretrained(Sam3Processor, self.model_name, licence=LICENCE,
                                                  **self._hub())
            return self._processor

    def load(self) -> Sam3Detector:
        """Load processor and model now (otherwise the first :meth:`detect` does it).

        Raises:
            ModelNotAvailableError: the hub refused (gated: the message says where to ask)
                or the model is neither cached nor downloadable.
            ValueError: the folder holds another architecture.

        Example:
            >>> detector = Sam3Detector("./sam3").load()  # doctest: +SKIP
        """
        _ = self.processor  # checks the architecture first
        with self._lock:
            if self._model is None:
                from transformers import Sam3Model

                model = from_pretrained(Sam3Model, self.model_name, licence=LICENCE, **self._hub())
                logger.info("loaded SAM 3 %s on %s (%s)", self.model_name, self.device, self.dtype)
                self._model = model.to(device=self.device, dtype=self.dtype).eval()
        return self

    @property
    def model(self) -> Any:
        """The loaded ``Sam3Model`` (loaded on first access, once)."""
        return self.load()._model

    def _hub(self) -> dict[str, Any]:
        return {"cache_dir": self.cache_dir, "revision": self.revision}

    def _check_architecture(self) -> None:
        kind = model_type(self.model_name, licence=LICENCE, **self._hub())
        if kind not in MODEL_TYPES:
            raise ValueError(f"{self.model_name!r} is a {kind!r} model, not SAM 3; Sam3Detector loads "
                             f"model_type {' or '.join(MODEL_TYPES)}")

    # ------------------------------------------------------------------ prompts
    def check_prompts(self, prompts: Sequence[str]) -> None:
        """Raise if a prompt is longer than SAM 3 reads; usable before any image is seen.

        Raises:
            ValueError: a prompt tokenises to more than :data:`MAX_PROMPT_TOKENS` tokens
                (the message names it and its length).
            TypeError: a prompt is not a string.

        Example:
            >>> Sam3Detector("./sam3").check_prompts(["person", "red car"])  # doctest: +SKIP
        """
        prompts = list(prompts)
        for prompt in prompts:
            if not isinstance(prompt, str):
                raise TypeError(f"prompts must be strings, got {type(prompt).__name__} {prompt!r:.60}")
        if not prompts:
            return
        tokenizer = self.processor.tokenizer
        unique = list(dict.fromkeys(prompts))
        for prompt, ids in zip(unique, tokenizer(unique, truncation=False)["input_ids"]):
            if len(ids) > MAX_PROMPT_TOKENS:
                raise ValueError(
                    f"class {prompt!r:.80} is {len(ids)} tokens long; SAM 3 reads at most "
                    f"{MAX_PROMPT_TOKENS} tokens per phrase (start and end included): shorten it"
                )

    # ------------------------------------------------------------------ detection
    def detect(
        self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]
    ) -> list[sv.Detections]:
        """Instances (boxes, scores, masks) per image for that image's prompts.

        Args:
            images: RGB ``uint8`` arrays ``(H, W, 3)``.
            prompts: one list of prompt texts per image.

        Returns:
            One ``sv.Detections`` per image (see the class docstring for its fields).

        Raises:
            ValueError: the counts differ, an image is not ``(H, W, 3)``, or a prompt is
                longer than SAM 3 reads (see :meth:`check_prompts`).
            TypeError: an image is not a ``uint8`` array, or prompts are not lists of strings.

        Example:
            >>> detector.detect([image], [["dog", "cat"]])[0].class_id  # doctest: +SKIP
            array([1, 0, 0])
        """
        import torch

        images, prompts = _check_inputs(images, prompts)
        if not any(prompts):  # nothing to search: no need to load the model
            return [_to_detections([], image.shape[:2]) for image in images]
        self.check_prompts([p for image_prompts in prompts for p in image_prompts])
        self.load()
        with torch.inference_mode():
            text = self._encode_text(list(dict.fromkeys(p for ps in prompts for p in ps)))
            return [self._detect_one(image, list(image_prompts), text)
                    for image, image_prompts in zip(images, prompts)]

    def _encode_text(self, phrases: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Phrase -> (text features, attention mask), one text-encoder pass for all phrases."""
        tokens = self.processor.tokenizer(phrases, padding="max_length", max_length=MAX_PROMPT_TOKENS,
                                          return_tensors="pt")
        ids = tokens["input_ids"].to(self.device)
        mask = tokens["attention_mask"].to(self.device)
        features = self._model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        return {phrase: (features[i], mask[i]) for i, phrase in enumerate(phrases)}

    def _detect_one(
        self, image: np.ndarray, phrases: list[str], text: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> sv.Detections:
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        size = image.shape[:2]
        if not phrases:
            return _to_detections([], size)
        pixels = self.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        vision = self._model.get_vision_features(pixel_values=pixels.to(self.device, self.dtype))
        found = []
        for start in range(0, len(phrases), self.prompts_per_call):
            chunk = phrases[start:start + self.prompts_per_call]
            features = torch.stack([text[p][0] for p in chunk])
            mask = torch.stack([text[p][1] for p in chunk])
            outputs = self._model(vision_embeds=_repeat_vision(vision, len(chunk)),
                                  text_embeds=BaseModelOutputWithPooling(pooler_output=features),
                                  attention_mask=mask)
            results = self.processor.post_process_instance_segmentation(
                outputs, threshold=self.box_threshold, mask_threshold=self.mask_threshold,
                target_sizes=[size] * len(chunk))
            found.extend((start + row, result) for row, result in enumerate(results))
        return _to_detections(found, size, phrases)


def _repeat_vision(vision: Any, count: int) -> Any:
    """The one image's vision features as a batch of ``count`` rows (views, no copies)."""
    def rows(tensors: Any) -> Any:
        return tuple(t.expand(count, *t.shape[1:]) for t in tensors)

    return type(vision)(fpn_hidden_states=rows(vision.fpn_hidden_states),
                        fpn_position_encoding=rows(vision.fpn_position_encoding))


def _check_inputs(
    images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]
) -> tuple[list[np.ndarray], list[list[str]]]:
    images, prompts = list(images), list(prompts)
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images but {len(prompts)} prompt lists; "
                         "give one prompt list per image")
    for index, image in enumerate(images):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"images[{index}] must be a numpy array, got {type(image).__name__}")
        if image.dtype != np.uint8:
            raise TypeError(f"images[{index}] must be uint8 RGB, got dtype {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"images[{index}] must have shape (H, W, 3), got {image.shape}")
    for index, image_prompts in enumerate(prompts):
        if isinstance(image_prompts, str) or not isinstance(image_prompts, Sequence):
            raise TypeError(f"prompts[{index}] must be a list of strings, got "
                            f"{type(image_prompts).__name__} {image_prompts!r:.60}")
    return images, [list(p) for p in prompts]


def _to_detections(
    found: list[tuple[int, dict[str, Any]]], size: tuple[int, int], phrases: Sequence[str] = ()
) -> sv.Detections:
    """One image's instances (per prompt index) as Detections, best score first."""
    import supervision as sv

    height, width = size
    xyxy = [r["boxes"].float().cpu().numpy().reshape(-1, 4) for _, r in found]
    scores = [r["scores"].float().cpu().numpy().reshape(-1) for _, r in found]
    masks = [r["masks"].cpu().numpy().astype(bool).reshape(-1, height, width) for _, r in found
             if len(r["scores"])]
    ids = [np.full(len(s), index, dtype=int) for (index, _), s in zip(found, scores)]
    boxes = np.concatenate(xyxy).astype(np.float32) if xyxy else np.zeros((0, 4), np.float32)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    confidence = np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32)
    class_id = np.concatenate(ids) if ids else np.zeros(0, dtype=int)
    mask = np.concatenate(masks) if masks else np.zeros((0, height, width), dtype=bool)
    order = np.argsort(-confidence, kind="stable")
    names = np.array([phrases[i] for i in class_id[order]], dtype=object)
    return sv.Detections(xyxy=boxes[order], confidence=confidence[order], class_id=class_id[order],
                         mask=mask[order], data={"prompt": names, "class_name": names.copy()})
