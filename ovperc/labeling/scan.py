"""List the images of a folder: recursive, deterministic, safe on symlink loops.

Each image gets an output *stem*: the name its annotation files carry in the dataset. Stems
never collide, even when two subfolders hold the same file name or one folder holds
``a.jpg`` and ``a.png``, and they are valid names on common file systems (length,
characters, reserved names).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: file extensions scanned (compared lower-case, so ``.JPG`` and ``.Tiff`` count too).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

_UNSAFE = set('/\\:*?"<>|')

#: the longest stem in UTF-8 bytes: with the longest suffix written (``.jpeg``, ``.tiff``, an
#: image's own extension up to 10 bytes) and a ``_<n>`` for collisions, a file name stays
#: under the 255 bytes that ext4, APFS, NTFS and most others allow.
MAX_STEM_BYTES = 200

#: names Windows refuses for a file whatever its extension.
_RESERVED = {"con", "prn", "aux", "nul", *(f"{port}{i}" for port in ("com", "lpt") for i in range(1, 10))}

#: the folder that marks an ovperc dataset (its run state); see :mod:`ovperc.labeling.manifest`.
DATASET_MARKER = (".ovperc", "manifest.json")


@dataclass(frozen=True)
class ScanEntry:
    """One image file found by :func:`scan_images`.

    Attributes:
        path: where to read it.
        rel: its path relative to the scanned folder, ``/``-separated; the image's identity
            in the manifest.
        problem: why it cannot be read (not a regular file, broken link), else ``None``.
        split: the dataset split it is written to (``train``/``val``), ``""`` for none.
        given: boxes it already has (``sv.Detections``), run through the chain instead of
            the detector (``ovperc segment``: box -> mask on an existing dataset).

    Example:
        >>> ScanEntry(Path("photos/a.jpg"), "a.jpg").suffix
        '.jpg'
    """

    path: Path
    rel: str
    problem: str | None = None
    split: str = ""
    given: Any = field(default=None, compare=False, repr=False)

    @property
    def suffix(self) -> str:
        """The file extension as found (``.JPG`` stays ``.JPG``)."""
        return Path(self.rel).suffix


def sort_key(rel: str) -> tuple[str, ...]:
    """The order images are processed and written in: by path components.

    Example:
        >>> sorted(["b.jpg", "a/z.jpg", "a.jpg"], key=sort_key)
        ['a/z.jpg', 'a.jpg', 'b.jpg']
    """
    return tuple(rel.split("/"))


def is_image_name(name: str) -> bool:
    """True for a file name with one of :data:`IMAGE_EXTENSIONS` (any case).

    Example:
        >>> is_image_name("IMG_1.JPG"), is_image_name("notes.txt")
        (True, False)
    """
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def scan_images(source: str | os.PathLike, *, exclude: Iterable[str | os.PathLike] = (),
                datasets: list[Path] | None = None) -> list[ScanEntry]:
    """All image files under ``source`` (or ``source`` itself when it is a file), sorted.

    Folders are followed recursively, symlinked ones too, but each real folder is visited
    once, so a symlink loop ends. Hidden files and folders (names starting with ``.``) and
    the ``exclude`` folders (e.g. the output dataset inside the source) are left out, and so
    is every folder that holds an ovperc dataset (a ``.ovperc/manifest.json``): its images
    are an earlier run's copies, not new photos. A path with an image extension that is not
    a regular file (a FIFO, a broken link) is listed with its ``problem`` so the report can
    say why it was skipped.

    Args:
        source: a folder or one file.
        exclude: folders to leave out.
        datasets: if given, the ovperc dataset folders left out are appended to it.

    Raises:
        FileNotFoundError: ``source`` does not exist.

    Example:
        >>> [e.rel for e in scan_images("photos/")]  # doctest: +SKIP
        ['a.jpg', 'trip/a.jpg', 'trip/b.PNG']
    """
    root = Path(source)
    if not root.exists():
        raise FileNotFoundError(f"image folder or file not found: {root}")
    if not root.is_dir():
        return [_entry(root, root.name)]
    excluded = set()
    excluded_real = []  # a folder inside an excluded one, reached through a symlink, is out too
    for path in exclude:
        try:
            excluded.add(_identity(Path(path)))
        except OSError:
            continue
        real_path = Path(os.path.realpath(path))
        real_root = Path(os.path.realpath(root))
        if real_path != real_root and real_path not in real_root.parents:  # SOURCE may lie in it
            excluded_real.append(real_path)
    entries: list[ScanEntry] = []
    visited: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        try:
            ident = _identity(here)
        except OSError:
            dirnames[:] = []
            continue
        real = Path(os.path.realpath(here))
        if ident in visited or ident in excluded or any(e in real.parents for e in excluded_real):
            if ident in visited:
                logger.info("not following %s again (symlink loop or repeated link)", here)
            dirnames[:] = []
            continue
        visited.add(ident)
        if here.joinpath(*DATASET_MARKER).is_file():
            logger.info("not scanning %s: it holds an ovperc dataset", here)
            if datasets is not None:
                datasets.append(here)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = here.relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        for name in filenames:
            if name.startswith(".") or not is_image_name(name):
                continue
            entries.append(_entry(here / name, prefix + name))
    entries.sort(key=lambda e: sort_key(e.rel))
    return entries


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def _entry(path: Path, rel: str) -> ScanEntry:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return ScanEntry(path, rel, "broken symbolic link" if path.is_symlink() else "file vanished")
    except OSError as error:
        return ScanEntry(path, rel, f"cannot stat file ({error.strerror or error})")
    if not stat.S_ISREG(mode):
        kind = "a named pipe" if stat.S_ISFIFO(mode) else "not a regular file"
        return ScanEntry(path, rel, f"{kind}, not an image file")
    return ScanEntry(path, rel, None)


def _clean_part(text: str) -> str:
    out = []
    for char in text:
        if char in _UNSAFE or not char.isprintable() or 0xD800 <= ord(char) <= 0xDFFF:
            out.append("_")
        else:
            out.append(char)
    cleaned = "".join(out).strip()
    return cleaned or "_"


def _fit(base: str, rel: str) -> str:
    """``base`` cut to :data:`MAX_STEM_BYTES`, ending in a hash of ``rel`` when cut, and not
    a name Windows reserves."""
    if base.split(".")[0].casefold() in _RESERVED:
        base = "_" + base
    if len(base.encode("utf-8")) <= MAX_STEM_BYTES:
        return base
    tag = "~" + hashlib.sha1(rel.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    room = MAX_STEM_BYTES - len(tag)
    cut = base.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(" .")
    return cut + tag


def output_stems(rels: Iterable[str], reserved: Mapping[str, str] | None = None) -> dict[str, str]:
    """Collision-free output stems for relative image paths.

    A file's stem is its relative path without the extension, folders joined by ``__``
    (``trip/day1/a.jpg`` -> ``trip__day1__a``). Characters file systems refuse become
    ``_``; a stem longer than :data:`MAX_STEM_BYTES` is cut and ends in ``~`` and a hash of
    the whole path, so it stays unique and the same on every run. When two files would
    share a stem (compared case-insensitively, as on macOS/Windows file systems) the later
    one in :func:`sort_key` order gets ``_2``, ``_3``, ... The result depends only on the
    paths given (and on ``reserved``: stems to keep as they are).

    Example:
        >>> output_stems(["a.jpg", "a.png", "x/a.jpg"])
        {'a.jpg': 'a', 'a.png': 'a_2', 'x/a.jpg': 'x__a'}
    """
    reserved = dict(reserved or {})
    taken = {stem.casefold() for stem in reserved.values()}
    stems: dict[str, str] = {}
    for rel in sorted(set(rels), key=sort_key):
        if rel in reserved:
            stems[rel] = reserved[rel]
            continue
        parts = rel.split("/")
        parts[-1] = os.path.splitext(parts[-1])[0]
        base = _fit("__".join(_clean_part(p) for p in parts), rel)
        stem, n = base, 1
        while stem.casefold() in taken:
            n += 1
            stem = f"{base}_{n}"
        taken.add(stem.casefold())
        stems[rel] = stem
    return stems


def mirrored_stems(rels: Iterable[str]) -> dict[str, str]:
    """Output stems that mirror the source's folders: ``trip/a.jpg`` -> ``trip/a``.

    A dataset labelled by hand keeps ``labels/trip/a.txt`` beside ``images/trip/a.jpg``;
    ``ovperc label --existing`` names its files the same way so that it finds those labels.
    A path no file system takes as it is, or a second file with the same stem (``a.jpg``
    and ``a.png``), gets the name :func:`output_stems` gives it instead.

    Example:
        >>> mirrored_stems(["trip/a.jpg", "a.jpg", "a.png"])
        {'a.jpg': 'a', 'a.png': 'a_2', 'trip/a.jpg': 'trip/a'}
    """
    rels = sorted(set(rels), key=sort_key)
    kept: dict[str, str] = {}
    taken: set[str] = set()
    for rel in rels:
        parts = rel.split("/")
        parts[-1] = os.path.splitext(parts[-1])[0]
        stem = "/".join(parts)
        safe = all(p and _clean_part(p) == p and _fit(p, rel) == p and p not in (".", "..") for p in parts)
        if safe and stem.casefold() not in taken:
            kept[rel] = stem
            taken.add(stem.casefold())
    return output_stems(rels, reserved=kept)
