"""What the transformers zero-shot detectors share: checked inputs, lazy loading, the output.

:class:`HfDetector` loads a processor and model once (thread-safe, on first use), picks the
transformers class from the folder's ``config.json`` ``model_type`` and turns per-image
``(boxes, scores, prompt ids)`` into the ``sv.Detections`` every detector returns. A
backend subclass says which model types it reads (:attr:`MODEL_CLASSES`) and implements
:meth:`HfDetector._detect_batch`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ovperc.device import resolve_device, resolve_dtype
from ovperc.stages.grounding_dino_attention import lean_deformable_attention
from ovperc.stages.hf_loading import load_with_processor
from ovperc.stages.quantize import check_quantize, quantize_linear

if TYPE_CHECKING:
    import supervision as sv
    import torch

logger = logging.getLogger(__name__)


@dataclass
class Found:
    """One image's kept boxes: pixels ``xyxy``, ``confidence`` and the prompt index of each."""

    xyxy: np.ndarray
    confidence: np.ndarray
    prompt_ids: np.ndarray


class HfDetector:
    """Base of the transformers detectors (OWLv2 / OWL-ViT, OmDet-Turbo).

    Args:
        model: hub id or local ``save_pretrained`` folder.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        dtype: ``float32`` (default), ``float16`` or ``bfloat16`` (GPU only).
        box_threshold: keep a box when its score is above this.
        text_threshold: accepted so every detector takes the same options; these models
            give one score per (box, prompt), so it is not used.
        batch_size: most images in one forward pass.
        cache_dir: Hugging Face cache folder for hub downloads.
        revision: hub revision to load.
        quantize: ``"int8"``: dynamic int8 linear layers, CPU only (:mod:`ovperc.stages.quantize`).
        lean_attention: a multi-scale deformable attention (OmDet-Turbo's decoder) gathers its
            samples as Grounding DINO's does (same result within float rounding, see
            :mod:`.grounding_dino_attention`); ``False`` keeps transformers' code path.

    Example:
        >>> class MyDetector(HfDetector): ...  # doctest: +SKIP
    """

    #: ``model_type`` -> transformers class name this backend reads.
    MODEL_CLASSES: ClassVar[dict[str, str]] = {}
    #: what the model is called in messages.
    FAMILY: ClassVar[str] = "model"

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "float32",
        box_threshold: float = 0.1,
        text_threshold: float | None = None,
        batch_size: int = 4,
        cache_dir: str | None = None,
        revision: str | None = None,
        quantize: str | None = None,
        lean_attention: bool = True,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be a hub id or a folder path (str), got {model!r}")
        if not 0.0 <= box_threshold <= 1.0:
            raise ValueError(f"box_threshold must be in [0, 1], got {box_threshold}")
        if text_threshold is not None and not 0.0 <= text_threshold <= 1.0:
            raise ValueError(f"text_threshold must be in [0, 1], got {text_threshold}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.model_name = model
        self.device_name = device
        self.dtype_name = dtype
        self.box_threshold = float(box_threshold)
        self.text_threshold = text_threshold
        self.batch_size = batch_size
        self.quantize = check_quantize(quantize, dtype=dtype)
        self.lean_attention = bool(lean_attention)
        self.cache_dir = cache_dir
        self.revision = revision
        self._lock = threading.Lock()
        self._processor: Any = None
        self._model: Any = None
        self._model_type: str | None = None
        self._device: torch.device | None = None
        self._dtype: torch.dtype | None = None

    def load(self) -> HfDetector:
        """Load processor and model now (otherwise the first :meth:`detect` does it).

        Raises:
            ModelNotAvailableError: a hub id that is neither cached nor downloadable.
            ValueError: the folder holds another architecture (its ``model_type``).

        Example:
            >>> detector = OwlDetector("./owlv2-base").load()  # doctest: +SKIP
        """
        if self._model is not None:
            return self
        with self._lock:
            if self._model is None:
                self._load_locked()
        return self

    def _load_locked(self) -> None:
        import transformers

        def model_class(model_type: str) -> Any:
            if model_type not in self.MODEL_CLASSES:
                raise ValueError(self._wrong_type(model_type))
            return getattr(transformers, self.MODEL_CLASSES[model_type])

        device = resolve_device(self.device_name)
        dtype = resolve_dtype(self.dtype_name, device)
        config, processor, model = load_with_processor(
            self.model_name, model_class, device=device, dtype=dtype, cache_dir=self.cache_dir,
            revision=self.revision)
        quantize_linear(model, check_quantize(self.quantize, device=device, dtype=dtype))
        if self.lean_attention:
            lean_deformable_attention(model)
        logger.info("loaded %s %s on %s (%s)", type(model).__name__, self.model_name, device, dtype)
        self._processor, self._device, self._dtype = processor, device, dtype
        self._model_type = config.model_type
        self._model = model  # last: other threads test this attribute

    def _wrong_type(self, model_type: str) -> str:
        from ovperc.registry import model_types

        other = model_types("detector").get(model_type)
        hint = (f"load it with {other} (the registry picks it for a folder or hub id)" if other
                else f"detector model types: {', '.join(model_types('detector'))}")
        return (f"{self.model_name} has model_type {model_type!r}, not {self.FAMILY} "
                f"({', '.join(self.MODEL_CLASSES)}); {hint}")

    def detect(
        self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]
    ) -> list[sv.Detections]:
        """Boxes per image for that image's prompts, all prompts in one forward pass.

        Args:
            images: RGB ``uint8`` arrays ``(H, W, 3)``.
            prompts: one list of prompt texts per image.

        Returns:
            One ``sv.Detections`` per image: ``xyxy`` in pixels (clipped to the image),
            ``confidence`` (float32), ``class_id`` = index of the prompt in that image's
            list, ``data["prompt"]`` and ``data["class_name"]`` = the prompt text; best
            first.

        Raises:
            ValueError: the counts differ or an image is not ``(H, W, 3)``.
            TypeError: an image is not a ``uint8`` array or an image's prompts are a string.

        Example:
            >>> detector.detect([image], [["dog", "cat"]])[0].class_id  # doctest: +SKIP
            array([1, 0])
        """
        check_inputs(images, prompts)
        found: list[Found | None] = [None] * len(images)
        searched = [i for i, p in enumerate(prompts) if any(t.strip() for t in p)]
        if searched:
            self.load()
            with _inference_mode():
                for batch in self._batches(searched, prompts):
                    for index, part in zip(batch, self._detect_batch(
                            [images[i] for i in batch], [list(prompts[i]) for i in batch])):
                        found[index] = part
        return [to_detections(f, list(p)) for f, p in zip(found, prompts)]

    def _batches(self, indices: list[int], prompts: Sequence[Sequence[str]]) -> list[list[int]]:
        """Consecutive runs of at most ``batch_size`` images (backends may group further)."""
        return [indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)]

    def _detect_batch(self, images: list[np.ndarray], prompts: list[list[str]]) -> list[Found]:
        """One forward pass for these images and all their prompts."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.model_name!r}, device={self.device_name!r}, "
                f"dtype={self.dtype_name!r}, box_threshold={self.box_threshold})")


def _inference_mode() -> Any:
    import torch

    return torch.inference_mode()


def check_inputs(images: Sequence[Any], prompts: Sequence[Any]) -> None:
    """Raise a clear error for a bad batch: counts, image arrays, prompt lists.

    Example:
        >>> check_inputs([np.zeros((4, 4, 3), np.uint8)], [["dog"]])
    """
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images but {len(prompts)} prompt lists; "
                         "give one prompt list per image")
    for index, (image, image_prompts) in enumerate(zip(images, prompts)):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"images[{index}] must be a numpy array, got {type(image).__name__}")
        if image.dtype != np.uint8:
            raise TypeError(f"images[{index}] must be uint8 RGB, got dtype {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"images[{index}] must have shape (H, W, 3), got {image.shape}")
        if isinstance(image_prompts, str) or not isinstance(image_prompts, Sequence):
            raise TypeError(f"prompts[{index}] must be a list of strings, got "
                            f"{type(image_prompts).__name__} {image_prompts!r:.60}")
        for prompt in image_prompts:
            if not isinstance(prompt, str):
                raise TypeError(f"prompts[{index}] holds {type(prompt).__name__} {prompt!r:.60}; "
                                "prompts must be strings")


def clip_boxes(xyxy: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Boxes clamped to the image, in place."""
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, width)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, height)
    return xyxy


def to_detections(found: Found | None, prompts: list[str]) -> sv.Detections:
    """One image's kept boxes as ``sv.Detections``, best confidence first.

    Example:
        >>> to_detections(None, ["dog"]).xyxy.shape
        (0, 4)
    """
    import supervision as sv

    if found is None:
        found = Found(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int))
    order = np.argsort(-found.confidence, kind="stable")
    ids = found.prompt_ids.astype(int)[order]
    names = np.array([prompts[i] for i in ids], dtype=object)
    return sv.Detections(
        xyxy=found.xyxy.reshape(-1, 4).astype(np.float32)[order],
        confidence=found.confidence.astype(np.float32)[order],
        class_id=ids,
        data={"prompt": names, "class_name": names.copy()},
    )
