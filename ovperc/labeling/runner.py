"""``label_folder``: scan, decode in the background, run the chain in batches, write.

The writing half (:class:`DatasetSink`, fed by :class:`ResultRecorder`) is separate from
the inference loop so any engine (this local loop, a Ray actor pool in
:mod:`ovperc.labeling.ray_engine`) writes the same bytes: it maps class names to the
dataset's stable ids in dataset order, writes each image's files atomically, and records
it in the manifest only once its files are in place. With ``write_behind`` (worth it when
the models run on a GPU and the CPU is free) writing runs on one background thread, in
order, while the models work on the next batch; every result computed is written before
the run ends, even on Ctrl+C.

Both engines batch the same way (:func:`plan_batches`): a batch is ``batch_size``
consecutive readable files of the scan; files that fail to decode drop out of their batch.
So a batch's images depend only on the folder, never on timing.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ovperc.hub import ModelNotAvailableError
from ovperc.image import DEFAULT_MAX_PIXELS, ImageError
from ovperc.labeling.lock import check_unlocked, dataset_lock
from ovperc.labeling.manifest import STATE_DIR, Manifest, check_empty, check_resumable, discard, read_stored
from ovperc.labeling.report import Report
from ovperc.labeling.scan import ScanEntry, is_image_name, output_stems, scan_images, sort_key
from ovperc.labeling.writers import DatasetWriter, ImageItem, ImageMode, make_writer
from ovperc.ontology import ClassesLike, Ontology
from ovperc.prefetch import decode_images

if TYPE_CHECKING:
    import supervision as sv

    from ovperc.pipeline import Pipeline
    from ovperc.result import Perception

logger = logging.getLogger(__name__)

#: errors that stop the run instead of skipping an image: the setup is wrong (running out of
#: memory too, but only on a single image: see :func:`is_fatal`).
FATAL_ERRORS: tuple[type[BaseException], ...] = (ModelNotAvailableError, ImportError, MemoryError)


class DatasetSink:
    """Turns pipeline results into dataset files and manifest records.

    Before an image's files are written they are recorded as *begun* in the manifest, so a
    run killed half-way leaves nothing the next run cannot remove; a file that is already
    there and that no ovperc run recorded is never overwritten (that image is skipped).

    Args:
        writer: the format writer.
        manifest: the run's manifest (its class list is the dataset ontology).

    Example:
        >>> sink = DatasetSink(make_writer("yolo", out), manifest)  # doctest: +SKIP
        >>> records, skipped = sink.write_batch([(entry, stem, perception)])  # doctest: +SKIP
        >>> sink.finalize()  # doctest: +SKIP
    """

    def __init__(self, writer: DatasetWriter, manifest: Manifest, val_split: float = 0.0) -> None:
        self.writer = writer
        self.manifest = manifest
        self.val_split = val_split

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
            split = split_of(entry.rel, self.val_split) if self.val_split > 0 else ""
            item = ImageItem(entry.path, stem, entry.suffix, width, height, split)
            paths = self.writer.paths(item)
            foreign = next((p for p in paths if p.exists() or p.is_symlink()), None)
            if foreign is not None:
                skipped.append((entry, f"not written: {foreign} is in the way and ovperc did not "
                                       "write it (move it, or choose another --out)"))
                continue
            files = [p.relative_to(self.writer.out).as_posix() for p in paths]
            planned.append((entry, item, result, files))
        self.manifest.begin([{"rel": e.rel, "files": files} for e, _, _, files in planned])
        records = []
        for entry, item, result, files in planned:
            names = _class_names(result)
            try:
                fingerprint = _fingerprint(entry.path)
                det = self.dataset_ids(result.detections, names)
                self.writer.write(item, det, self.manifest.classes)
            except OSError as error:
                if not _image_error(error, entry.path):
                    raise
                _remove_written(self.writer.out, files)
                skipped.append((entry, f"not written ({describe_os_error(error)})"))
                continue
            records.append({"rel": entry.rel, "stem": item.stem, "counts": dict(Counter(names)),
                            "classes": list(dict.fromkeys(names)), "files": files,
                            "source": fingerprint, **({"split": item.split} if item.split else {})})
        self.manifest.record(records)
        return records, skipped

    def finalize(self) -> str | None:
        """Write the dataset-wide files for every finished image, in dataset order.

        Returns:
            Why they were not written (a file ovperc did not write is in the way), or ``None``.
        """
        done = sorted(self.manifest.done.values(), key=lambda r: sort_key(str(r["rel"])))
        splits = [str(r.get("split", "")) for r in done]
        blocked = [p for p in self.writer.dataset_files(splits) if not self.manifest.claim(p)]
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


def _fingerprint(path: Path) -> list[int]:
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


def _remove_written(out: Path, files: Sequence[str]) -> None:
    for rel in files:
        (out / rel).unlink(missing_ok=True)


def plan_batches(todo: Sequence[ScanEntry], batch_size: int) -> list[list[ScanEntry]]:
    """The readable entries of ``todo`` (no scan ``problem``), ``batch_size`` at a time, in order.

    Example:
        >>> [[e.rel for e in b] for b in plan_batches([ScanEntry(Path(r), r) for r in "abc"], 2)]
        [['a', 'b'], ['c']]
    """
    readable = [e for e in todo if e.problem is None]
    return [readable[i : i + batch_size] for i in range(0, len(readable), batch_size)]


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

    Example:
        >>> recorder = ResultRecorder(sink, report, stems)  # doctest: +SKIP
        >>> recorder.record([entry], [perception])  # doctest: +SKIP
        >>> recorder.close()  # doctest: +SKIP
    """

    def __init__(self, sink: DatasetSink, report: Report, stems: Mapping[str, str], *,
                 background: bool = False, max_pending: int = 2) -> None:
        self.sink = sink
        self.report = report
        self.stems = stems
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
            if isinstance(result, BaseException):
                # an error from another process carries its original type name
                name = getattr(result, "error_type", None) or type(result).__name__
                self.skip(entry, f"pipeline failed ({name}: {result})")
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


