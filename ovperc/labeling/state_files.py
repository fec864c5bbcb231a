"""The files of a dataset's run state, one helper each: the done log, the pending list,
paths inside the dataset, removing recorded files, restoring adopted ones, temporaries.

:mod:`ovperc.labeling.manifest` decides *what* may be removed or restored; these only do it.

Example:
    >>> relative(Path("ds"), Path("ds/labels/a.txt"))
    'labels/a.txt'
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ovperc.atomic import atomic_copy, remove_temporaries

logger = logging.getLogger(__name__)


def read_log(path: Path, *, repair: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(rel, record)`` of each whole line of ``done.jsonl``; with ``repair`` a torn last line
    (an interrupted append) is cut off the file."""
    if not path.exists():
        return
    data = path.read_bytes()
    good = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            record = json.loads(line)
        except ValueError:
            break
        good += len(line)
        yield record["rel"], record
    if good != len(data) and repair:
        logger.warning("dropping a torn last line of %s (an interrupted write)", path)
        with open(path, "r+b") as handle:
            handle.truncate(good)


def read_pending(path: Path) -> list[dict[str, Any]]:
    """The images ``pending.json`` says were being written, with their files."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return []  # none, or torn before its rename: then nothing of that batch was written
    return [{"rel": str(e["rel"]), "files": [str(f) for f in e.get("files", ())]} for e in entries]


def relative(root: Path, path: Path) -> str | None:
    """``path`` relative to ``root`` (``/``-separated), or ``None`` outside it."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return None


def inside(root: Path, rel: str) -> Path | None:
    """``root / rel`` when ``rel`` is a plain relative path that stays inside ``root``."""
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        return None
    return root / rel


def remove_files(root: Path, files: Iterable[str]) -> int:
    """Remove these files (relative to ``root``) and the folders they leave empty; returns how
    many files were removed. A path that leaves ``root`` is refused with a warning."""
    removed = 0
    folders = set()
    for rel in files:
        path = inside(root, rel)
        if path is None:
            logger.warning("not removing %r: outside the dataset", rel)
            continue
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed += 1
        folders.add(path.parent)
    for folder in sorted(folders, key=lambda p: -len(p.parts)):
        while folder != root and inside(root, relative(root, folder) or "") is not None:
            try:
                folder.rmdir()  # only an empty folder goes
            except OSError:
                break
            folder = folder.parent
    return removed


def restore_original(root: Path, rel: str, backup: str) -> bool:
    """Put an adopted file's original bytes back.

    Without its copy (a run killed while making it, before the file was ever changed) the
    file is left as it is and ``False`` returned.
    """
    source, target = inside(root, backup), inside(root, rel)
    if source is None or target is None or not source.is_file():
        logger.info("%s: no original kept (the file was not changed); left as it is", rel)
        return False
    atomic_copy(source, target)
    return True


def remove_temporaries_in(root: Path, files: Iterable[str]) -> None:
    """Remove the temporaries an interrupted atomic write of these files left."""
    by_folder: dict[Path, set[str]] = {}
    for rel in files:
        path = inside(root, rel)
        if path is not None:
            by_folder.setdefault(path.parent, set()).add(path.name)
    for folder, names in by_folder.items():
        for path in remove_temporaries(folder, names):
            logger.info("removed %s, left by an interrupted write", path)
