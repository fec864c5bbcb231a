"""Where RAM / RAM++ files come from: checkpoints, the tag list and its thresholds.

Checkpoints are the authors' releases on the Hugging Face hub. The tag list and the
per-tag thresholds are read from the official repository pinned to one commit and checked
against their sha256, so a later change upstream can never silently change the tags.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ovperc.hub import ModelNotAvailableError, download_url, offline

logger = logging.getLogger(__name__)

#: recognize-anything commit the tag files are read from (2025-02-18).
OFFICIAL_COMMIT = "7cb804a8609e9f4b1a50b7f31436d2df40bb9481"
OFFICIAL_REPO = "https://github.com/xinyu1205/recognize-anything"
_RAW = f"https://raw.githubusercontent.com/xinyu1205/recognize-anything/{OFFICIAL_COMMIT}/ram/data"

#: Tags in the official vocabulary (and rows of RAM's ``label_embed``).
NUM_OFFICIAL_TAGS = 4585
#: Used by the official code for any tag the threshold file does not list.
DEFAULT_THRESHOLD = 0.68
#: The official threshold for open-set (user-added) tags.
OPEN_SET_THRESHOLD = 0.5


@dataclass(frozen=True)
class PinnedFile:
    """A file at a fixed URL with its expected sha256."""

    url: str
    sha256: str

    @property
    def filename(self) -> str:
        """The file's name (last part of the URL)."""
        return self.url.rsplit("/", 1)[-1]


TAG_LIST = PinnedFile(
    f"{_RAW}/ram_tag_list.txt",
    "5d96d2f7225527480ad773aaac76b6e5c08a18adf6eae9ca7d2ab923d5e7bd8b",
)
TAG_LIST_CHINESE = PinnedFile(
    f"{_RAW}/ram_tag_list_chinese.txt",
    "c912657a0f30be7b2f5df6ccffa17e1d84561d0bea508528e38b6d0d711bcfbe",
)
TAG_THRESHOLDS = PinnedFile(
    f"{_RAW}/ram_tag_list_threshold.txt",
    "b6f81d0de1bc7f9c251af512c413eae976c77dbfbadf700d4e3d90510f4c6447",
)


@dataclass(frozen=True)
class HubCheckpoint:
    """An official checkpoint on the Hugging Face hub."""

    repo_id: str
    filename: str
    size: str
    repo_type: str = "model"

    @property
    def url(self) -> str:
        """Browser download link."""
        return f"https://huggingface.co/{self.repo_id}/resolve/main/{self.filename}"


#: variant -> the authors' release.
CHECKPOINTS: dict[str, HubCheckpoint] = {
    "ram_plus": HubCheckpoint(
        "xinyu1205/recognize-anything-plus-model", "ram_plus_swin_large_14m.pth", "3.0 GB"
    ),
    "ram": HubCheckpoint("xinyu1205/recognize_anything_model", "ram_swin_large_14m.pth", "5.6 GB"),
}


def default_cache(cache_dir: str | os.PathLike | None) -> Path:
    """``cache_dir`` if given, else ovperc's cache folder for RAM."""
    from ovperc.hub import cache_dir as ovperc_cache

    return Path(cache_dir).expanduser() if cache_dir is not None else ovperc_cache("ram")


def resolve_checkpoint(
    checkpoint: str | os.PathLike | None, variant: str, *, cache_dir: str | os.PathLike | None
) -> Path:
    """A local checkpoint path: the one given, or the official release for ``variant``.

    The release is downloaded once with ``huggingface_hub`` (into ``cache_dir`` when given,
    else the Hugging Face cache) and read from the cache afterwards.

    Raises:
        FileNotFoundError: ``checkpoint`` names a file that does not exist.
        ModelNotAvailableError: the release is not cached and cannot be downloaded.

    Example:
        >>> resolve_checkpoint("ram_plus_swin_large_14m.pth", "ram_plus", cache_dir=None)  # doctest: +SKIP
    """
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"RAM checkpoint {str(checkpoint)!r} is not a file; pass the path of "
                f"{CHECKPOINTS[variant].filename} (or a converted .safetensors file), or "
                "checkpoint=None to download the official release"
            )
        return path
    release = CHECKPOINTS[variant]
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(
                release.repo_id,
                release.filename,
                repo_type=release.repo_type,
                cache_dir=None if cache_dir is None else str(Path(cache_dir).expanduser()),
            )
        )
    except Exception as error:  # offline, no network, gated, disk full ...
        state = (
            "offline mode (HF_HUB_OFFLINE=1) and it is not in the cache"
            if offline()
            else f"{type(error).__name__}: {error}"
        )
        raise ModelNotAvailableError(
            f"cannot load the {variant} checkpoint {release.repo_id}/{release.filename} "
            f"({release.size}): {state}. To fix: download {release.url} on a machine with "
            "network access and pass its path as checkpoint=..."
        ) from error


