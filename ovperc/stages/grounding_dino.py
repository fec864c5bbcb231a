"""Grounding DINO detector (transformers implementation): boxes for any named class.

It serves the Grounding DINO family: Grounding DINO (``model_type`` ``grounding-dino``) and
MM Grounding DINO / LLMDet (``mm-grounding-dino``); the class is chosen from the folder's
``config.json``, never from its name.

How a query becomes a detection:

1. All of an image's classes go into one caption, ``"a. b. c."`` (lowercased), and one
   forward pass; past ``max_text_tokens`` (256) they are split into several captions,
   one forward each, and the results are merged (see :mod:`.grounding_dino_prompt`).
2. For every query the token probabilities are ``sigmoid(logits)``. The box confidence is
   their max over all text tokens, the same score as transformers'
   ``post_process_grounded_object_detection``; queries with confidence
   ``> box_threshold`` are kept.
3. Each class is scored by the max probability over its own token span in the caption
   (found from the tokenizer's offsets mapping). The query takes the class with the best
   span score; if that score is ``< text_threshold`` the query is dropped. The decoded
   phrase text is never used, so there are no ``##`` pieces, merged ``"cat dog"``
   labels, empty labels or fallbacks to class 0.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ovperc.device import resolve_device, resolve_dtype
from ovperc.hub import hub_unavailable, is_local
from ovperc.stages.grounding_dino_prompt import PromptChunk, build_chunks, token_spans

if TYPE_CHECKING:
    import supervision as sv
    import torch

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "IDEA-Research/grounding-dino-tiny"


@dataclass
class _Found:
    """Kept queries of one (image, caption) pass, already mapped to prompts."""

    xyxy: np.ndarray
    confidence: np.ndarray
    prompt_ids: np.ndarray
    text_score: np.ndarray


class GroundingDinoDetector:
    """Open-vocabulary boxes from Grounding DINO, one forward per image for all classes.

    Args:
        model: a hub id (default ``IDEA-Research/grounding-dino-tiny``, also
            ``IDEA-Research/grounding-dino-base``, MM Grounding DINO and LLMDet ids such as
            ``iSEE-Laboratory/llmdet_tiny``) or a local ``save_pretrained`` folder of either
            family; its ``config.json`` ``model_type`` picks the transformers class.
        device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        dtype: ``float32`` (default), ``float16`` or ``bfloat16`` (GPU only).
        box_threshold: keep a query when its confidence (max token probability) is above
            this (default 0.35).
        text_threshold: drop a kept query when its best class's span score is below this
            (default 0.25).
        max_text_tokens: caption limit in tokens, ``[CLS]``/``[SEP]`` included; more
            classes than fit are split over several forward passes (default 256, the
            model's own limit; a smaller value is allowed).
        batch_size: most (image, caption) pairs in one forward pass (default 8).
        cache_dir: Hugging Face cache folder for hub downloads.
        revision: hub revision (branch, tag or commit) to load.

    Detections per image: ``xyxy`` in the image's pixels (clipped to it), ``confidence``
    (float32), ``class_id`` = index of the prompt in that image's list, ``data["prompt"]``
    and ``data["class_name"]`` = the prompt text, ``data["text_score"]`` = the class's span
    score; sorted by confidence, best first.

    Example:
        >>> detector = GroundingDinoDetector(box_threshold=0.3)  # doctest: +SKIP
        >>> dets = detector.detect([image], [["person", "bicycle"]])[0]  # doctest: +SKIP
        >>> dets.data["class_name"]  # doctest: +SKIP
        array(['person', 'bicycle'], dtype=object)
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: str = "float32",
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        max_text_tokens: int = 256,
        batch_size: int = 8,
        cache_dir: str | None = None,
        revision: str | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be a hub id or a folder path (str), got {model!r}")
        for name, value in (("box_threshold", box_threshold), ("text_threshold", text_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if max_text_tokens < 4:
            raise ValueError(f"max_text_tokens must be >= 4 ([CLS], a word, '.', [SEP]), "
                             f"got {max_text_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name = model
        self.device_name = device
        self.dtype_name = dtype
        self.box_threshold = float(box_threshold)
        self.text_threshold = float(text_threshold)
        self.max_text_tokens = int(max_text_tokens)
        self.batch_size = int(batch_size)
        self.cache_dir = cache_dir
        self.revision = revision
        self._lock = threading.Lock()
        self._processor: Any = None
        self._model: Any = None
        self._device: torch.device | None = None
        self._dtype: torch.dtype | None = None

    # ------------------------------------------------------------------ loading
    def load(self) -> GroundingDinoDetector:
        """Load processor and model now (otherwise the first :meth:`detect` does it).

        Raises:
            ModelNotAvailableError: a hub id that is neither cached nor downloadable.

        Example:
            >>> detector = GroundingDinoDetector("./grounding-dino-tiny").load()  # doctest: +SKIP
        """
        if self._model is not None:
            return self
        with self._lock:
            if self._model is None:
                self._load_locked()
        return self

    def _load_locked(self) -> None:
        from transformers import AutoConfig, AutoProcessor

        device = resolve_device(self.device_name)
        dtype = resolve_dtype(self.dtype_name, device)
        kwargs: dict[str, Any] = {"cache_dir": self.cache_dir, "revision": self.revision,
                                  "trust_remote_code": False}
        try:
            config = AutoConfig.from_pretrained(self.model_name, **kwargs)
            model_class = model_class_for(config.model_type, self.model_name)
            processor = AutoProcessor.from_pretrained(self.model_name, **kwargs)
            model = model_class.from_pretrained(self.model_name, config=config, **kwargs)
        except OSError as error:
            if is_local(self.model_name):
                raise
            raise hub_unavailable(self.model_name, error) from error
        model = model.to(device=device, dtype=dtype).eval()
        logger.info("loaded %s %s on %s (%s)", model_class.__name__, self.model_name, device, dtype)
        self._processor, self._device, self._dtype = processor, device, dtype
        self._model = model  # last: other threads test this attribute

    @property
    def text_limit(self) -> int:
        """Tokens per caption: ``max_text_tokens``, capped by the model's own limit."""
        model_limit = int(getattr(self.load()._model.config, "max_text_len", 256))
        return min(self.max_text_tokens, model_limit)

    # ------------------------------------------------------------------ detection
    def detect(
        self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]
    ) -> list[sv.Detections]:
        """Boxes per image for that image's prompts.

        Images of the same processed size are batched together (pixels are never padded,
        so results equal one-by-one runs); each (image, caption) pair is one batch row.

        Args:
            images: RGB ``uint8`` arrays ``(H, W, 3)``.
            prompts: one list of prompt texts per image.

        Returns:
            One ``sv.Detections`` per image (see the class docstring for its fields).

        Raises:
            ValueError: the counts differ, an image is not ``(H, W, 3)``, or a single
                prompt is longer than a caption can hold.
            TypeError: an image is not a ``uint8`` array, or an image's prompts are a
                plain string instead of a list.

        Example:
            >>> detector.detect([image], [["dog", "cat"]])[0].class_id  # doctest: +SKIP
            array([1, 0])
        """
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompt lists; "
                             "give one prompt list per image")
        for i, (image, image_prompts) in enumerate(zip(images, prompts)):
            _check_image(i, image)
            _check_prompts(i, image_prompts)
        if not any(prompts):  # nothing to search: no need to load the model
            return [_to_detections([], []) for _ in images]
        self.load()
        limit = self.text_limit
        plans = [build_chunks(list(p), self._processor.tokenizer, limit) for p in prompts]
        found: list[list[_Found]] = [[] for _ in images]
        with _inference_mode():
            for batch in self._batches(images, plans):
                for image_index, part in self._forward(images, batch):
                    found[image_index].append(part)
        return [_to_detections(parts, list(p)) for parts, p in zip(found, prompts)]

    def _batches(
        self, images: Sequence[np.ndarray], plans: list[list[PromptChunk]]
    ) -> list[list[tuple[int, PromptChunk, Any]]]:
        """Group (image, caption, pixels) rows by pixel shape, at most ``batch_size`` each."""
        groups: dict[tuple[int, ...], list[tuple[int, PromptChunk, Any]]] = {}
        for index, chunks in enumerate(plans):
            if not chunks:
                continue
            pixels = self._processor.image_processor(
                images=[images[index]], return_tensors="pt", input_data_format="channels_last"
            )["pixel_values"]
            for chunk in chunks:
                groups.setdefault(tuple(pixels.shape), []).append((index, chunk, pixels))
        batches: list[list[tuple[int, PromptChunk, Any]]] = []
        for rows in groups.values():
            batches.extend(rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size))
        return batches

    def _forward(
        self, images: Sequence[np.ndarray], rows: list[tuple[int, PromptChunk, Any]]
    ) -> list[tuple[int, _Found]]:
        import torch

        texts = [chunk.text for _, chunk, _ in rows]
        tokens = self._processor.tokenizer(
            texts, padding="longest", return_offsets_mapping=True, return_token_type_ids=True,
            return_tensors="pt",
        )
        offsets = tokens.pop("offset_mapping").tolist()
        if tokens["input_ids"].shape[1] > self.text_limit:
            raise RuntimeError(
                f"a caption tokenised to {tokens['input_ids'].shape[1]} tokens, past the limit "
                f"of {self.text_limit}; the tokenizer does not split captions as expected"
            )
        pixel_values = torch.cat([pixels for _, _, pixels in rows]).to(self._device, self._dtype)
        outputs = self._model(
            pixel_values=pixel_values,
            input_ids=tokens["input_ids"].to(self._device),
            token_type_ids=tokens["token_type_ids"].to(self._device),
            attention_mask=tokens["attention_mask"].to(self._device),
        )
        probs = outputs.logits.float().sigmoid()
        boxes = outputs.pred_boxes.float()
        result = []
        for row, (image_index, chunk, _) in enumerate(rows):
            height, width = images[image_index].shape[:2]
            spans = token_spans(offsets[row], chunk.char_spans)
            part = self._assign(probs[row], boxes[row], spans, chunk.prompt_ids, width, height)
            result.append((image_index, part))
        return result

    def _assign(
        self,
        probs: torch.Tensor,
        boxes: torch.Tensor,
        spans: list[tuple[int, int]],
        prompt_ids: tuple[int, ...],
        width: int,
        height: int,
    ) -> _Found:
        """Threshold one row's queries and give each the class of its best token span."""
        import torch

        confidence = probs.max(dim=-1).values
        keep = confidence > self.box_threshold
        probs, boxes, confidence = probs[keep], boxes[keep], confidence[keep]
        span_scores = torch.stack([probs[:, a:b].max(dim=-1).values for a, b in spans], dim=-1)
        text_score, best = span_scores.max(dim=-1)
        matched = text_score >= self.text_threshold
        cx, cy, w, h = boxes[matched].unbind(-1)
        scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
        xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1) * scale
        xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, width)
        xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, height)
        ids = np.asarray(prompt_ids, dtype=int)[best[matched].cpu().numpy()]
        return _Found(
            xyxy=xyxy.cpu().numpy().astype(np.float32),
            confidence=confidence[matched].cpu().numpy().astype(np.float32),
            prompt_ids=ids.reshape(-1),
            text_score=text_score[matched].cpu().numpy().astype(np.float32),
        )

    def __repr__(self) -> str:
        return (f"GroundingDinoDetector({self.model_name!r}, device={self.device_name!r}, "
                f"dtype={self.dtype_name!r}, box_threshold={self.box_threshold}, "
                f"text_threshold={self.text_threshold})")