class LabelEngine(Protocol):
    """Runs the chain over the images still to do and hands results to a recorder in order.

    ``run`` must call ``recorder.skip`` / ``recorder.record`` in dataset order, batching as
    :func:`plan_batches` does, so every engine writes the same dataset.
    """

    def run(self, todo: list[ScanEntry], recorder: ResultRecorder, *, ontology: Ontology | None,
            tag_merge: bool, batch_size: int, decode_workers: int, max_pixels: int,
            progress: bool) -> None:
        """Label ``todo`` (scan order, finished images already left out)."""


def _class_names(result: Perception) -> list[str]:
    det = result.detections
    if len(det) == 0:
        return []
    if "class_name" in det.data:
        return [" ".join(str(n).split()) for n in det.data["class_name"]]
    if result.ontology is not None and det.class_id is not None:
        return [result.ontology.classes[int(i)] for i in det.class_id]
    raise ValueError("detections carry neither class names nor an ontology to name them")


def prepare_output(
    out: str | os.PathLike,
    writer: DatasetWriter,
    signature: Mapping[str, Any],
    *,
    classes: Sequence[str],
    overwrite: bool,
    source: str | os.PathLike | None = None,
) -> Manifest:
    """Open or create the run's manifest; with ``overwrite``, first remove a previous run.

    ``overwrite`` removes exactly the files the previous run's manifest recorded, and
    nothing else: not the source images, not files another tool or a person put there. A
    ``source`` inside ``out`` is left alone and does not make ``out`` count as not empty.
    The caller holds :func:`~ovperc.labeling.lock.dataset_lock` on ``out``.

    Raises:
        ManifestMismatchError: a run with another signature is there and not ``overwrite``,
            or ``out`` holds files ovperc did not write and not ``overwrite``.
    """
    out = Path(out)
    if overwrite and out.exists():
        stored = read_stored(out)
        if stored is not None and stored.get("signature") != json.loads(json.dumps(dict(signature))):
            discard(out, files_of=_legacy_files)
    require_empty = not overwrite and not _only_source_inside(out, source)
    return Manifest.open(out, signature, classes=classes, require_empty=require_empty)


