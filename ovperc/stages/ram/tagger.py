"""``RamTagger``: the Recognize Anything models (RAM, RAM++) as ovperc's tagger stage."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ovperc.stages.ram import assets
from ovperc.stages.ram.openset import DEFAULT_TEXT_ENCODER, OpenSetTags, TextEncoder
from ovperc.types import Tag

if TYPE_CHECKING:
    import torch

    from ovperc.stages.ram.model import RamModel

logger = logging.getLogger(__name__)

OpenSetMode = Literal["add", "only"]
OPEN_SET_MODES = ("add", "only")
IMAGE_SIZE = 384
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess(images: Sequence[np.ndarray], size: int = IMAGE_SIZE) -> np.ndarray:
    """RAM's input: plain resize to ``size`` x ``size`` (Pillow bilinear), ImageNet mean/std.

    The aspect ratio is not kept and nothing is cropped, as in the official transform,
    whose output this matches bit for bit.

    Returns:
        float32 array ``(B, 3, size, size)``.

    Example:
        >>> preprocess([np.zeros((20, 30, 3), np.uint8)]).shape
        (1, 3, 384, 384)
    """
    from PIL import Image

    from ovperc.image import load_image

    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"images must be numpy arrays, got {type(image).__name__}")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            image = load_image(image)
        resized = Image.fromarray(image, "RGB").resize((size, size), Image.BILINEAR)
        pixels = np.asarray(resized, dtype=np.float32) / np.float32(255)
        out[i] = ((pixels - _MEAN) / _STD).transpose(2, 0, 1)
    return out


@dataclass
class _Loaded:
    model: RamModel
    device: torch.device
    dtype: torch.dtype
    names: list[str]
    thresholds: np.ndarray  # (tags,) float32
    builtin_keep: np.ndarray | None  # (builtin tags,) bool; None: no built-in group
    open_set: tuple[torch.Tensor, torch.Tensor] | None  # embeddings, mask


class RamTagger:
    """Tag images with RAM++ or RAM, the official Recognize Anything checkpoints.

    The checkpoint (official ``.pth`` or a slim ``.safetensors`` from :meth:`convert`)
    is read lazily on the first :meth:`tag` call, with ``mmap`` and only the tagging
    weights kept. Without a ``checkpoint`` the authors' release is downloaded once from
    the Hugging Face hub; the tag list and thresholds come from the official repository
    pinned to a commit, checked by sha256.

    Args:
        checkpoint: path to ``ram_plus_swin_large_14m.pth`` / ``ram_swin_large_14m.pth``
            or a converted ``.safetensors``; None downloads the release for ``variant``.
        variant: ``"ram_plus"`` (RAM++, default) or ``"ram"``; must match the checkpoint.
        tag_list: the checkpoint's vocabulary (names or a file, one tag per line), e.g.
            translated names; default: the official 4,585 English tags.
        thresholds: per-tag thresholds (values or a file, one per line); default: the
            official file (most tags 0.65, some up to 0.9; 0.68 past its end).
        threshold: one threshold for every tag instead (built-in and open-set).
        top_k: keep at most this many tags per image (best first).
        open_set_tags: extra tags (RAM++ and RAM): names, or ``{name: descriptions}``;
            see :mod:`ovperc.stages.ram.openset` for how names become descriptions.
            Their threshold is 0.5 (the official open-set value) unless ``threshold`` is set.
        open_set_mode: ``"add"`` (default) scores them beside the built-in tags (an
            open-set tag replaces a built-in one of the same name); ``"only"`` uses
            just them.
        open_set_encoder: open_clip ``"MODEL:PRETRAINED"`` of the text encoder (default
            ``"ViT-B-16:openai"``, what the checkpoints were trained with), or a callable
            mapping a list of texts to ``(N, 512)`` embeddings.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        dtype: ``float32``, or ``float16`` / ``bfloat16`` on a GPU.
        cache_dir: where downloads go (default: the Hugging Face cache for checkpoints,
            ovperc's cache for the tag files).

    Example:
        >>> tagger = RamTagger("ram_plus_swin_large_14m.pth")  # doctest: +SKIP
        >>> tagger.tag([image])[0][:3]  # doctest: +SKIP
        [Tag(name='dog', score=0.97), Tag(name='grass', score=0.91), ...]
        >>> RamTagger(open_set_tags={"corgi": ["a short-legged dog with a fox-like face"]})  # doctest: +SKIP
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        *,
        variant: Literal["ram_plus", "ram"] = "ram_plus",
        tag_list: str | os.PathLike | Sequence[str] | None = None,
        thresholds: str | os.PathLike | Sequence[float] | None = None,
        threshold: float | None = None,
        top_k: int | None = None,
        open_set_tags: OpenSetTags | None = None,
        open_set_mode: OpenSetMode = "add",
        open_set_encoder: str | TextEncoder = DEFAULT_TEXT_ENCODER,
        device: str = "auto",
        dtype: str = "float32",
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if variant not in assets.CHECKPOINTS:
            raise ValueError(f"variant must be one of {tuple(assets.CHECKPOINTS)}, got {variant!r}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        if open_set_mode not in OPEN_SET_MODES:
            raise ValueError(f"open_set_mode must be one of {OPEN_SET_MODES}, got {open_set_mode!r}")
        if open_set_mode == "only" and not open_set_tags:
            raise ValueError("open_set_mode='only' needs open_set_tags")
        if not (isinstance(open_set_encoder, str) or callable(open_set_encoder)):
            raise TypeError(
                "open_set_encoder must be an open_clip 'MODEL:PRETRAINED' string or a callable, "
                f"got {type(open_set_encoder).__name__}"
            )
        from ovperc.stages.ram.openset import validate

        self.checkpoint = checkpoint
        self.variant = variant
        self.tag_list = tag_list
        self.thresholds = thresholds
        self.threshold = threshold
        self.top_k = top_k
        self.open_set = validate(open_set_tags) if open_set_tags else None
        self.open_set_mode: OpenSetMode = open_set_mode
        self.open_set_encoder = open_set_encoder
        self.device = device
        self.dtype = dtype
        self.cache_dir = cache_dir
        self._loaded: _Loaded | None = None

    def __repr__(self) -> str:
        where = self.checkpoint if self.checkpoint is not None else assets.CHECKPOINTS[self.variant].url
        return f"RamTagger(variant={self.variant!r}, checkpoint={str(where)!r})"

    # ------------------------------------------------------------------ loading
    def load(self) -> RamTagger:
        """Load the model now (otherwise the first :meth:`tag` call does); returns self.

        Raises:
            ModelNotAvailableError: a file is neither local nor downloadable.
            ValueError: the checkpoint is not ``variant``, or does not fit the tag list.
        """
        self._ready()
        return self

    def _ready(self) -> _Loaded:
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def _load(self) -> _Loaded:
        from ovperc.device import resolve_device, resolve_dtype
        from ovperc.stages.ram.checkpoint import load_tagging_weights
        from ovperc.stages.ram.model import RamConfig, build_model, init_buffers

        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, device)
        path = assets.resolve_checkpoint(self.checkpoint, self.variant, cache_dir=self.cache_dir)
        weights = load_tagging_weights(path)
        if weights.variant != self.variant:
            raise ValueError(
                f"{path} is a {weights.variant} checkpoint but variant={self.variant!r}; "
                f"pass variant={weights.variant!r}"
            )
        names, thresholds = self._vocabulary(weights.tag_list, weights.thresholds)
        overrides = {k: v for k, v in weights.config.items()
                     if k in ("num_attention_heads", "layer_norm_eps", "image_size")}
        config = RamConfig.from_state_dict(weights.state_dict, num_classes=len(names), **overrides)
        model = build_model(config, empty=True)
        try:
            model.load_state_dict(weights.state_dict, strict=True, assign=True)
        except RuntimeError as error:
            raise ValueError(f"{path} does not fit the {self.variant} architecture: {error}") from None
        del weights
        init_buffers(model)
        model.requires_grad_(False).eval().to(device=device, dtype=dtype)
        logger.info("loaded %s from %s (%d tags) on %s", self.variant, path, len(names), device)

        keep: np.ndarray | None = np.ones(len(names), dtype=bool)
        open_set = None
        if self.open_set is not None:
            from ovperc.stages.ram.openset import OpenClipTextEncoder, describe, embed_open_set

            encoder = self.open_set_encoder
            if isinstance(encoder, str):
                encoder = OpenClipTextEncoder.from_spec(encoder, device=device)
            embeds, mask = embed_open_set(
                describe(self.open_set), encoder, variant=self.variant, width=config.embed_width
            )
            open_set = (embeds.to(device=device, dtype=dtype), mask.to(device))
            extra = list(self.open_set)
            if self.open_set_mode == "only":
                keep, names, thresholds = None, [], np.zeros(0, dtype=np.float32)
            else:
                keep = np.array([name not in self.open_set for name in names], dtype=bool)
                names = [name for name, kept in zip(names, keep) if kept]
                thresholds = thresholds[keep]
            names = names + extra
            thresholds = np.concatenate(
                [thresholds, np.full(len(extra), assets.OPEN_SET_THRESHOLD, dtype=np.float32)]
            )
        if self.threshold is not None:
            thresholds = np.full(len(names), self.threshold, dtype=np.float32)
        return _Loaded(model, device, dtype, names, thresholds, keep, open_set)

    def _vocabulary(
        self, stored_names: list[str] | None, stored_thresholds: list[float] | None
    ) -> tuple[list[str], np.ndarray]:
        if self.tag_list is not None:
            names = assets.load_tag_list(self.tag_list, cache_dir=self.cache_dir)
        elif stored_names is not None:
            names = stored_names
        else:
            names = assets.load_tag_list(None, cache_dir=self.cache_dir)
        if self.thresholds is not None:
            values = assets.load_thresholds(self.thresholds, len(names), cache_dir=self.cache_dir)
        elif stored_thresholds is not None and len(stored_thresholds) == len(names):
            values = list(stored_thresholds)
        elif self.threshold is not None:
            values = [self.threshold] * len(names)  # replaced anyway: nothing to download
        elif len(names) == assets.NUM_OFFICIAL_TAGS:
            values = assets.load_thresholds(None, len(names), cache_dir=self.cache_dir)
        else:
            logger.info("no thresholds for %d tags: %.2f for all", len(names), assets.DEFAULT_THRESHOLD)
            values = [assets.DEFAULT_THRESHOLD] * len(names)
        return names, np.asarray(values, dtype=np.float32)

    # ------------------------------------------------------------------ inference
    @property
    def tag_names(self) -> list[str]:
        """Every tag this tagger can return, in score-column order (loads the model)."""
        return list(self._ready().names)

    @property
    def class_thresholds(self) -> np.ndarray:
        """The threshold of each tag in :attr:`tag_names` (loads the model)."""
        return self._ready().thresholds.copy()

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Sigmoid scores ``(B, tags)`` (float32) for every tag in :attr:`tag_names`.

        Example:
            >>> tagger.probabilities([image]).shape  # doctest: +SKIP
            (1, 4585)
        """
        import torch

        state = self._ready()
        if len(images) == 0:
            return np.zeros((0, len(state.names)), dtype=np.float32)
        pixels = torch.from_numpy(preprocess(images, state.model.config.image_size))
        pixels = pixels.to(device=state.device, dtype=state.dtype)
        with torch.inference_mode():
            image_embeds = state.model.encode_image(pixels)
            parts = []
            if state.builtin_keep is not None:
                logits = state.model.tag_logits(image_embeds)
                if not state.builtin_keep.all():
                    keep = torch.from_numpy(state.builtin_keep).to(logits.device)
                    logits = logits[:, keep]
                parts.append(logits)
            if state.open_set is not None:
                parts.append(state.model.tag_logits(image_embeds, *state.open_set))
            scores = torch.cat(parts, dim=1).float().sigmoid()
        return scores.cpu().numpy()

    def tag(self, images: Sequence[np.ndarray]) -> list[list[Tag]]:
        """Tags per image, best first: every tag whose score is above its threshold.

        Args:
            images: RGB ``uint8`` arrays ``(H, W, 3)``.

        Returns:
            One list of :class:`~ovperc.types.Tag` per image, at most ``top_k`` long.

        Example:
            >>> RamTagger("ram_plus_swin_large_14m.pth").tag([image])  # doctest: +SKIP
        """
        scores = self.probabilities(images)
        if scores.shape[0] == 0:
            return []
        state = self._ready()
        results = []
        for row in scores:
            hits = np.flatnonzero(row > state.thresholds)
            order = hits[np.argsort(-row[hits], kind="stable")]
            if self.top_k is not None:
                order = order[: self.top_k]
            results.append([Tag(state.names[i], float(row[i])) for i in order])
        return results

    # ------------------------------------------------------------------ conversion
    @staticmethod
    def convert(
        checkpoint: str | os.PathLike,
        out_path: str | os.PathLike,
        *,
        tag_list: str | os.PathLike | Sequence[str] | None = None,
        thresholds: str | os.PathLike | Sequence[float] | None = None,
        dtype: Literal["float32", "float16", "bfloat16"] = "float32",
        cache_dir: str | os.PathLike | None = None,
    ) -> Path:
        """Write a slim ``.safetensors``: only the tagging weights, plus tags and thresholds.

        RAM++ shrinks from 3.0 GB to 1.3 GB and RAM from 5.6 GB to 0.85 GB (float32; half
        that with ``dtype="float16"``). The file then loads with no tag files and no key
        remapping: ``RamTagger("ram_plus.safetensors")``.

        Args:
            checkpoint: an official ``.pth``.
            out_path: the ``.safetensors`` to write.
            tag_list, thresholds: as in :class:`RamTagger`; default: the official files
                (downloaded once, pinned and checked).
            dtype: storage precision.
            cache_dir: where the tag files are downloaded to.

        Example:
            >>> RamTagger.convert("ram_plus_swin_large_14m.pth", "ram_plus.safetensors")  # doctest: +SKIP
        """
        from ovperc.stages.ram.checkpoint import convert_checkpoint

        names = assets.load_tag_list(tag_list, cache_dir=cache_dir)
        values = assets.load_thresholds(thresholds, len(names), cache_dir=cache_dir)
        return convert_checkpoint(checkpoint, out_path, tag_list=names, thresholds=values, dtype=dtype)
