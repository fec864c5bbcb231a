"""``ClipTagger``: RAM-style image tagging with CLIP over a tag vocabulary.

The whole image is embedded once and compared with one text embedding per tag (the
normalised mean over the tag's templates). Scores are a softmax over the vocabulary at
CLIP's own temperature (its learned logit scale), so they sum to one across the
vocabulary and a typical photo spreads most of the mass over a handful of tags.

The vocabulary's text embeddings take the text encoder thousands of sentences; they are
computed once per (model, vocabulary, templates) and stored on disk, so later starts
read them back instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ovperc.atomic import atomic_file
from ovperc.hub import cache_dir as ovperc_cache_dir
from ovperc.stages.clip_model import ClipModel, resolve_clip, text_key
from ovperc.stages.templates import TemplatesLike, class_embeddings, resolve_templates
from ovperc.types import Tag

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEFAULT_CLIP_MODEL = "ViT-B-32:laion2b_s34b_b79k"


def builtin_vocabulary() -> list[str]:
    """The built-in vocabulary: about 1,900 common objects, scenes, materials and animals.

    Example:
        >>> len(builtin_vocabulary()) >= 1000
        True
    """
    text = resources.files("ovperc").joinpath("data/tags.txt").read_text(encoding="utf-8")
    return _clean_lines(text.splitlines())


def load_vocabulary(vocabulary: str | Path | Sequence[str] | None) -> list[str]:
    """Tags from a file (one per line, ``#`` starts a comment), a list, or the built-in set.

    Tags are stripped and inner spaces collapsed; empty lines and repeats are dropped.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: no tag is left.

    Example:
        >>> load_vocabulary(["cat", " dog ", "cat"])
        ['cat', 'dog']
    """
    if vocabulary is None:
        return builtin_vocabulary()
    if isinstance(vocabulary, (str, os.PathLike)):
        path = Path(vocabulary).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"vocabulary file {str(path)!r} not found; give a text file with one tag per "
                "line, a list of tags, or None for the built-in vocabulary"
            )
        tags = _clean_lines(path.read_text(encoding="utf-8").splitlines())
        source = str(path)
    else:
        items = list(vocabulary)
        for item in items:
            if not isinstance(item, str):
                raise TypeError(f"tags must be strings, got {type(item).__name__}: {item!r}")
        tags = _clean_lines(items)
        source = "the given list"
    if not tags:
        raise ValueError(f"the vocabulary from {source} holds no tags")
    return tags


def _clean_lines(lines: Sequence[str]) -> list[str]:
    out = (" ".join(line.split("#", 1)[0].split()) for line in lines)
    return list(dict.fromkeys(tag for tag in out if tag))


class ClipTagger:
    """Names what is in each image by scoring it against a tag vocabulary with CLIP.

    Each tag's score is its softmax probability over the whole vocabulary at CLIP's own
    temperature. A tag is returned when its score is at least ``threshold`` (default
    0.02, i.e. about 38 times the uniform share of the 1,900-tag built-in vocabulary),
    at most ``top_k`` (default 10) per image, best first. Scores depend on the vocabulary:
    a smaller vocabulary gives each tag a larger share, so raise the threshold with it.

    The vocabulary's text embeddings are cached on disk under ``cache_dir`` (default
    ``ovperc.hub.cache_dir("tags")``, i.e. ``~/.cache/ovperc/tags``), keyed by the model,
    the vocabulary and the templates: only the first start with a given combination runs
    the text encoder.

    Args:
        model: a CLIP spec (see :mod:`ovperc.stages.clip_spec`; default
            ``"ViT-B-32:laion2b_s34b_b79k"``) or a shared :class:`ClipModel`.
        device: ``auto``, ``cpu``, ``cuda``, ... (used when ``model`` is a spec).
        dtype: ``float32``, ``float16`` or ``bfloat16`` (used when ``model`` is a spec).
        vocabulary: ``None`` for the built-in vocabulary, a text file (one tag per line) or
            a list of tags.
        threshold: minimum score of a returned tag, in ``[0, 1]``.
        top_k: most tags per image (``None`` for no limit).
        templates: ``None`` for the ``"photo"`` set (``"a photo of a {}."``,
            ``"a photo of the {}."``, ``"a picture showing {}."``), another named set or
            your own strings with ``{}``.
        cache_dir: folder for the vocabulary embeddings.
        quantize: ``"int8"``: CLIP's image tower as dynamic int8, CPU only (see
            :class:`~ovperc.stages.clip_model.ClipModel`); a given ``ClipModel`` keeps its own.

    Example:
        >>> tagger = ClipTagger()  # doctest: +SKIP
        >>> tagger.tag([image])[0][:2]  # doctest: +SKIP
        [Tag(name='kitchen', score=0.31), Tag(name='refrigerator', score=0.12)]
    """

    def __init__(
        self,
        model: str | ClipModel = DEFAULT_CLIP_MODEL,
        *,
        device: str = "auto",
        dtype: str = "float32",
        vocabulary: str | Path | Sequence[str] | None = None,
        threshold: float = 0.02,
        top_k: int | None = 10,
        templates: TemplatesLike = None,
        cache_dir: str | Path | None = None,
        quantize: str | None = None,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        self.clip = resolve_clip(model, device=device, dtype=dtype, quantize=quantize)
        self.vocabulary = load_vocabulary(vocabulary)
        self.templates = resolve_templates(templates, default="photo")
        self.threshold = threshold
        self.top_k = top_k
        self.cache_dir = Path(cache_dir) if cache_dir is not None else ovperc_cache_dir("tags")
        self._text: torch.Tensor | None = None

    @property
    def cache_path(self) -> Path:
        """The file holding this vocabulary's text embeddings (it may not exist yet)."""
        key = text_key(self.clip.cache_key, self.vocabulary, self.templates)
        return self.cache_dir / f"{key}.npy"

    def text_embeddings(self) -> torch.Tensor:
        """Vocabulary embeddings ``(V, D)``: from memory, else from disk, else computed.

        Example:
            >>> tagger.text_embeddings().shape  # doctest: +SKIP
            torch.Size([1895, 512])
        """
        import torch

        if self._text is None:
            path = self.cache_path
            cached = self._read(path)
            if cached is None:
                logger.info("encoding %d tags x %d templates (cached afterwards in %s)",
                            len(self.vocabulary), len(self.templates), path)
                emb = class_embeddings(self.clip, [[t] for t in self.vocabulary], self.templates)
                self._write(path, emb.numpy().astype(np.float32))
                self._text = emb
            else:
                self._text = torch.from_numpy(cached)
        return self._text

    def _read(self, path: Path) -> np.ndarray | None:
        if not path.is_file():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            logger.warning("ignoring unreadable tag cache %s: %s", path, error)
            return None
        if array.ndim != 2 or array.shape[0] != len(self.vocabulary) or array.dtype != np.float32:
            logger.warning("ignoring tag cache %s with shape %s", path, array.shape)
            return None
        return array

    @staticmethod
    def _write(path: Path, array: np.ndarray) -> None:
        """Write to a temporary file in the same folder, then rename: never a partial file."""
        try:
            with atomic_file(path, durable=False) as handle:
                np.save(handle, array, allow_pickle=False)
        except OSError as error:
            logger.warning("could not cache tag embeddings in %s: %s", path, error)

    def scores(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Scores ``(N, V)`` of every image against every tag (rows sum to one).

        Example:
            >>> tagger.scores([image]).shape  # doctest: +SKIP
            (1, 1895)
        """
        import torch

        if len(images) == 0:
            return np.zeros((0, len(self.vocabulary)), dtype=np.float32)
        text = self.text_embeddings()
        emb = self.clip.encode_images(list(images))
        return torch.softmax(self.clip.logit_scale * emb @ text.T, dim=-1).numpy()

    def tag(self, images: Sequence[np.ndarray]) -> list[list[Tag]]:
        """Tags per image, best first: score >= ``threshold``, at most ``top_k``.

        Args:
            images: RGB ``uint8`` arrays ``(H, W, 3)`` (or PIL images), embedded together.

        Example:
            >>> [tags] = ClipTagger().tag([image])  # doctest: +SKIP
            >>> [t.name for t in tags]  # doctest: +SKIP
            ['kitchen', 'refrigerator', 'sink']
        """
        result = []
        for row in self.scores(images):
            order = np.argsort(-row, kind="stable")
            if self.top_k is not None:
                order = order[: self.top_k]
            result.append([
                Tag(self.vocabulary[i], float(row[i])) for i in order if row[i] >= self.threshold
            ])
        return result

    def __repr__(self) -> str:
        return (f"ClipTagger({self.clip.spec!r}, vocabulary={len(self.vocabulary)} tags, "
                f"threshold={self.threshold}, top_k={self.top_k})")
