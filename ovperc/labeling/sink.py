"""The writing half of a labelling run, shared by every engine.

:class:`DatasetSink` maps class names to the dataset's stable ids, records each image's files
in the manifest *before* writing them, writes them atomically and records the image as done;
:class:`ResultRecorder` hands it each batch's results in dataset order (optionally on a
background thread) and reports what was skipped.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ovperc.image import ImageError
from ovperc.labeling.manifest import Manifest
from ovperc.labeling.report import Report
from ovperc.labeling.scan import ScanEntry, sort_key
from ovperc.labeling.writers import DatasetWriter, ImageItem

if TYPE_CHECKING:
    import supervision as sv

    from ovperc.labeling.existing import ExistingLabels
    from ovperc.result import Perception

logger = logging.getLogger(__name__)


class DatasetSink:
    """Turns pipeline results into dataset files and manifest records.

    Before an image's files are written they are recorded as *begun* in the manifest, so a
    run killed half-way leaves nothing the next run cannot remove; a file that is already
    there and that no ovperc run recorded is never overwritten (that image is skipped).

    With ``existing`` (``ovperc label --existing``), an image file the dataset already holds
    is used where it is, and with ``merge`` an image's own label file is adopted (its
    original kept) and only the new boxes that overlap none of its boxes are added to it.

    Args:
        writer: the format writer.
        manifest: the run's manifest (its class list is the dataset ontology).
        existing: the labels the dataset already holds (``None``: an ovperc-only dataset).

    Example:
        >>> sink = DatasetSink(make_writer("yolo", out), manifest)  # doctest: +SKIP
        >>> records, skipped = sink.write_batch([(entry, stem, perception)])  # doctest: +SKIP
        >>> sink.finalize()  # doctest: +SKIP
    """

    def __init__(self, writer: DatasetWriter, manifest: Manifest,
                 existing: ExistingLabels | None = None) -> None:
        self.writer = writer
        self.manifest = manifest
        self.existing = existing

    def dataset_ids(self, detections: sv.Detections, names: Sequence[str]) -> sv.Detections:
        """Detections with ``class_id`` set to the dataset's ids for their class ``names``.

        New names are appended to the dataset's classes (and the manifest saved) before
        anything that uses them is written; existing ids never move.
        """
        classes = self.manifest.classes
        new = [n for n in dict.fromkeys(names) if n not in classes]
        if new:
            self.manifest.set_classes([*classes, *new])
            classes = self.manifest.classes
        det = detections[:] if len(detections) else detections
        det.class_id = np.array([classes.index(n) for n in names], dtype=int)
        return det

    def write_batch(self, items: Sequence[tuple[ScanEntry, str, Perception]]
                    ) -> tuple[list[dict[str, Any]], list[tuple[ScanEntry, str]]]:
        """Write every image of a batch, then record the batch in the manifest.

        Args:
            items: ``(scan entry, output stem, result)`` per image, in dataset order.

        Returns:
            The manifest records written, and ``(entry, reason)`` for each image that could
            not be written (its source vanished, a foreign file is in the way).

        Raises:
            OSError: the dataset cannot be written (disk full, read-only): no image could be.
        """
        planned, skipped = [], []
        for entry, stem, result in items:
            width, height = result.image_size
            item = ImageItem(entry.path, stem, entry.suffix, width, height, entry.split)
            plan = self._plan(entry, item)
            if isinstance(plan, str):
                skipped.append((entry, plan))
                continue
            paths, boxes, image = plan
            files = [p.relative_to(self.writer.out).as_posix() for p in paths]
            planned.append((entry, item, result, files, boxes, image))
        self.manifest.begin([{"rel": e.rel, "files": files} for e, _, _, files, _, _ in planned])
        records = []
        for entry, item, result, files, boxes, image in planned:
            names = _class_names(result)
            try:
                source = fingerprint(entry.path)
                det = self.dataset_ids(result.detections, names)
                if boxes is None:
                    self.writer.write(item, det, self.manifest.classes, image=image)
                else:
                    names = self._merge(item, det, names, boxes, image=image)
            except OSError as error:
                if not _image_error(error, entry.path):
                    raise
                self.manifest.drop(files)
                skipped.append((entry, f"not written ({describe_os_error(error)})"))
                continue
            extra = {} if boxes is None else {"existing": len(boxes)}
            records.append({"rel": entry.rel, "stem": item.stem, "counts": dict(Counter(names)),
                            "classes": list(dict.fromkeys(names)), "files": files,
                            "source": source, **({"split": item.split} if item.split else {}), **extra})
        self.manifest.record(records)
        return records, skipped

    def _merge(self, item: ImageItem, det: sv.Detections, names: list[str], boxes: np.ndarray, *,
               image: bool) -> list[str]:
        """Add the detections that overlap none of ``boxes`` to an image's own labels; returns
        their class names."""
        existing = self.existing
        assert existing is not None
        keep = existing.new_only(det.xyxy, boxes)
        det, names = det[keep], [n for n, k in zip(names, keep) if k]
        if image:
            self.writer.write_image(item)
        existing.write_merged(item, det, self.manifest.classes)
        existing.merged = [existing.merged[0] + 1, existing.merged[1] + len(boxes),
                           existing.merged[2] + len(names)]
        return names

    def _plan(self, entry: ScanEntry, item: ImageItem) -> tuple[list[Path], np.ndarray | None, bool] | str:
        """The files to write for an image, the boxes it has when new ones are merged into its
        own labels, and whether its image file is written; or why it cannot be written."""
        paths = self.writer.paths(item)
        existing = self.existing
        own = boxes = None
        write_image = True
        if existing is not None:
            image = self.writer.image_path(item)
            if image in paths and (image.exists() or image.is_symlink()) and not self.manifest.owns(image):
                paths.remove(image)  # the dataset's own copy of the image: used where it is
                write_image = False
            if existing.mode == "merge" and existing.labelled(item):
                try:
                    boxes = existing.boxes(item)
                except ValueError as error:
                    return str(error)
                own = existing.label_file(item)
                paths = [p for p in paths if p != own and p not in existing.left_alone(item)]
        foreign = next((p for p in paths if p.exists() or p.is_symlink()), None)
        if foreign is not None:
            return (f"not written: {foreign} is in the way and ovperc did not write it (move it, or "
                    "choose another --out)")
        if own is not None:  # adopted (its original kept) before pending.json names it
            if not self.manifest.adopt(own):
                return f"not merged: {own} is not a regular file"
            paths.append(own)
        return paths, boxes, write_image

    def finalize(self) -> str | None:
        """Write the dataset-wide files for every finished image, in dataset order.

        Returns:
            Why they were not written (a file ovperc did not write is in the way), or ``None``.
        """
        done = sorted(self.manifest.done.values(), key=lambda r: sort_key(str(r["rel"])))
        splits = [str(r.get("split", "")) for r in done]
        adopt = self.existing is not None and self.existing.mode != "skip"
        blocked = [p for p in self.writer.dataset_files(splits) if not self.manifest.claim(p, adopt=adopt)]
        if blocked:
            return (f"{', '.join(map(str, blocked))} not written: ovperc did not write the file "
                    "there, so it is left alone")
        self.writer.finalize(self.manifest.classes, [str(r["stem"]) for r in done], splits)
        return None

    def counts(self) -> dict[str, int]:
        """Boxes per class over the whole dataset, in class id order."""
        total: Counter[str] = Counter()
        for record in self.manifest.done.values():
            total.update(record.get("counts", {}))
        return {name: total[name] for name in self.manifest.classes if total[name]}


def split_of(rel: str, val_fraction: float) -> str:
    """``"val"`` for about ``val_fraction`` of images, else ``"train"``: decided by a hash of
    the image's relative path alone, so it never changes between runs or machines.

    Example:
        >>> split_of("cam_a/img_001.jpg", 0.0), split_of("cam_a/img_001.jpg", 1.0)
        ('train', 'val')
    """
    digest = hashlib.sha256(rel.encode("utf-8", "surrogatepass")).digest()
    return "val" if int.from_bytes(digest[:8], "big") < val_fraction * 2**64 else "train"


def fingerprint(path: Path) -> list[int]:
    """What tells a changed source file on a rerun: its size and modification time."""
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


#: errors writing one image that come from that image (its source, its name), not the disk.
_IMAGE_ERRNOS = {errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL, errno.EXDEV}


def _image_error(error: OSError, source: Path) -> bool:
    if error.errno in _IMAGE_ERRNOS:
        return True
    return error.filename is not None and os.path.abspath(str(error.filename)) == os.path.abspath(source)


def describe_os_error(error: OSError) -> str:
    """``"No such file or directory: 'a.jpg'"``: an OS error without its errno number."""
    where = f": {error.filename!r}" if error.filename is not None else ""
    return f"{error.strerror or error}{where}"


class ResultRecorder:
    """Hands each image's outcome to the report and the sink, in dataset order.

    The one place where engines meet the writer: an engine calls :meth:`skip` for a file it
    could not read and :meth:`record` with a batch's results (or per-image exceptions).
    With ``background``, batches are written by one thread, in the order recorded, so that
    writing overlaps the next batch's inference; :meth:`close` waits for what is pending.

    Args:
        sink: writes the dataset files and the manifest.
        report: the run's report.
        stems: ``rel -> output stem`` for every scanned image.
        background: write on a background thread (default: in :meth:`record` itself).
        max_pending: batches that may wait for the writer before :meth:`record` blocks.
        refine: applied to each result before it is written; a ``ValueError`` it raises
            skips that image with the error's message as the reason.
        failure: how a failed image's reason begins (``"pipeline failed"``).

    Example:
        >>> recorder = ResultRecorder(sink, report, stems)  # doctest: +SKIP
        >>> recorder.record([entry], [perception])  # doctest: +SKIP
        >>> recorder.close()  # doctest: +SKIP
    """

    def __init__(self, sink: DatasetSink, report: Report, stems: Mapping[str, str], *,
                 background: bool = False, max_pending: int = 2,
                 refine: Callable[[Perception], Perception] | None = None,
                 failure: str = "pipeline failed") -> None:
        self.sink = sink
        self.report = report
        self.stems = stems
        self.refine = refine
        self.failure = failure
        self.max_pending = max(1, max_pending)
        self._writer = (ThreadPoolExecutor(1, thread_name_prefix="ovperc-writer")
                        if background else None)
        self._pending: deque[Future[None]] = deque()

    def skip(self, entry: ScanEntry, reason: str) -> None:
        """Report an image that could not be labelled."""
        self.report.skip(entry.rel, reason)

    def record(self, entries: Sequence[ScanEntry], results: Sequence[Perception | BaseException]) -> None:
        """Write a batch's results (exceptions are reported as skipped images), in order.

        Raises:
            OSError: an earlier batch could not be written (e.g. the disk is full).
        """
        items = []
        for entry, result in zip(entries, results):
            if not isinstance(result, BaseException) and self.refine is not None:
                try:
                    result = self.refine(result)
                except ValueError as error:
                    self.skip(entry, str(error))
                    continue
            if isinstance(result, ImageError):  # the image itself: its reason says it all
                self.skip(entry, result.reason)
                continue
            if isinstance(result, BaseException):
                # an error from another process carries its original type name
                name = getattr(result, "error_type", None) or type(result).__name__
                self.skip(entry, f"{self.failure} ({name}: {result})")
                continue
            for stage, seconds in result.timings.items():
                self.report.add_time(stage, seconds)
            items.append((entry, self.stems[entry.rel], result))
        if self._writer is None:
            self._write(items)
            return
        self._pending.append(self._writer.submit(self._write, items))
        while self._pending and (len(self._pending) > self.max_pending or self._pending[0].done()):
            self._pending.popleft().result()  # raises a write error here, in the caller

    def close(self) -> None:
        """Wait until every recorded batch is written (raises the first write error)."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)

    def _write(self, items: list[tuple[ScanEntry, str, Perception]]) -> None:
        t0 = time.perf_counter()
        records, skipped = self.sink.write_batch(items)
        for entry, reason in skipped:
            self.skip(entry, reason)
        self.report.add_time("write", time.perf_counter() - t0)
        self.report.done_this_run += len(records)


def _class_names(result: Perception) -> list[str]:
    det = result.detections
    if len(det) == 0:
        return []
    if "class_name" in det.data:
        return [" ".join(str(n).split()) for n in det.data["class_name"]]
    if result.ontology is not None and det.class_id is not None:
        return [result.ontology.classes[int(i)] for i in det.class_id]
    raise ValueError("detections carry neither class names nor an ontology to name them")