def check_layout(source: str | os.PathLike, out: str | os.PathLike, writer: DatasetWriter) -> None:
    """Refuse a SOURCE and OUT that overlap in a way that could touch the user's images.

    ``out`` may lie inside ``source`` (the scan leaves it out), and ``source`` inside ``out``
    (it is never written to), but not ``source`` equal to ``out`` nor inside a folder ovperc
    writes (``images/``, ``labels/``, ``.ovperc/``, ...).

    Raises:
        ValueError: the layout is refused; the message says why and what to do.

    Example:
        >>> check_layout("data/images", "data", make_writer("yolo", "data"))  # doctest: +SKIP
        Traceback (most recent call last):
        ValueError: SOURCE data/images is inside data/images, ...
    """
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; choose a folder for the dataset")
    src, dst = Path(os.path.abspath(source)), Path(os.path.abspath(out))
    real_src, real_dst = Path(os.path.realpath(source)), Path(os.path.realpath(out))
    if src == dst or real_src == real_dst:
        raise ValueError(f"--out {out} is SOURCE itself; write the dataset to another folder "
                         "(it may lie inside SOURCE)")
    written = [*_all_managed(dst), dst / STATE_DIR]
    for src_path, dst_path in ((src, dst), (real_src, real_dst)):
        for folder in written:
            inside = folder.relative_to(dst)
            target = dst_path / inside
            if src_path == target or target in src_path.parents:
                raise ValueError(
                    f"SOURCE {source} is inside {out}/{inside.as_posix()}, where ovperc writes "
                    "the dataset; move the images elsewhere or choose another --out"
                )


def _only_source_inside(out: Path, source: str | os.PathLike | None) -> bool:
    """Whether ``out`` holds nothing but ``source`` (and ovperc's state folder)."""
    if source is None or not out.is_dir():
        return False
    src = Path(os.path.abspath(source))
    dst = Path(os.path.abspath(out))
    if dst not in src.parents:
        return False
    top = dst / src.relative_to(dst).parts[0]
    return all(p.name == STATE_DIR or Path(os.path.abspath(p)) == top for p in out.iterdir())


def _legacy_files(signature: Mapping[str, Any], record: Mapping[str, Any]) -> list[str]:
    """The files a version-1 manifest's record stands for (those did not list them)."""
    writer = make_writer(str(signature.get("format", "yolo")), ".", masks=bool(signature.get("masks")),
                         mask_png=bool(signature.get("mask_png")),
                         images=signature.get("images", "copy"))
    item = ImageItem(Path(str(record["rel"])), str(record["stem"]), Path(str(record["rel"])).suffix, 1, 1)
    return [p.as_posix() for p in writer.paths(item)]


def _all_managed(out: Path) -> list[Path]:
    from ovperc.labeling.writers import FORMATS

    return [p for f in FORMATS for p in make_writer(f, out).managed()]


def revalidate(manifest: Manifest, entries: Sequence[ScanEntry], stems: Mapping[str, str],
               base_classes: Sequence[str]) -> list[str]:
    """Forget finished images that a fresh run over the current source would write otherwise.

    An image is redone when its source is gone, unreadable or changed (size, modification
    time), when its output name changed (files were added or removed beside it), or when its
    class ids would differ because an image that introduced a class is gone.

    Returns:
        The relative paths forgotten (their files are removed; they are labelled again).
    """
    current = {e.rel: e for e in entries if e.problem is None}
    stale = []
    for rel, record in manifest.done.items():
        entry = current.get(rel)
        if entry is None or stems.get(rel) != record.get("stem"):
            stale.append(rel)
            continue
        stored = record.get("source")
        try:
            if stored is not None and _fingerprint(entry.path) != list(stored):
                stale.append(rel)
        except OSError:
            stale.append(rel)
    forgotten = manifest.forget(stale)
    while True:  # class ids as a fresh run would give them: first use, in dataset order
        order = sorted(manifest.done.values(), key=lambda r: sort_key(str(r["rel"])))
        classes = list(base_classes)
        for record in order:
            names = record.get("classes", list(record.get("counts", {})))
            classes.extend(n for n in names if n not in classes)
        if classes == manifest.classes:
            return forgotten
        moved = [str(r["rel"]) for r in order
                 if any(n not in manifest.classes or classes.index(n) != manifest.classes.index(n)
                        for n in r.get("classes", list(r.get("counts", {}))))]
        forgotten += manifest.forget(moved)
        if not moved:
            manifest.reset_classes(classes)


