"""The run manifest: what a labelling run is (its signature) and which images are done.

Two files in ``<dataset>/.ovperc/``:

* ``manifest.json`` (rewritten atomically): format version, the run *signature* (classes,
  models, thresholds, format: everything that changes the output), and the dataset's
  class list (index = class id), which grows when tags add classes (ids never move).
* ``done.jsonl`` (append-only): one line per finished image, written after all its files
  are in place: ``{"rel", "stem", "counts"}``. A line torn by a crash is dropped on the
  next open, and that image is simply done again.

Example:
    >>> import tempfile
    >>> manifest = Manifest.open(tempfile.mkdtemp(), {"format": "yolo"}, classes=["dog"])
    >>> manifest.record([{"rel": "a.jpg", "stem": "a", "counts": {"dog": 1}}])
    >>> manifest.stems(), manifest.classes
    ({'a.jpg': 'a'}, ['dog'])
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ovperc.atomic import atomic_write_text
from ovperc.labeling.writers import STATE_DIR

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1


class ManifestMismatchError(ValueError):
    """The dataset folder holds a run with another signature (classes, models, format)."""


class Manifest:
    """The state of one dataset folder's labelling run; use :meth:`open`.

    Attributes:
        root: the dataset folder.
        signature: the run signature (JSON-ready dict).
        classes: the dataset's class names; the index of a name is its class id.
        done: ``rel -> record`` of finished images.

    Example:
        >>> m = Manifest.open("dataset/", {"format": "yolo", "classes": {"dog": "dog"}})  # doctest: +SKIP
        >>> "a.jpg" in m.done  # doctest: +SKIP
        False
    """

    def __init__(self, root: Path, signature: dict[str, Any], classes: list[str],
                 done: dict[str, dict[str, Any]]) -> None:
        self.root = root
        self.signature = signature
        self.classes = list(classes)
        self.done = done

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

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, root: str | os.PathLike, signature: Mapping[str, Any], *,
             classes: Sequence[str] = (), require_empty: bool = True) -> Manifest:
        """Open (resume) or create the manifest of ``root`` for a run with ``signature``.

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
        path = root / STATE_DIR / "manifest.json"
        if path.exists():
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("signature") != signature:
                raise ManifestMismatchError(_mismatch_message(root, stored.get("signature") or {}, signature))
            manifest = cls(root, signature, list(stored.get("classes") or []), {})
            manifest.done = dict(manifest._read_log())
            logger.info("resuming %s: %d images already done", root, len(manifest.done))
            return manifest
        if require_empty and root.exists() and any(p.name != STATE_DIR for p in root.iterdir()):
            raise ManifestMismatchError(
                f"{root} is not empty and holds no ovperc manifest, so it was not written by "
                "`ovperc label`; choose an empty or new --out folder, or pass --overwrite to "
                "write into it anyway (ovperc's own outputs there are replaced)"
            )
        manifest = cls(root, signature, list(classes), {})
        manifest.state_dir.mkdir(parents=True, exist_ok=True)
        manifest.log_path.unlink(missing_ok=True)
        manifest.save()
        return manifest

    def _read_log(self) -> Iterator[tuple[str, dict[str, Any]]]:
        if not self.log_path.exists():
            return
        data = self.log_path.read_bytes()
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
        if good != len(data):
            logger.warning("dropping a torn last line of %s (an interrupted write)", self.log_path)
            with open(self.log_path, "r+b") as handle:
                handle.truncate(good)

    # ------------------------------------------------------------------ update
    def save(self) -> None:
        """Write ``manifest.json`` atomically (signature and current classes)."""
        payload = {
            "version": MANIFEST_VERSION,
            "signature": self.signature,
            "classes": self.classes,
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

    def record(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append finished images to the log (after their files are in place) and sync it.

        Each record needs ``rel`` and ``stem``; ``counts`` (class -> boxes) feeds the report.

        Example:
            >>> manifest.record([{"rel": "b/c.jpg", "stem": "b_c", "counts": {}}])  # doctest: +SKIP
            >>> "b/c.jpg" in manifest.done  # doctest: +SKIP
            True
        """
        if not records:
            return
        lines = "".join(json.dumps(dict(r), ensure_ascii=True, sort_keys=True) + "\n" for r in records)
        with open(self.log_path, "ab") as handle:
            handle.write(lines.encode("ascii"))
            handle.flush()
            os.fsync(handle.fileno())
        for r in records:
            self.done[str(r["rel"])] = dict(r)

    def stems(self) -> dict[str, str]:
        """``rel -> stem`` of the finished images (kept as they are on resume)."""
        return {rel: str(r["stem"]) for rel, r in self.done.items()}


def _mismatch_message(root: Path, stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    details = "; ".join(f"{k}: was {stored.get(k)!r}, now {wanted.get(k)!r}" for k in changed)
    return (
        f"{root} holds a labelling run with other settings ({details}). Rerun with the same "
        "settings to resume it, choose another --out folder, or pass --overwrite to discard "
        "it and start over"
    )