#: ``config.json`` ``model_type`` -> transformers class; MM Grounding DINO (and LLMDet, which
#: ships in its format) has its own class: its contrastive head adds a learned score bias.
MODEL_CLASSES = {
    "grounding-dino": "GroundingDinoForObjectDetection",
    "mm-grounding-dino": "MMGroundingDinoForObjectDetection",
}


def model_class_for(model_type: str, model: str = "the model") -> Any:
    """The transformers class for a Grounding-DINO-family ``model_type``.

    Raises:
        ValueError: another architecture; the message names the stage that serves it.

    Example:
        >>> model_class_for("mm-grounding-dino").__name__  # doctest: +SKIP
        'MMGroundingDinoForObjectDetection'
    """
    if model_type not in MODEL_CLASSES:
        from ovperc.registry import model_types

        other = model_types("detector").get(model_type)
        hint = (f"load it with {other} (the registry picks it for a folder or hub id)" if other
                else f"detector model types: {', '.join(model_types('detector'))}")
        raise ValueError(f"{model} has model_type {model_type!r}, not Grounding DINO "
                         f"({', '.join(MODEL_CLASSES)}); {hint}")
    import transformers

    return getattr(transformers, MODEL_CLASSES[model_type])


def _inference_mode() -> Any:
    import torch

    return torch.inference_mode()


