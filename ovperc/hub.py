"""Where weights come from: local paths, the Hugging Face hub, or a pinned URL.

Nothing here runs at import time, and nothing downloads unless a stage is used.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from ovperc.atomic import atomic_file

logger = logging.getLogger(__name__)


class ModelNotAvailableError(RuntimeError):
    """Weights are neither on disk nor downloadable (offline, or no network)."""


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.strip().lower() in ("1", "true", "yes", "on") for flag in flags)


def cache_dir(subdir: str = "") -> Path:
    """ovperc's cache folder: ``$OVPERC_CACHE``, else ``$XDG_CACHE_HOME/ovperc``, else ``~/.cache/ovperc``.

    Example:
        >>> cache_dir("sam").name
        'sam'
    """
    root = os.environ.get("OVPERC_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ovperc"
    return base / subdir if subdir else base


def is_local(model: str | os.PathLike) -> bool:
    """True when ``model`` names an existing file or folder."""
    return Path(model).expanduser().exists()


def hub_unavailable(model: str, error: Exception) -> ModelNotAvailableError:
    """A clear error for a hub model that could not be loaded."""
    how = (
        f"download it once with `hf download {model}` on a machine with network access "
        "(then it loads from the cache), or pass a local folder instead of the hub id"
    )
    state = "offline mode (HF_HUB_OFFLINE=1) and it is not in the cache" if offline() else str(error)
    return ModelNotAvailableError(f"cannot load model {model!r}: {state}. To fix: {how}.")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_url(
    url: str, sha256: str | None, *, folder: Path, filename: str | None = None
) -> Path:
    """Return a cached copy of ``url`` in ``folder``, downloading it (checked) if needed.

    The file is written to a temporary name and renamed only once its sha256 matches, so
    an interrupted download never leaves a broken file behind.

    Raises:
        ModelNotAvailableError: offline, or the download failed.
        ValueError: the downloaded file's sha256 does not match.

    Example:
        >>> download_url(SAM_URL, SAM_SHA256, folder=cache_dir("sam"))  # doctest: +SKIP
    """
    target = folder / (filename or url.rsplit("/", 1)[-1])
    if target.exists():
        return target
    if offline():
        raise ModelNotAvailableError(
            f"{target.name} is not in {folder} and HF_HUB_OFFLINE=1 forbids downloading it. "
            f"Download {url} yourself and pass its path, or unset HF_HUB_OFFLINE."
        )
    import urllib.request

    from tqdm.auto import tqdm

    logger.info("downloading %s to %s", url, target)
    try:
        digest = hashlib.sha256()
        with atomic_file(target, durable=False) as out, \
                urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
            if sha256 and digest.hexdigest() != sha256:  # raised inside: the file is discarded
                raise ValueError(
                    f"{url} downloaded with sha256 {digest.hexdigest()}, expected {sha256}; "
                    "the file was discarded"
                )
    except OSError as error:
        raise ModelNotAvailableError(f"could not download {url}: {error}") from error
    return target
