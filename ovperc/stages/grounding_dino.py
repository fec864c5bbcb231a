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
from ovperc.hub import ModelNotAvailableError, is_local
from ovperc.stages.grounding_dino_attention import lean_deformable_attention, share_fusion_projections
from ovperc.stages.grounding_dino_prompt import PromptChunk, build_chunks, check_lengths, token_spans
from ovperc.stages.grounding_dino_size import MIN_SIDE, pad_strip, processed_size, resize_rule
from ovperc.stages.hf_loading import load_error, load_with_processor
from ovperc.stages.quantize import check_quantize, quantize_linear

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


#: One forward-pass row: (image index, caption, pixels, (height, width) shown, in image pixels).
_Row = tuple[int, PromptChunk, Any, tuple[float, float]]


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
        image_size: input size instead of the processor's own: the shortest edge (the
            longest keeps the processor's ratio, 480 -> 480/800 for the released 800/1333)
            or ``(shortest_edge, longest_edge)``; smaller is faster and loses small objects.
        quantize: ``"int8"``: dynamic int8 linear layers, CPU only (:mod:`ovperc.stages.quantize`).
        lean_attention: the deformable attention gathers its samples on a CPU (elsewhere
            it sums each feature level in place) instead of stacking all levels' samples,
            and the image-text fusion attention projects the caption's tokens instead of
            the image's (same result within float rounding, less work; see
            :mod:`.grounding_dino_attention`); ``False`` keeps transformers' own code path.

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
        image_size: int | tuple[int, int] | None = None,
        quantize: str | None = None,
        lean_attention: bool = True,
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
        resize_rule({"shortest_edge": 800, "longest_edge": 1333}, image_size)  # checked now
        self.image_size = image_size
        self.quantize = check_quantize(quantize, dtype=dtype)
        self.cache_dir = cache_dir
        self.revision = revision
        self.lean_attention = bool(lean_attention)
        self._lock = threading.Lock()
        self._processor: Any = None
        self._model: Any = None
        self._text: tuple[Any, Any] | None = None
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
        device = resolve_device(self.device_name)
        dtype = resolve_dtype(self.dtype_name, device)
        _, processor, model = load_with_processor(
            self.model_name, lambda kind: model_class_for(kind, self.model_name), device=device,
            dtype=dtype, cache_dir=self.cache_dir, revision=self.revision)
        size = resize_rule(processor.image_processor.size, self.image_size)
        if size is not None:
            processor.image_processor.size = size
        quantize_linear(model, check_quantize(self.quantize, device=device, dtype=dtype))
        logger.info("loaded %s %s on %s (%s)", type(model).__name__, self.model_name, device, dtype)
        if self.lean_attention:
            lean_deformable_attention(model)
            share_fusion_projections(model)
        self._processor, self._device, self._dtype = processor, device, dtype
        self._model = model  # last: other threads test this attribute

    @property
    def text_limit(self) -> int:
        """Tokens per caption: ``max_text_tokens``, capped by the model's own limit.

        Read from the model's config; the weights are not loaded for it.
        """
        config = self._model.config if self._model is not None else self._text_side()[1]
        return min(self.max_text_tokens, int(getattr(config, "max_text_len", 256)))

    def _text_side(self) -> tuple[Any, Any]:
        """``(tokenizer, config)``, loaded without the model weights (kept once loaded)."""
        if self._model is not None:
            return self._processor.tokenizer, self._model.config
        if self._text is None:
            from transformers import AutoConfig, AutoTokenizer

            kwargs: dict[str, Any] = {"cache_dir": self.cache_dir, "revision": self.revision,
                                      "trust_remote_code": False}
            try:
                self._text = (AutoTokenizer.from_pretrained(self.model_name, **kwargs),
                              AutoConfig.from_pretrained(self.model_name, **kwargs))
            except OSError as error:
                if is_local(self.model_name):
                    raise
                raise load_error(self.model_name, error) from error
        return self._text

    def check_prompts(self, prompts: Sequence[str]) -> None:
        """Refuse, before any image, prompts longer than one caption can hold.

        Only the tokenizer and the config are read (no model weights), so a run can check
        its classes before it loads the model or opens an image. A hub model that is not
        available here (e.g. on a Ray driver whose workers hold it) is not checked: the
        check then happens when the model loads.

        Raises:
            ValueError: some prompt is longer than the caption's token limit; the message
                names each one and the limit.

        Example:
            >>> GroundingDinoDetector("./grounding-dino-tiny").check_prompts(["dog", "cat"])  # doctest: +SKIP
        """
        if isinstance(prompts, str):
            raise TypeError(f"prompts must be a list of strings, got the string {prompts!r:.60}")
        _check_prompts(0, prompts)
        try:
            tokenizer, _ = self._text_side()
        except ModelNotAvailableError as error:
            logger.info("prompt lengths not checked before the run (%s)", error)
            return
        check_lengths(list(prompts), tokenizer, self.text_limit)

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
    ) -> list[list[_Row]]:
        """Group (image, caption, pixels, frame) rows by pixel shape, at most ``batch_size`` each."""
        groups: dict[tuple[int, ...], list[_Row]] = {}
        for index, chunks in enumerate(plans):
            if not chunks:
                continue
            pixels, frame = self._pixels(index, images[index])
            for chunk in chunks:
                groups.setdefault(tuple(pixels.shape), []).append((index, chunk, pixels, frame))
        batches: list[list[_Row]] = []
        for rows in groups.values():
            batches.extend(rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size))
        return batches

    def _pixels(self, index: int, image: np.ndarray) -> tuple[Any, tuple[float, float]]:
        """The processor's pixels of one image and the ``(height, width)`` they show, in image pixels.

        The processor's own resize rounds the short side of a very thin image (e.g.
        10000x10 under a 1333-pixel longest edge) down to 0 and fails; the size is
        computed here the same way, with every side at least one pixel, and passed to it.
        A strip whose short side would shrink below :data:`MIN_SIDE` pixels is resized
        here and padded up to that side with the processor's mean colour (0 after
        normalisation, as DETR pads): the model needs at least ``num_queries`` feature-map
        cells (900 for the released models), which a 1-pixel-high input does not have.
        The shown frame is then taller (or wider) than the image; boxes are scaled to the
        frame and clipped to the image.
        """
        processor = self._processor.image_processor
        height, width = image.shape[:2]
        frame = (float(height), float(width))
        size = processed_size(height, width, getattr(processor, "size", None))
        kwargs: dict[str, Any] = {} if size is None else {"size": {"height": size[0], "width": size[1]}}
        if size is not None and min(size) < MIN_SIDE and height != width:
            image, frame = pad_strip(image, size, getattr(processor, "image_mean", None))
            kwargs = {"do_resize": False}
        try:
            pixels = processor(images=[image], return_tensors="pt", input_data_format="channels_last",
                               **kwargs)["pixel_values"]
        except (ValueError, RuntimeError) as error:
            from ovperc.image import UnsupportedImageError

            raise UnsupportedImageError(
                f"images[{index}]",
                f"image too thin or too small for the detector: {width}x{height} "
                f"(the Grounding DINO processor failed: {error})",
                index=index, stage="detector",
            ) from error
        return pixels, frame

    def _forward(
        self, images: Sequence[np.ndarray], rows: list[_Row]
    ) -> list[tuple[int, _Found]]:
        import torch

        texts = [chunk.text for _, chunk, _, _ in rows]
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
        pixel_values = torch.cat([pixels for _, _, pixels, _ in rows]).to(self._device, self._dtype)
        outputs = self._model(
            pixel_values=pixel_values,
            input_ids=tokens["input_ids"].to(self._device),
            token_type_ids=tokens["token_type_ids"].to(self._device),
            attention_mask=tokens["attention_mask"].to(self._device),
        )
        probs = outputs.logits.float().sigmoid()
        boxes = outputs.pred_boxes.float()
        result = []
        for row, (image_index, chunk, _, frame) in enumerate(rows):
            height, width = images[image_index].shape[:2]
            spans = token_spans(offsets[row], chunk.char_spans)
            part = self._assign(probs[row], boxes[row], spans, chunk.prompt_ids, width, height, frame)
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
        frame: tuple[float, float],
    ) -> _Found:
        """Threshold one row's queries and give each the class of its best token span.

        Boxes are relative to the ``(height, width)`` frame the model saw; they are scaled
        to it and clipped to the image (boxes wholly in a padded frame's fill are dropped).
        """
        import torch

        confidence = probs.max(dim=-1).values
        keep = confidence > self.box_threshold
        probs, boxes, confidence = probs[keep], boxes[keep], confidence[keep]
        span_scores = torch.stack([probs[:, a:b].max(dim=-1).values for a, b in spans], dim=-1)
        text_score, best = span_scores.max(dim=-1)
        matched = text_score >= self.text_threshold
        cx, cy, w, h = boxes[matched].unbind(-1)
        frame_h, frame_w = frame
        scale = torch.tensor([frame_w, frame_h, frame_w, frame_h], dtype=boxes.dtype, device=boxes.device)
        xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1) * scale
        xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, width)
        xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, height)
        if frame != (float(height), float(width)):
            inside = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
            matched[matched.clone()] = inside
            xyxy = xyxy[inside]
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
