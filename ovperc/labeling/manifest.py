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
* ``originals/``: the original bytes of every file ovperc did not write but was told to
  change (``ovperc label --existing``: a hand label file it adds boxes to, a ``data.yaml``
  or ``annotations.json`` it extends). The copy is made and recorded in ``manifest.json``
  (``originals``) before the file is changed, and wherever a file ovperc wrote would be
  removed, such a file gets its original bytes back instead.

The manifest is the only thing that decides what ovperc may delete: :meth:`Manifest.forget`
and :func:`discard` remove exactly the files it recorded, never anything else, and restore
the files it adopted (:meth:`Manifest.adopt`).

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

from ovperc.atomic import atomic_copy, atomic_write_text
from ovperc.labeling.state_files import inside as _inside
from ovperc.labeling.state_files import read_log as _read_log
from ovperc.labeling.state_files import read_pending as _read_pending
from ovperc.labeling.state_files import relative as _relative
from ovperc.labeling.state_files import remove_files as _remove_files
from ovperc.labeling.state_files import remove_temporaries_in as _remove_temporaries_of
from ovperc.labeling.state_files import restore_original as _restore

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 2

#: folder (inside the dataset) for run state: manifest, log, COCO per-image parts.
STATE_DIR = ".ovperc"

#: folder (inside :data:`STATE_DIR`) holding the original bytes of adopted files.
ORIGINALS_DIR = "originals"


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
        originals: ``file -> backup`` (both relative to ``root``) of every file ovperc did not
            write but changed (see :meth:`adopt`).

    Example:
        >>> m = Manifest.open("dataset/", {"format": "yolo", "classes": {"dog": "dog"}})  # doctest: +SKIP
        >>> "a.jpg" in m.done  # doctest: +SKIP
        False
    """

    def __init__(self, root: Path, signature: dict[str, Any], classes: list[str],
                 done: dict[str, dict[str, Any]], files: Sequence[str] = (),
                 originals: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.signature = signature
        self.classes = list(classes)
        self.done = done
        self.files = list(files)
        self.originals = dict(originals or {})

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
                           stored.get("files") or [], stored.get("originals") or {})
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
        # a run killed while writing its first manifest.json leaves a temporary of it
        _remove_temporaries_of(root, [_relative(root, p) or "" for p in (manifest.manifest_path,
                                                                         manifest.pending_path)])
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
            **({"originals": self.originals} if self.originals else {}),
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

    def claim(self, path: Path, *, adopt: bool = False) -> bool:
        """Record a dataset-wide file as this run's before writing it.

        Args:
            path: the file.
            adopt: a file that ovperc did not write may be changed: its original bytes are
                kept first (see :meth:`adopt`).

        Returns:
            ``True`` when the run may write ``path``: it recorded it before, or nothing is
            there yet (it is recorded now), or it was adopted; ``False`` when a file that
            ovperc did not write is there (and not ``adopt``).

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
            if not adopt or not self.adopt(path):
                return False
        self.files.append(rel)
        self.save()
        return True

    def adopt(self, path: Path) -> bool:
        """Keep the original bytes of a file ovperc did not write, so that it may change it.

        The copy goes to ``.ovperc/originals/<file>`` and is recorded in ``manifest.json``
        before this returns; from then on, removing the file (``--overwrite``, a forgotten
        image, a run killed while writing it) puts the original bytes back instead.

        Returns:
            ``True`` when ``path`` is adopted (now or before); ``False`` when it is not a
            regular file inside the dataset (a link, a folder: never changed).

        Example:
            >>> manifest.adopt(Path("dataset/labels/a.txt"))  # doctest: +SKIP
            True
        """
        rel = _relative(self.root, path)
        if rel is None or _inside(self.root, rel) is None:
            return False
        if rel in self.originals and (self.root / self.originals[rel]).is_file():
            return True
        if path.is_symlink() or not path.is_file():
            return False
        # recorded first, so that a run killed while copying leaves no temporary nobody knows
        # of; until the copy is complete the file is never changed
        backup = f"{STATE_DIR}/{ORIGINALS_DIR}/{rel}"
        self.originals[rel] = backup
        self.save()
        atomic_copy(path, self.root / backup)
        return True

    def original(self, path: Path) -> Path | None:
        """Where the original bytes of an adopted file are kept (``None``: not adopted).

        Example:
            >>> manifest.original(Path("dataset/data.yaml"))  # doctest: +SKIP
            PosixPath('dataset/.ovperc/originals/data.yaml')
        """
        rel = _relative(self.root, path)
        backup = None if rel is None else self.originals.get(rel)
        return None if backup is None else self.root / backup

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
            self.drop(self.done[rel].get("files", ()))
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
                removed = self.drop(entry["files"])
                if removed:
                    logger.info("removed %d files of %s, begun by an interrupted run",
                                removed, entry["rel"])
        self.pending_path.unlink(missing_ok=True)

    def drop(self, files: Iterable[str]) -> int:
        """Remove files this run wrote; an adopted one gets its original bytes back instead.

        Returns:
            How many files were removed or restored.

        Example:
            >>> manifest.drop(["labels/a.txt"])  # doctest: +SKIP
            1
        """
        files = list(files)
        restored = [rel for rel in files if rel in self.originals]
        removed = _remove_files(self.root, [rel for rel in files if rel not in self.originals])
        for rel in restored:
            _restore(self.root, rel, self.originals[rel])
            backup = self.originals.pop(rel)
            self.save()
            (self.root / backup).unlink(missing_ok=True)
        return removed + len(restored)

    def _remove_temporaries(self, pending: list[str]) -> None:
        recorded = [*self.files, *pending, *(f for r in self.done.values() for f in r.get("files", ()))]
        recorded += list(self.originals.values())
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


def written_files(root: Path) -> set[str]:
    """The files the run stored in ``root`` wrote (relative paths), not counting the files it
    adopted (those are the dataset's own).

    Example:
        >>> "data.yaml" in written_files(Path("dataset/"))  # doctest: +SKIP
        True
    """
    stored = read_stored(root)
    if stored is None:
        return set()
    files = set(stored.get("files") or [])
    for _, record in _read_log(root / STATE_DIR / "done.jsonl", repair=False):
        files.update(record.get("files", ()))
    return files - set(stored.get("originals") or {})


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
    originals = {str(k): str(v) for k, v in (stored.get("originals") or {}).items()}
    state_files = ["manifest.json", "done.jsonl", "pending.json"]
    _remove_temporaries_of(root, [*files, *originals.values(),
                                  *(f"{STATE_DIR}/{name}" for name in state_files)])
    removed = _remove_files(root, [f for f in files if f not in originals])
    for rel, backup in originals.items():
        _restore(root, rel, backup)
    _remove_files(root, list(originals.values()))
    for name in ["done.jsonl", "pending.json", "manifest.json"]:  # the manifest last
        (state / name).unlink(missing_ok=True)
    logger.info("removed %d files of the previous run in %s", removed, root)
    return removed


def _mismatch_message(root: Path, stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    details = "; ".join(f"{k}: was {stored.get(k)!r}, now {wanted.get(k)!r}" for k in changed)
    return (
        f"{root} holds an ovperc run with other settings ({details}). Rerun with the same "
        "settings to resume it, choose another --out folder, or pass --overwrite to discard "
        "it and start over"
    )
