"""The run manifest: what a labelling run is (its signature), which files it wrote, which
images are done.

Files in ``<dataset>/.ovperc/``:

* ``manifest.json`` (rewritten atomically): format version, the run *signature* (classes,
  models, thresholds, format: everything that changes the output), the dataset's class
  list (index = class id), which grows when tags add classes (ids never move), and the
  dataset-wide files the run wrote (``data.yaml``, ``annotations.json``, ...).
* ``done.jsonl`` (append-only): one line per finished image, written after all its files
  are in place: ``{"rel", "stem", "counts", "classes", "files", "source"}``. A line torn by
  a crash is dropped on the next open, and that image is simply done again.
* ``pending.json``: the images being written right now and their files, recorded *before*
  the first byte is written, so a run killed half-way (``kill -9``) leaves nothing behind
  that the next run cannot find: it removes those files and their temporaries.

The manifest is the only thing that decides what ovperc may delete: :meth:`Manifest.forget`
and :func:`discard` remove exactly the files it recorded, never anything else.

Example:
    >>> import tempfile
    >>> manifest = Manifest.open(tempfile.mkdtemp(), {"format": "yolo"}, classes=["dog"])
    >>> manifest.begin([{"rel": "a.jpg", "files": ["labels/a.txt"]}])
    >>> manifest.record([{"rel": "a.jpg", "stem": "a", "counts": {"dog": 1}, "files": ["labels/a.txt"]}])
    >>> manifest.stems(), manifest.classes
    ({'a.jpg': 'a'}, ['dog'])
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ovperc.atomic import atomic_write_text, remove_temporaries

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 2

#: folder (inside the dataset) for run state: manifest, log, COCO per-image parts.
STATE_DIR = ".ovperc"


class ManifestMismatchError(ValueError):
    """The dataset folder holds a run with another signature (classes, models, format)."""


class Manifest:
    """The state of one dataset folder's labelling run; use :meth:`open`.

    Attributes:
        root: the dataset folder.
        signature: the run signature (JSON-ready dict).
        classes: the dataset's class names; the index of a name is its class id.
        done: ``rel -> record`` of finished images.
        files: dataset-wide files (relative to ``root``) this run wrote.

    Example:
        >>> m = Manifest.open("dataset/", {"format": "yolo", "classes": {"dog": "dog"}})  # doctest: +SKIP
        >>> "a.jpg" in m.done  # doctest: +SKIP
        False
    """

    def __init__(self, root: Path, signature: dict[str, Any], classes: list[str],
                 done: dict[str, dict[str, Any]], files: Sequence[str] = ()) -> None:
        self.root = root
        self.signature = signature
        self.classes = list(classes)
        self.done = done
        self.files = list(files)

    # ------------------------------------------------------------------ paths
    @property
    def state_dir(self) -> Path:
        """``<dataset>/.ovperc``."""
        return self.root / STATE_DIR

    @property
    def manifest_path(self) -> Path:
        """``<dataset>/.ovperc/manifest.json``."""
        return self.state_dir / "manifest.json"

    @property
    def log_path(self) -> Path:
        """``<dataset>/.ovperc/done.jsonl``."""
        return self.state_dir / "done.jsonl"

    @property
    def pending_path(self) -> Path:
        """``<dataset>/.ovperc/pending.json``."""
        return self.state_dir / "pending.json"

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, root: str | os.PathLike, signature: Mapping[str, Any], *,
             classes: Sequence[str] = (), require_empty: bool = True) -> Manifest:
        """Open (resume) or create the manifest of ``root`` for a run with ``signature``.

        Resuming first clears what a killed run left half-written: the files of the images
        it had begun but not finished, and the temporary files of every file it recorded.

        Args:
            root: the dataset folder (created if missing).
            signature: what the run is; a resumed run must have the same one.
            classes: the starting classes of a new run (the user's, in id order).
            require_empty: refuse to start a new run in a folder holding other files.

        Raises:
            ManifestMismatchError: the folder holds a run with a different signature, or
                files that no ovperc run wrote (the caller offers ``--overwrite``).

        Example:
            >>> Manifest.open("dataset/", {"format": "coco"})  # doctest: +SKIP
        """
        root = Path(root)
        signature = json.loads(json.dumps(dict(signature)))
        stored = read_stored(root)
        if stored is not None:
            if stored.get("signature") != signature:
                raise ManifestMismatchError(_mismatch_message(root, stored.get("signature") or {}, signature))
            manifest = cls(root, signature, list(stored.get("classes") or []), {},
                           stored.get("files") or [])
            manifest.done = dict(manifest._read_log())
            pending = _read_pending(manifest.pending_path)
            manifest._remove_temporaries([f for entry in pending for f in entry["files"]])
            manifest._clear_pending(pending)
            logger.info("resuming %s: %d images already done", root, len(manifest.done))
            return manifest
        if require_empty:
            check_empty(root)
        manifest = cls(root, signature, list(classes), {})
        manifest.state_dir.mkdir(parents=True, exist_ok=True)
        manifest.log_path.unlink(missing_ok=True)
        manifest.pending_path.unlink(missing_ok=True)
        manifest.save()
        return manifest

    def _read_log(self) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from _read_log(self.log_path, repair=True)

    # ------------------------------------------------------------------ update
    def save(self) -> None:
        """Write ``manifest.json`` atomically (signature, current classes, dataset-wide files)."""
        payload = {
            "version": MANIFEST_VERSION,
            "signature": self.signature,
            "classes": self.classes,
            "files": self.files,
        }
        atomic_write_text(self.manifest_path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")

    def set_classes(self, classes: Sequence[str]) -> None:
        """Record a grown class list before any file that uses its new ids is written.

        Raises:
            ValueError: an existing class would move (ids must stay stable).
        """
        classes = list(classes)
        if classes[: len(self.classes)] != self.classes:
            raise ValueError(f"class ids must not move: had {self.classes}, got {classes}")
        if classes != self.classes:
            self.classes = classes
            self.save()

    def reset_classes(self, classes: Sequence[str]) -> None:
        """Replace the class list; only for a resumed run, before it writes anything.

        Example:
            >>> manifest.reset_classes(["cat"])  # doctest: +SKIP
        """
        if list(classes) != self.classes:
            self.classes = list(classes)
            self.save()

    def owns(self, path: Path) -> bool:
        """Whether ``path`` (inside the dataset) is a file this run's manifest recorded."""
        rel = _relative(self.root, path)
        if rel is None:
            return False
        return rel in self.files or any(rel in r.get("files", ()) for r in self.done.values())

    def claim(self, path: Path) -> bool:
        """Record a dataset-wide file as this run's before writing it.

        Returns:
            ``True`` when the run may write ``path``: it recorded it before, or nothing is
            there yet (it is recorded now); ``False`` when a file that ovperc did not write
            is there.

        Example:
            >>> manifest.claim(Path("dataset/data.yaml"))  # doctest: +SKIP
            True
        """
        rel = _relative(self.root, path)
        if rel is None:
            return False
        if rel in self.files:
            return True
        if path.exists() or path.is_symlink():
            return False
        self.files.append(rel)
        self.save()
        return True

    def begin(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Record the images about to be written, with their ``files``, before writing them.

        Example:
            >>> manifest.begin([{"rel": "a.jpg", "stem": "a", "files": ["labels/a.txt"]}])  # doctest: +SKIP
        """
        payload = [{"rel": str(r["rel"]), "files": list(r.get("files", ()))} for r in records]
        atomic_write_text(self.pending_path, json.dumps(payload, ensure_ascii=False) + "\n")

    def record(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append finished images to the log (after their files are in place) and sync it.

        Each record needs ``rel`` and ``stem``; ``files`` lists what was written for it
        (relative to the dataset), ``counts`` (class -> boxes) feeds the report and
        ``classes`` (names in order of first use) keeps ids exact on resume.

        Example:
            >>> manifest.record([{"rel": "a.jpg", "stem": "a", "counts": {"dog": 1}}])  # doctest: +SKIP
        """
        if records:
            lines = "".join(json.dumps(dict(r), ensure_ascii=True, sort_keys=True) + "\n" for r in records)
            with open(self.log_path, "ab") as handle:
                handle.write(lines.encode("ascii"))
                handle.flush()
                os.fsync(handle.fileno())
            for r in records:
                self.done[str(r["rel"])] = dict(r)
        self.pending_path.unlink(missing_ok=True)

    def forget(self, rels: Iterable[str]) -> list[str]:
        """Remove finished images from the dataset: their recorded files, then their records.

        Used when an image's source was deleted or changed since it was labelled, so the
        dataset stays what a fresh run over the current source writes.

        Returns:
            The relative paths forgotten.

        Example:
            >>> manifest.forget(["old/gone.jpg"])  # doctest: +SKIP
            ['old/gone.jpg']
        """
        gone = [rel for rel in rels if rel in self.done]
        if not gone:
            return []
        # intent first: a crash while deleting leaves a pending entry the next open finishes
        self.begin([self.done[rel] for rel in gone])
        for rel in gone:
            _remove_files(self.root, self.done[rel].get("files", ()))
            del self.done[rel]
        text = "".join(json.dumps(r, ensure_ascii=True, sort_keys=True) + "\n" for r in self.done.values())
        atomic_write_text(self.log_path, text)
        self.pending_path.unlink(missing_ok=True)
        return gone

    def stems(self) -> dict[str, str]:
        """``rel -> stem`` of the finished images."""
        return {rel: str(r["stem"]) for rel, r in self.done.items()}

    # ------------------------------------------------------------------ cleanup
    def _clear_pending(self, pending: list[dict[str, Any]]) -> None:
        for entry in pending:
            if entry["rel"] not in self.done:
                removed = _remove_files(self.root, entry["files"])
                if removed:
                    logger.info("removed %d files of %s, begun by an interrupted run",
                                removed, entry["rel"])
        self.pending_path.unlink(missing_ok=True)

    def _remove_temporaries(self, pending: list[str]) -> None:
        recorded = [*self.files, *pending, *(f for r in self.done.values() for f in r.get("files", ()))]
        recorded += [_relative(self.root, p) or "" for p in (self.manifest_path, self.log_path,
                                                            self.pending_path)]
        _remove_temporaries_of(self.root, recorded)


def check_empty(root: Path) -> None:
    """Refuse to start a new run in a folder that holds files and no ovperc manifest.

    Raises:
        ManifestMismatchError: ``root`` holds files that no ovperc run wrote.
    """
    if read_stored(root) is None and root.is_dir() and any(p.name != STATE_DIR for p in root.iterdir()):
        raise ManifestMismatchError(
            f"{root} is not empty and holds no ovperc manifest, so no ovperc run wrote it; "
            "choose an empty or new --out folder, or pass --overwrite to "
            "write into it anyway (files ovperc did not write are never touched)"
        )


def check_resumable(root: Path, signature: Mapping[str, Any]) -> None:
    """Refuse early (before any model loads) a run whose settings differ from the run in ``root``.

    Raises:
        ManifestMismatchError: ``root`` holds a run with another signature.
    """
    stored = read_stored(root)
    wanted = json.loads(json.dumps(dict(signature)))
    if stored is not None and stored.get("signature") != wanted:
        raise ManifestMismatchError(_mismatch_message(root, stored.get("signature") or {}, wanted))


def read_stored(root: Path) -> dict[str, Any] | None:
    """The stored ``manifest.json`` of a dataset folder, or ``None`` when there is none."""
    path = root / STATE_DIR / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ManifestMismatchError(f"{path} is not a readable ovperc manifest ({error})") from error


def discard(root: str | os.PathLike, files_of: Any = None) -> int:
    """Remove a previous run from ``root``: exactly the files its manifest recorded.

    Files the manifest did not record (the user's photos, notes, another tool's output) are
    never touched, whatever they are called; folders are removed only when empty.

    Args:
        root: the dataset folder.
        files_of: ``(signature, record) -> files`` for records of an older manifest version
            that did not list their files.

    Returns:
        How many files were removed.

    Example:
        >>> discard("old-dataset/")  # doctest: +SKIP
        412
    """
    root = Path(root)
    stored = read_stored(root)
    if stored is None:
        return 0
    state = root / STATE_DIR
    records = [r for _, r in _read_log(state / "done.jsonl", repair=False)]
    files: list[str] = list(stored.get("files") or [])
    for record in records:
        if "files" in record:
            files.extend(record["files"])
        elif files_of is not None:
            files.extend(files_of(stored.get("signature") or {}, record))
    files.extend(f for entry in _read_pending(state / "pending.json") for f in entry["files"])
    state_files = ["manifest.json", "done.jsonl", "pending.json"]
    _remove_temporaries_of(root, [*files, *(f"{STATE_DIR}/{name}" for name in state_files)])
    removed = _remove_files(root, files)
    for name in ["done.jsonl", "pending.json", "manifest.json"]:  # the manifest last
        (state / name).unlink(missing_ok=True)
    logger.info("removed %d files of the previous run in %s", removed, root)
    return removed


def _read_log(path: Path, *, repair: bool) -> Iterator[tuple[str, dict[str, Any]]]:
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


def _read_pending(path: Path) -> list[dict[str, Any]]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return []  # none, or torn before its rename: then nothing of that batch was written
    return [{"rel": str(e["rel"]), "files": [str(f) for f in e.get("files", ())]} for e in entries]


def _relative(root: Path, path: Path) -> str | None:
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return None


def _inside(root: Path, rel: str) -> Path | None:
    """``root / rel`` when ``rel`` is a plain relative path that stays inside ``root``."""
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        return None
    return root / rel


def _remove_files(root: Path, files: Iterable[str]) -> int:
    removed = 0
    folders = set()
    for rel in files:
        path = _inside(root, rel)
        if path is None:
            logger.warning("not removing %r: outside the dataset", rel)
            continue
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed += 1
        folders.add(path.parent)
    for folder in sorted(folders, key=lambda p: -len(p.parts)):
        while folder != root and _inside(root, _relative(root, folder) or "") is not None:
            try:
                folder.rmdir()  # only an empty folder goes
            except OSError:
                break
            folder = folder.parent
    return removed


def _remove_temporaries_of(root: Path, files: Iterable[str]) -> None:
    by_folder: dict[Path, set[str]] = {}
    for rel in files:
        path = _inside(root, rel)
        if path is not None:
            by_folder.setdefault(path.parent, set()).add(path.name)
    for folder, names in by_folder.items():
        for path in remove_temporaries(folder, names):
            logger.info("removed %s, left by an interrupted write", path)


def _mismatch_message(root: Path, stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    details = "; ".join(f"{k}: was {stored.get(k)!r}, now {wanted.get(k)!r}" for k in changed)
    return (
        f"{root} holds an ovperc run with other settings ({details}). Rerun with the same "
        "settings to resume it, choose another --out folder, or pass --overwrite to discard "
        "it and start over"
    )