def label_folder(
    pipeline: Pipeline,
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    classes: ClassesLike | None = None,
    format: str = "yolo",
    masks: bool = False,
    mask_png: bool = False,
    images: ImageMode = "copy",
    batch_size: int = 4,
    tag_merge: bool = False,
    overwrite: bool = False,
    signature: Mapping[str, Any] | None = None,
    decode_workers: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    durable: bool = True,
    engine: LabelEngine | None = None,
    write_behind: bool = False,
    val_split: float = 0.0,
    val_from: str | os.PathLike | None = None,
) -> Report:
    """Label every image under ``source`` into a dataset in ``out``; resumable.

    Images are decoded in background threads and run through ``pipeline`` in batches; each
    image's files are written atomically as soon as its batch is done, then recorded in the
    manifest. Rerunning after an interruption skips the finished images and ends with the
    same dataset an uninterrupted run writes. Bad files are skipped with a reason.

    Args:
        pipeline: the chain to run (its models load on first use).
        source: a folder (scanned recursively) or one image file.
        out: the dataset folder.
        classes: what to detect (list, ``"a, b"``, prompt -> class mapping or
            :class:`Ontology`); ``None`` lets the pipeline's tagger decide per image, and the
            dataset's classes grow as new ones are found (ids never move).
        format: ``yolo``, ``coco`` or ``voc``.
        masks: write masks (YOLO polygons, COCO RLE, VOC mask PNGs); needs a segmenter.
        mask_png: also write an instance-mask PNG per image.
        images: put images in the dataset by ``copy``, ``hardlink``, ``symlink`` or ``none``.
        batch_size: images per pipeline call.
        tag_merge: with ``classes``, also detect what the tagger names.
        overwrite: discard a previous run in ``out`` whose settings differ.
        signature: extra settings that define the run (models, thresholds); a resumed run
            must match them. Defaults to the pipeline's description.
        decode_workers: background decoding threads.
        max_pixels: refuse images declaring more pixels than this.
        progress: show a progress bar (images/s, ETA) on stderr.
        durable: ``fsync`` files before renaming them into place.
        engine: where the chain runs; ``None`` runs ``pipeline`` in this process. A
            :class:`~ovperc.labeling.ray_engine.RayEngine` runs it on a Ray cluster; the
            dataset written is the same.
        write_behind: write each batch on a background thread while the models run the
            next one. Worth it when they run on a GPU; on a CPU the writer takes cores from
            the models (measured slower on 2 cores), so the default is off.
        val_split: hold out about this fraction of the images as a validation split
            (``train``/``val``, decided by a hash of each image's relative path, so the same
            on every run).
        val_from: a hand-labelled dataset (any format ovperc reads) that is the validation
            set: YOLO's ``data.yaml`` points ``val`` at it, its classes become the run's
            (or must equal the given ones), and SOURCE images identical to one of its images
            are left out, so no auto-labelled image is ever validated on.

    Returns:
        The :class:`Report`, also saved as ``out/report.json``.

    Raises:
        ManifestMismatchError: ``out`` holds a run with other settings (see ``overwrite``).
        ValueError: bad arguments (unknown format, masks without a segmenter, ...).

    Example:
        >>> pipe = Pipeline.from_preset("detect+segment")  # doctest: +SKIP
        >>> report = label_folder(pipe, "photos/", "dataset/", classes="person, car",
        ...                       format="coco", masks=True)  # doctest: +SKIP
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if masks and pipeline.segmenter is None:
        raise ValueError("masks=True needs a pipeline with a segmenter (e.g. preset 'detect+segment')")
    ontology = None if classes is None else Ontology.from_any(classes)
    if not 0.0 <= val_split < 1.0:
        raise ValueError(f"val_split must be in [0, 1), got {val_split}")
    hand = None
    if val_from is not None:
        if val_split > 0:
            raise ValueError("give either val_split (hold out auto-labelled images) or val_from "
                             "(validate on hand labels), not both")
        hand = hand_validation_set(val_from, format)
        if ontology is None:
            ontology = Ontology(hand.classes)
            logger.info("classes from the hand-labelled validation set: %s", ", ".join(hand.classes))
        elif ontology.classes != hand.classes:
            raise ValueError(f"the classes {ontology.classes} differ from the hand-labelled validation "
                             f"set's {hand.classes} (in {val_from}); give them in that order, or "
                             "leave out --classes to use them")
    if ontology is None and pipeline.tagger is None:
        raise ValueError("no classes given and the pipeline has no tagger to find any; "
                         "pass classes or use a preset with a tagger")
    writer = make_writer(format, out, masks=masks, mask_png=mask_png, images=images, durable=durable,
                         val_from=None if hand is None else hand.images_dir)
    run_signature = {
        "classes": None if ontology is None else ontology.to_dict(),
        "tag_merge": bool(tag_merge),
        "format": format,
        "masks": bool(masks),
        "mask_png": bool(mask_png),
        "images": images,
        **({"val_split": val_split} if val_split else {}),
        **({"val_from": str(hand.images_dir)} if hand is not None else {}),
        **(dict(signature) if signature is not None else {"pipeline": repr(pipeline)}),
    }
    if not Path(source).exists():
        raise FileNotFoundError(f"image folder or file not found: {source}")
    check_layout(source, out, writer)
    if not overwrite:  # settings first: nothing is created and no model loads before these pass
        check_resumable(Path(out), run_signature)
        if not _only_source_inside(Path(out), source):
            check_empty(Path(out))
    check_unlocked(out)
    if engine is None:
        load_models(pipeline)  # a model that cannot load stops the run before image one
    start = time.perf_counter()
    nested: list[Path] = []
    entries = scan_images(source, exclude=[out], datasets=nested)
    held_out = [] if hand is None else hand.members(entries)
    entries = [e for e in entries if e.rel not in set(held_out)]
    base_classes = [] if ontology is None else ontology.classes
    with dataset_lock(out):
        manifest = prepare_output(out, writer, run_signature, classes=base_classes,
                                  overwrite=overwrite, source=source)
        return _label(manifest, writer, entries, nested, base_classes, pipeline, engine,
                      source=source, out=Path(out), format=format, ontology=ontology,
                      tag_merge=tag_merge, batch_size=batch_size, decode_workers=decode_workers,
                      max_pixels=max_pixels, progress=progress, write_behind=write_behind,
                      start=start, val_split=val_split, held_out=held_out)


def _label(manifest: Manifest, writer: DatasetWriter, entries: list[ScanEntry], nested: list[Path],
           base_classes: list[str], pipeline: Pipeline, engine: LabelEngine | None, *,
           source: str | os.PathLike, out: Path, format: str, ontology: Ontology | None,
           tag_merge: bool, batch_size: int, decode_workers: int, max_pixels: int, progress: bool,
           write_behind: bool, start: float, val_split: float, held_out: list[str]) -> Report:
    sink = DatasetSink(writer, manifest, val_split)
    report = Report(source=str(source), out=str(out), format=format, images_found=len(entries))
    report.notes.extend(f"not scanned: {p} holds an ovperc dataset (its images are an earlier "
                        "run's copies)" for p in nested)
    if held_out:
        report.notes.append(f"{len(held_out)} images of SOURCE are in the hand-labelled validation "
                            f"set and were not labelled: {', '.join(held_out[:5])}"
                            + (" ..." if len(held_out) > 5 else ""))
    stems = output_stems([e.rel for e in entries])
    redone = revalidate(manifest, entries, stems, base_classes)
    if redone:
        report.notes.append(f"{len(redone)} images labelled by an earlier run were removed or "
                            "changed since; their files were removed and they are done again")
    todo = [e for e in entries if e.rel not in manifest.done]
    report.already_done = len(entries) - len(todo)
    recorder = ResultRecorder(sink, report, stems, background=write_behind)
    runner: LabelEngine = engine if engine is not None else _Loop(pipeline)
    try:
        try:
            runner.run(todo, recorder, ontology=ontology, tag_merge=tag_merge,
                       batch_size=batch_size, decode_workers=decode_workers,
                       max_pixels=max_pixels, progress=progress)
        finally:
            recorder.close()  # every result computed is written, whatever stopped the run
    except KeyboardInterrupt:
        report.interrupted = True
        logger.warning("interrupted; rerun the same command to resume")
    except Exception as error:
        report.error = f"{type(error).__name__}: {error}"
        raise
    finally:
        t0 = time.perf_counter()
        problem = sink.finalize()
        if problem is not None:
            report.notes.append(problem)
        report.add_time("write", time.perf_counter() - t0)
        report.images_done = len(manifest.done)
        report.detections_per_class = sink.counts()
        report.classes = list(manifest.classes)
        report.elapsed_s = time.perf_counter() - start
        if manifest.claim(out / "report.json"):
            report.save(out / "report.json")
        else:
            logger.warning("report.json not written: %s holds one that ovperc did not write", out)
    return report


@dataclass(frozen=True)
class HandValidationSet:
    """A hand-labelled dataset used as the validation set of an auto-labelled one.

    Attributes:
        root: the dataset folder.
        classes: its class names, by id.
        images_dir: the folder of its (validation) images.
        images: every image file in it.
    """

    root: Path
    classes: list[str]
    images_dir: Path
    images: list[Path]

    def members(self, entries: Sequence[ScanEntry]) -> list[str]:
        """The relative paths of ``entries`` whose bytes equal one of this set's images.

        Only files of a size some validation image has are read and hashed.
        """
        by_size: dict[int, set[str]] = {}
        for path in self.images:
            by_size.setdefault(path.stat().st_size, set()).add(_sha1(path))
        found = []
        for entry in entries:
            try:
                hashes = by_size.get(entry.path.stat().st_size)
                if hashes and _sha1(entry.path) in hashes:
                    found.append(entry.rel)
            except OSError:
                continue
        return found


def hand_validation_set(root: str | os.PathLike, format: str) -> HandValidationSet:
    """Open a hand-labelled dataset as a validation set (its ``val``/``valid`` split when it
    has several).

    Raises:
        ValueError: ``root`` is not a readable dataset.

    Example:
        >>> hand_validation_set("hand-labelled/", "yolo").classes  # doctest: +SKIP
        ['cat', 'dog']
    """
    from ovperc.datasets.io import DatasetError, load_dataset

    try:
        dataset = load_dataset(root)
    except DatasetError as error:
        raise ValueError(f"--val-from: {error}") from error
    splits = {split.name: split for split in dataset.splits}
    split = next((splits[n] for n in ("val", "valid", "validation") if n in splits), dataset.splits[0])
    images = [p for p in sorted(split.images_dir.rglob("*")) if p.is_file() and is_image_name(p.name)]
    return HandValidationSet(Path(root), list(dataset.classes), Path(os.path.abspath(split.images_dir)),
                             images)


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_models(pipeline: Pipeline) -> None:
    """Load every stage's model now (stages load lazily otherwise), so that a model that
    cannot load stops a run before its first image rather than failing on each image.

    Example:
        >>> load_models(Pipeline.from_preset("detect"))  # doctest: +SKIP
    """
    for stage in (pipeline.tagger, pipeline.detector, pipeline.segmenter, pipeline.classifier):
        load = getattr(stage, "load", None)
        if callable(load):
            load()


def is_fatal(error: BaseException, batch: int = 1) -> bool:
    """Whether an error in the chain must stop the run rather than skip the image(s).

    Setup errors (a model that is not available, a missing package) always stop it; running
    out of memory stops it only on a batch of one image (a bigger batch is retried image
    by image first).

    Example:
        >>> is_fatal(ValueError("bad image")), is_fatal(MemoryError(), batch=4)
        (False, False)
    """
    out_of_memory = isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
    if out_of_memory:
        return batch <= 1
    return isinstance(error, FATAL_ERRORS)


class _Loop:
    """The local engine: decode ahead, batch, infer, hand results to the recorder."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.ontology: Ontology | None = None
        self.tag_merge = False

    def run(self, todo: list[ScanEntry], recorder: ResultRecorder, *, ontology: Ontology | None,
            tag_merge: bool, batch_size: int, decode_workers: int, max_pixels: int,
            progress: bool) -> None:
        from tqdm.auto import tqdm

        self.ontology, self.tag_merge = ontology, tag_merge
        report = recorder.report
        bar = tqdm(total=len(todo), unit="img", desc="labelling", disable=not progress,
                   dynamic_ncols=True, smoothing=0.1)
        try:
            batch: list[tuple[ScanEntry, np.ndarray]] = []
            planned = 0  # readable files taken into the current batch (see plan_batches)
            for entry, decoded in self._decoded(todo, decode_workers, max_pixels, batch_size, report):
                planned += entry.problem is None
                if isinstance(decoded, ImageError):
                    recorder.skip(entry, decoded.reason)
                    bar.update(1)
                    bar.set_postfix(skipped=len(report.skipped), refresh=False)
                else:
                    batch.append((entry, decoded))
                if planned == batch_size:
                    self._process(batch, recorder)
                    bar.update(len(batch))
                    batch, planned = [], 0
            if batch:
                self._process(batch, recorder)
                bar.update(len(batch))
        finally:
            bar.close()

    def _decoded(self, todo: list[ScanEntry], workers: int, max_pixels: int, batch_size: int,
                 report: Report) -> Iterator[tuple[ScanEntry, np.ndarray | ImageError]]:
        readable = []
        for entry in todo:
            if entry.problem is not None:
                yield entry, ImageError(entry.path, entry.problem)
            else:
                readable.append(entry)
        wait = time.perf_counter()
        stream = decode_images((e.path for e in readable), workers=workers,
                               lookahead=max(2 * batch_size, 4), max_pixels=max_pixels)
        for entry, (_, decoded) in zip(readable, stream):
            report.add_time("decode", time.perf_counter() - wait)
            yield entry, decoded
            wait = time.perf_counter()

    def _process(self, batch: list[tuple[ScanEntry, np.ndarray]], recorder: ResultRecorder) -> None:
        if not batch:
            return
        entries = [e for e, _ in batch]
        recorder.record(entries, self._infer([array for _, array in batch], entries))

    def _infer(self, arrays: list[np.ndarray], entries: list[ScanEntry]) -> list[Any]:
        try:
            results: list[Any] = self._run(arrays, entries)
        except Exception as error:
            if is_fatal(error, len(arrays)):
                raise
            if len(arrays) > 1:
                logger.warning("pipeline failed on a batch (%s); retrying its images one by one",
                               error)
                results = []
                for array, entry in zip(arrays, entries):
                    results.extend(self._infer([array], [entry]))
                return results
            logger.warning("pipeline failed on %s: %s", entries[0].rel, error)
            return [error]
        return results

    def _run(self, arrays: list[np.ndarray], entries: list[ScanEntry]) -> list[Perception]:
        return self.pipeline.run_batch(arrays, classes=self.ontology, tag_merge=self.tag_merge,
                                       sources=[str(e.path) for e in entries])