def fetch_pinned(file: PinnedFile, *, cache_dir: str | os.PathLike | None) -> Path:
    """A cached, sha256-checked copy of one of the official tag files."""
    folder = default_cache(cache_dir) / OFFICIAL_COMMIT[:12]
    return download_url(file.url, file.sha256, folder=folder, filename=file.filename)


# ---------------------------------------------------------------- parsing
def parse_tag_list(text: str, *, source: str = "tag list") -> list[str]:
    """Tag names, one per line; surrounding spaces are stripped, trailing blank lines ignored.

    Raises:
        ValueError: a blank line between tags, or no tags at all.

    Example:
        >>> parse_tag_list("cat\\ndog \\n\\n")
        ['cat', 'dog']
    """
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ValueError(f"{source} holds no tags")
    for number, name in enumerate(names, start=1):
        if not name:
            raise ValueError(f"{source} line {number} is blank; every line must name one tag")
    return names


def parse_thresholds(text: str, *, source: str = "threshold file") -> list[float]:
    """Per-tag thresholds, one number in [0, 1] per line (trailing blank lines ignored).

    Raises:
        ValueError: a line that is not a number in [0, 1].

    Example:
        >>> parse_thresholds("0.65\\n0.8\\n")
        [0.65, 0.8]
    """
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    values = []
    for number, line in enumerate(lines, start=1):
        try:
            value = float(line)
        except ValueError:
            raise ValueError(f"{source} line {number}: {line!r} is not a number") from None
        values.append(_check_threshold(value, f"{source} line {number}"))
    return values


def _check_threshold(value: float, where: str) -> float:
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ValueError(f"{where}: threshold {value} is outside [0, 1]")
    return float(value)


def load_tag_list(
    tags: str | os.PathLike | Sequence[str] | None, *, cache_dir: str | os.PathLike | None
) -> list[str]:
    """The built-in vocabulary: a list of names, a file (one per line), or the official list.

    Example:
        >>> load_tag_list(["cat", "dog"], cache_dir=None)
        ['cat', 'dog']
    """
    if tags is None:
        path = fetch_pinned(TAG_LIST, cache_dir=cache_dir)
        return parse_tag_list(path.read_text(encoding="utf-8"), source=str(path))
    if isinstance(tags, (str, os.PathLike)):
        path = Path(tags).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"tag list file {str(tags)!r} not found")
        return parse_tag_list(path.read_text(encoding="utf-8"), source=str(path))
    names = [str(name).strip() for name in tags]
    if not names or not all(names):
        raise ValueError("tag_list must hold at least one tag and no empty names")
    return names


def load_thresholds(
    thresholds: str | os.PathLike | Sequence[float] | None,
    num_tags: int,
    *,
    cache_dir: str | os.PathLike | None,
) -> list[float]:
    """Per-tag thresholds for ``num_tags`` tags.

    ``None`` reads the official file. Like the official code, tags past the end of the
    given values get :data:`DEFAULT_THRESHOLD` (0.68).

    Raises:
        ValueError: more thresholds than tags, or a value outside [0, 1].

    Example:
        >>> load_thresholds([0.5], 3, cache_dir=None)
        [0.5, 0.68, 0.68]
    """
    if thresholds is None:
        path = fetch_pinned(TAG_THRESHOLDS, cache_dir=cache_dir)
        values = parse_thresholds(path.read_text(encoding="utf-8"), source=str(path))
    elif isinstance(thresholds, (str, os.PathLike)):
        path = Path(thresholds).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"threshold file {str(thresholds)!r} not found")
        values = parse_thresholds(path.read_text(encoding="utf-8"), source=str(path))
    else:
        values = [_check_threshold(float(v), f"thresholds[{i}]") for i, v in enumerate(thresholds)]
    if len(values) > num_tags:
        raise ValueError(f"{len(values)} thresholds given for {num_tags} tags")
    if len(values) < num_tags:
        logger.debug("%d tags without a threshold get %.2f", num_tags - len(values), DEFAULT_THRESHOLD)
    return values + [DEFAULT_THRESHOLD] * (num_tags - len(values))


__all__ = [
    "CHECKPOINTS",
    "DEFAULT_THRESHOLD",
    "NUM_OFFICIAL_TAGS",
    "OFFICIAL_COMMIT",
    "OPEN_SET_THRESHOLD",
    "TAG_LIST",
    "TAG_LIST_CHINESE",
    "TAG_THRESHOLDS",
    "fetch_pinned",
    "load_tag_list",
    "load_thresholds",
    "parse_tag_list",
    "parse_thresholds",
    "resolve_checkpoint",
]
