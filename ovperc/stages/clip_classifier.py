"""``ClipClassifier``: check every detected region with CLIP (re-label, re-score or reject).

For each box, the region (with a context margin) is cropped, padded to a square with the
model's mean colour and embedded by CLIP; the crops of every box of every image in the
batch go through the image encoder together. The crop embedding is compared with one text
embedding per class of that image's :class:`~ovperc.Ontology` (the normalised mean over
templates x the class's prompts), and a softmax with CLIP's own temperature gives each
class a probability.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from ovperc.image import ImageSource, load_image
from ovperc.ontology import ClassesLike, Ontology
from ovperc.stages.clip_model import ClipModel, resolve_clip
from ovperc.stages.templates import TemplatesLike, class_embeddings, resolve_templates

if TYPE_CHECKING:
    import supervision as sv
    import torch

logger = logging.getLogger(__name__)

ClassifyMode = Literal["relabel", "rescore", "reject"]
MODES = ("relabel", "rescore", "reject")
DEFAULT_CLIP_MODEL = "ViT-B-32:laion2b_s34b_b79k"
#: Crops longer than this are scaled down before they are padded to a square: CLIP sees
#: 224-448 pixels anyway, and every crop of a batch is held in memory at once.
MAX_CROP_SIDE = 1024


class ClipClassifier:
    """Judge each detected region against the classes with CLIP.

    Every mode sets ``data["clip_class"]`` (CLIP's best class among the ontology's classes)
    and ``data["clip_score"]`` (its probability) on every box. Then:

    - ``"rescore"`` (default): the box keeps its class; its confidence becomes
      ``detector_confidence ** (1 - clip_weight) * p_clip ** clip_weight``, where ``p_clip``
      is CLIP's probability of the box's own class (a weighted geometric mean; with the
      default ``clip_weight=0.5``, ``sqrt(detector * clip)``). The detector's value is kept
      in ``data["detector_confidence"]``.
    - ``"relabel"``: ``data["class_name"]`` (and ``class_id``) become ``clip_class``; the
      detector's class is kept in ``data["detector_class"]``.
    - ``"reject"``: a box is dropped when its best class probability is below
      ``reject_threshold`` (default 0.2), or when one of the ``negatives`` prompts scores
      higher than every class.

    ``negatives`` (e.g. ``["background", "a blurry photo"]``) join the softmax as extra
    classes in every mode, so they take probability away from the real classes, but they
    are never reported as ``clip_class``. With few classes, add negatives for reject mode:
    with two classes the best probability is always at least 0.5.

    Args:
        model: a CLIP spec (see :mod:`ovperc.stages.clip_spec`; default
            ``"ViT-B-32:laion2b_s34b_b79k"``) or a shared :class:`ClipModel`.
        device: ``auto``, ``cpu``, ``cuda``, ... (used when ``model`` is a spec).
        dtype: ``float32``, ``float16`` or ``bfloat16`` (used when ``model`` is a spec).
        mode: ``"rescore"`` (default), ``"relabel"`` or ``"reject"``.
        templates: prompt templates: ``None`` for the default ensemble ``"simple"`` (the
            seven templates of the CLIP paper, shipped by open_clip), another named set
            (``"openai"``, ``"photo"``, ``"single"``) or your own strings with ``{}``, e.g.
            ``["This is a photo of a {}."]``.
        negatives: background prompts that count against every class.
        reject_threshold: minimum best-class probability kept in reject mode (default 0.2).
        clip_weight: CLIP's weight in the rescore fusion, in ``[0, 1]`` (default 0.5).
        padding: context margin around each box, as a fraction of its width and height
            on each side (default 0.1).
        batch_size: crops per image-encoder pass (default 64).
        cache_size: class text embeddings kept in memory (default 4096).
        quantize: ``"int8"``: CLIP's image tower as dynamic int8, CPU only (see
            :class:`~ovperc.stages.clip_model.ClipModel`); a given ``ClipModel`` keeps its own.

    Example:
        >>> clf = ClipClassifier(mode="relabel")  # doctest: +SKIP
        >>> [det] = clf.classify([image], [detections], [Ontology(["cat", "dog"])])  # doctest: +SKIP
        >>> det.data["clip_class"], det.data["clip_score"]  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | ClipModel = DEFAULT_CLIP_MODEL,
        *,
        device: str = "auto",
        dtype: str = "float32",
        mode: ClassifyMode = "rescore",
        templates: TemplatesLike = None,
        negatives: Sequence[str] = (),
        reject_threshold: float = 0.2,
        clip_weight: float = 0.5,
        padding: float = 0.1,
        batch_size: int = 64,
        cache_size: int = 4096,
        quantize: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0.0 <= reject_threshold <= 1.0:
            raise ValueError(f"reject_threshold must be in [0, 1], got {reject_threshold}")
        if not 0.0 <= clip_weight <= 1.0:
            raise ValueError(f"clip_weight must be in [0, 1], got {clip_weight}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(negatives, str):
            raise TypeError(f"negatives must be a list of prompts, got the string {negatives!r}")
        self.clip = resolve_clip(model, device=device, dtype=dtype, quantize=quantize)
        self.mode: ClassifyMode = mode
        self.templates = resolve_templates(templates, default="simple")
        self.negatives = tuple(" ".join(str(n).split()) for n in negatives if str(n).strip())
        self.reject_threshold = reject_threshold
        self.clip_weight = clip_weight
        self.padding = padding
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._text_cache: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()

    # ------------------------------------------------------------------ text side
    def text_embeddings(self, prompts_per_class: Sequence[Sequence[str]]) -> torch.Tensor:
        """Class embeddings ``(C, D)``, computed once per class and kept in memory.

        Classes not seen before are encoded together in one text-encoder call.

        Example:
            >>> clf.text_embeddings([["cat"], ["man", "woman"]]).shape  # doctest: +SKIP
            torch.Size([2, 512])
        """
        import torch

        keys = [tuple(prompts) for prompts in prompts_per_class]
        missing = list(dict.fromkeys(k for k in keys if k not in self._text_cache))
        if missing:
            fresh = class_embeddings(self.clip, missing, self.templates)
            for key, row in zip(missing, fresh):
                self._text_cache[key] = row
        for key in keys:
            self._text_cache.move_to_end(key)
        result = torch.stack([self._text_cache[k] for k in keys]) if keys else None
        while len(self._text_cache) > self.cache_size:
            self._text_cache.popitem(last=False)
        return result if result is not None else torch.zeros(0, self.clip.embed_dim)

    def _class_prompts(self, ontology: Ontology) -> list[list[str]]:
        return [ontology.prompts_of(name) for name in ontology.classes] + [
            [n] for n in self.negatives
        ]

    # ------------------------------------------------------------------ public calls
    def classify(
        self,
        images: Sequence[np.ndarray],
        detections: Sequence[sv.Detections],
        ontologies: Sequence[Ontology] | Ontology,
    ) -> list[sv.Detections]:
        """Score every box against its image's classes and apply the mode.

        Args:
            images: RGB ``uint8`` arrays ``(H, W, 3)``.
            detections: one ``sv.Detections`` per image (pixel ``xyxy``).
            ontologies: one :class:`Ontology` per image (or one for all): the classes each
                image's boxes are judged against.

        Returns:
            New detections with ``data["clip_class"]`` and ``data["clip_score"]`` on every
            box (fewer boxes in reject mode).

        Example:
            >>> out = clf.classify([image], [det], [Ontology(["cat", "dog"])])  # doctest: +SKIP
        """
        import torch

        n = len(images)
        if len(detections) != n:
            raise ValueError(f"got {len(detections)} detections for {n} images")
        if isinstance(ontologies, Ontology):
            ontologies = [ontologies] * n
        if len(ontologies) != n:
            raise ValueError(f"got {len(ontologies)} ontologies for {n} images")
        for onto in ontologies:
            if not isinstance(onto, Ontology):
                raise TypeError(f"each image needs an Ontology, got {type(onto).__name__}")

        crops = [
            self._crop(image, box)
            for image, det in zip(images, detections)
            for box in np.asarray(det.xyxy, dtype=float).reshape(-1, 4)
        ]
        if not crops:
            return [self._apply(det, onto, np.zeros((0, len(onto) + len(self.negatives))))
                    for det, onto in zip(detections, ontologies)]

        needed = list(dict.fromkeys(
            tuple(p) for onto in ontologies for p in self._class_prompts(onto)
        ))
        self.text_embeddings(needed)  # every new class of the batch in one text pass
        crop_emb = self.clip.encode_images(crops, batch_size=self.batch_size)
        scale = self.clip.logit_scale
        out, start = [], 0
        for det, onto in zip(detections, ontologies):
            rows = crop_emb[start:start + len(det)]
            start += len(det)
            text = self.text_embeddings(self._class_prompts(onto))
            probs = torch.softmax(scale * rows @ text.T, dim=-1).numpy()
            out.append(self._apply(det, onto, probs))
        return out

    def classify_image(
        self, image: ImageSource, classes: ClassesLike
    ) -> list[tuple[str, float]]:
        """Plain zero-shot classification of a whole image, best class first.

        Args:
            image: a path, bytes, PIL image or RGB array.
            classes: class names, a ``prompt -> class`` mapping, ``"a, b"`` or an Ontology.

        Returns:
            ``(class, probability)`` for every class (negatives excluded), best first.

        Example:
            >>> ClipClassifier().classify_image("cat.jpg", ["cat", "dog"])  # doctest: +SKIP
            [('cat', 0.97), ('dog', 0.03)]
        """
        import torch

        onto = Ontology.from_any(classes)
        emb = self.clip.encode_images([load_image(image)])
        text = self.text_embeddings(self._class_prompts(onto))
        probs = torch.softmax(self.clip.logit_scale * emb @ text.T, dim=-1)[0].numpy()
        pairs = [(name, float(probs[i])) for i, name in enumerate(onto.classes)]
        return sorted(pairs, key=lambda pair: -pair[1])

    # ------------------------------------------------------------------ decisions
    def _apply(self, det: sv.Detections, onto: Ontology, probs: np.ndarray) -> sv.Detections:
        """Apply the mode to one image's boxes given ``probs`` (boxes x (classes + negatives))."""
        return apply_mode(
            det, onto, probs, mode=self.mode, reject_threshold=self.reject_threshold,
            clip_weight=self.clip_weight,
        )

    def _crop(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        return square_crop(image, box, self.padding, self._fill, max_side=MAX_CROP_SIDE)

    @property
    def _fill(self) -> tuple[int, int, int]:
        return tuple(int(round(255 * m)) for m in self.clip.image_mean)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (f"ClipClassifier({self.clip.spec!r}, mode={self.mode!r}, "
                f"templates={len(self.templates)}, negatives={list(self.negatives)})")


def apply_mode(
    det: sv.Detections,
    onto: Ontology,
    probs: np.ndarray,
    *,
    mode: ClassifyMode,
    reject_threshold: float = 0.2,
    clip_weight: float = 0.5,
) -> sv.Detections:
    """The decision of each mode for one image, from the class probabilities of its boxes.

    ``probs`` is ``(boxes, classes + negatives)``: the ontology's classes first, in order,
    then any negative prompts.

    Example:
        >>> probs = np.array([[0.7, 0.2, 0.1]])  # cat, dog, negative
        >>> apply_mode(det, Ontology(["cat", "dog"]), probs, mode="relabel")  # doctest: +SKIP
    """
    det = det[:] if len(det) else det
    classes = onto.classes
    k = len(classes)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs.reshape(len(det), probs.shape[-1] if probs.ndim == 2 else k)
    real = probs[:, :k]
    best = real.argmax(axis=1) if len(det) else np.zeros(0, dtype=int)
    best_p = real[np.arange(len(det)), best]
    det.data["clip_class"] = np.array([classes[i] for i in best], dtype=object)
    det.data["clip_score"] = best_p.astype(np.float32)
    if len(det) == 0:
        if "class_name" not in det.data:
            det.data["class_name"] = np.array([], dtype=object)
        return det

    if mode == "relabel":
        old = det.data.get("class_name")
        if old is not None:
            det.data["detector_class"] = np.asarray(old, dtype=object).copy()
        det.data["class_name"] = det.data["clip_class"].copy()
        det.class_id = best.astype(int)
    elif mode == "rescore":
        names = det.data.get("class_name")
        own = np.zeros(len(det))
        for i in range(len(det)):
            name = None if names is None else str(names[i])
            if name in classes:
                own[i] = real[i, classes.index(name)]
            else:
                logger.debug("box class %r is not in the ontology; CLIP score 0", name)
        conf = det.confidence if det.confidence is not None else np.ones(len(det))
        conf = np.clip(np.asarray(conf, dtype=np.float64), 0.0, 1.0)
        det.data["detector_confidence"] = conf.astype(np.float32)
        fused = conf ** (1.0 - clip_weight) * own ** clip_weight
        det.confidence = fused.astype(np.float32)
    elif mode == "reject":
        background = probs[:, k:].max(axis=1) if probs.shape[1] > k else np.zeros(len(det))
        keep = (best_p >= reject_threshold) & (best_p >= background)
        if not keep.all():
            logger.debug("reject mode dropped %d of %d boxes", int((~keep).sum()), len(det))
        det = det[keep]
    else:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return det


def square_crop(
    image: np.ndarray, box: np.ndarray, padding: float, fill: tuple[int, int, int],
    max_side: int | None = None,
) -> np.ndarray:
    """The box plus a ``padding`` margin, clipped to the image, centred on a square canvas.

    A square keeps the whole region through CLIP's resize-and-centre-crop preprocessing.
    A box of zero width or height still gives a crop of at least one pixel. With
    ``max_side``, a longer crop is first scaled down to it (bicubic, no side below one
    pixel), so a 100000x1 box gives a ``max_side`` square, not 100000x100000 pixels.

    Example:
        >>> square_crop(np.zeros((10, 20, 3), np.uint8), np.array([0, 0, 8, 4]), 0.0, (0, 0, 0)).shape
        (8, 8, 3)
        >>> strip = np.zeros((1, 5000, 3), np.uint8)
        >>> square_crop(strip, np.array([0, 0, 5000, 1]), 0.0, (0, 0, 0), max_side=64).shape
        (64, 64, 3)
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = padding * max(x2 - x1, 0.0), padding * max(y2 - y1, 0.0)
    left = int(np.clip(np.floor(x1 - mx), 0, w - 1))
    top = int(np.clip(np.floor(y1 - my), 0, h - 1))
    right = int(np.clip(np.ceil(x2 + mx), left + 1, w))
    bottom = int(np.clip(np.ceil(y2 + my), top + 1, h))
    crop = image[top:bottom, left:right]
    ch, cw = crop.shape[:2]
    if max_side is not None and max(ch, cw) > max_side:
        from PIL import Image

        scale = max_side / max(ch, cw)
        ch, cw = max(1, min(max_side, round(ch * scale))), max(1, min(max_side, round(cw * scale)))
        crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((cw, ch), Image.BICUBIC))
    side = max(ch, cw)
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    canvas[:] = fill
    oy, ox = (side - ch) // 2, (side - cw) // 2
    canvas[oy:oy + ch, ox:ox + cw] = crop
    return canvas