def _check_image(index: int, image: Any) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"images[{index}] must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"images[{index}] must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"images[{index}] must have shape (H, W, 3), got {image.shape}")


def _check_prompts(index: int, prompts: Any) -> None:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts[{index}] must be a list of strings, got "
                        f"{type(prompts).__name__} {prompts!r:.60}")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{index}] holds {type(prompt).__name__} {prompt!r:.60}; "
                            "prompts must be strings")


def _to_detections(parts: list[_Found], prompts: list[str]) -> sv.Detections:
    """Merge one image's passes into Detections, best confidence first."""
    import supervision as sv

    if parts:
        xyxy = np.concatenate([p.xyxy for p in parts]).reshape(-1, 4)
        confidence = np.concatenate([p.confidence for p in parts])
        ids = np.concatenate([p.prompt_ids for p in parts]).astype(int)
        text_score = np.concatenate([p.text_score for p in parts])
    else:
        xyxy = np.zeros((0, 4), dtype=np.float32)
        confidence = np.zeros(0, dtype=np.float32)
        ids = np.zeros(0, dtype=int)
        text_score = np.zeros(0, dtype=np.float32)
    order = np.argsort(-confidence, kind="stable")
    names = np.array([prompts[i] for i in ids[order]], dtype=object)
    return sv.Detections(
        xyxy=xyxy[order],
        confidence=confidence[order],
        class_id=ids[order],
        data={"prompt": names, "class_name": names.copy(), "text_score": text_score[order]},
    )
