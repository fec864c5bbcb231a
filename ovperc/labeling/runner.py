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

import logging
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ovperc.hub import ModelNotAvailableError
from ovperc.image import DEFAULT_MAX_PIXELS, ImageError
from ovperc.labeling.manifest import Manifest
from ovperc.labeling.report import Report
from ovperc.labeling.scan import ScanEntry, output_stems, scan_images, sort_key
from ovperc.labeling.writers import STATE_DIR, DatasetWriter, ImageItem, ImageMode, make_writer
from ovperc.ontology import ClassesLike, Ontology
from ovperc.prefetch import decode_images

if TYPE_CHECKING:
    import supervision as sv

    from ovperc.pipeline import Pipeline
    from ovperc.result import Perception

logger = logging.getLogger(__name__)

#: errors that stop the run instead of skipping an image: the setup is wrong.
FATAL_ERRORS: tuple[type[BaseException], ...] = (ModelNotAvailableError, ImportError, MemoryError)
#: the pipeline failing on this many images before any success stops the run.
SETUP_FAILURES = 3


class DatasetSink:
    """Turns pipeline results into dataset files and manifest records.

    Args:
        writer: the format writer.
        manifest: the run's manifest (its class list is the dataset ontology).

    Example:
        >>> sink = DatasetSink(make_writer("yolo", out), manifest)  # doctest: +SKIP
        >>> sink.write_batch([(entry, stem, perception)])  # doctest: +SKIP
        >>> sink.finalize()  # doctest: +SKIP
    """

    def __init__(self, writer: DatasetWriter, manifest: Manifest) -> None:
        self.writer = writer
        self.manifest = manifest

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

    def write_batch(self, items: Sequence[tuple[ScanEntry, str, Perception]]) -> list[dict[str, Any]]:
        """Write every image of a batch, then record the batch in the manifest.

        Args:
            items: ``(scan entry, output stem, result)`` per image, in dataset order.

        Returns:
            The manifest records written.
        """
        records = []
        for entry, stem, result in items:
            names = _class_names(result)
            det = self.dataset_ids(result.detections, names)
            width, height = result.image_size
            item = ImageItem(entry.path, stem, entry.suffix, width, height)
            self.writer.write(item, det, self.manifest.classes)
            records.append({"rel": entry.rel, "stem": stem, "counts": dict(Counter(names))})
        self.manifest.record(records)
        return records

    def finalize(self) -> None:
        """Write the dataset-wide files for every finished image, in dataset order."""
        done = sorted(self.manifest.done.values(), key=lambda r: sort_key(str(r["rel"])))
        self.writer.finalize(self.manifest.classes, [str(r["stem"]) for r in done])

    def counts(self) -> dict[str, int]:
        """Boxes per class over the whole dataset, in class id order."""
        total: Counter[str] = Counter()
        for record in self.manifest.done.values():
            total.update(record.get("counts", {}))
        return {name: total[name] for name in self.manifest.classes if total[name]}


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
        self.sink.write_batch(items)
        self.report.add_time("write", time.perf_counter() - t0)
        self.report.done_this_run += len(items)


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
) -> Manifest:
    """Open or create the run's manifest; with ``overwrite``, first remove a previous run.

    Only ovperc's own outputs are removed (``images/``, ``labels/``, ``annotations/``,
    ``masks/``, ``data.yaml``, ``annotations.json``, ``labels.txt``, ``report.json``,
    ``.ovperc/``); other files in the folder are left alone.

    Raises:
        ManifestMismatchError: a run with another signature is there and not ``overwrite``.
    """
    out = Path(out)
    if overwrite and out.exists():
        for path in [*writer.managed(), *_all_managed(out), out / "report.json", out / STATE_DIR]:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    return Manifest.open(out, signature, classes=classes, require_empty=not overwrite)


def _all_managed(out: Path) -> list[Path]:
    from ovperc.labeling.writers import FORMATS

    return [p for f in FORMATS for p in make_writer(f, out).managed()]


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
    if ontology is None and pipeline.tagger is None:
        raise ValueError("no classes given and the pipeline has no tagger to find any; "
                         "pass classes or use a preset with a tagger")
    pipeline.check(ontology)  # e.g. a class too long for the detector: refused before any image
    writer = make_writer(format, out, masks=masks, mask_png=mask_png, images=images, durable=durable)
    run_signature = {
        "classes": None if ontology is None else ontology.to_dict(),
        "tag_merge": bool(tag_merge),
        "format": format,
        "masks": bool(masks),
        "mask_png": bool(mask_png),
        "images": images,
        **(dict(signature) if signature is not None else {"pipeline": repr(pipeline)}),
    }
    start = time.perf_counter()
    entries = scan_images(source, exclude=[out])
    manifest = prepare_output(out, writer, run_signature,
                              classes=[] if ontology is None else ontology.classes,
                              overwrite=overwrite)
    sink = DatasetSink(writer, manifest)
    report = Report(source=str(source), out=str(out), format=format, images_found=len(entries))
    stems = output_stems([e.rel for e in entries], reserved=manifest.stems())
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
        sink.finalize()
        report.add_time("write", time.perf_counter() - t0)
        report.images_done = len(manifest.done)
        report.detections_per_class = sink.counts()
        report.classes = list(manifest.classes)
        report.elapsed_s = time.perf_counter() - start
        report.save(Path(out) / "report.json")
    return report


class _Loop:
    """The local engine: decode ahead, batch, infer, hand results to the recorder."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.ontology: Ontology | None = None
        self.tag_merge = False
        self.succeeded = False
        self.failures_before_success = 0

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
        except FATAL_ERRORS:
            raise
        except Exception as error:
            if len(arrays) > 1:
                logger.warning("pipeline failed on a batch (%s); retrying its images one by one",
                               error)
                results = []
                for array, entry in zip(arrays, entries):
                    results.extend(self._infer([array], [entry]))
                return results
            self.failures_before_success += 0 if self.succeeded else 1
            if self.failures_before_success >= SETUP_FAILURES:
                # nothing has worked yet: a setup problem, not bad images
                raise
            logger.warning("pipeline failed on %s: %s", entries[0].rel, error)
            return [error]
        self.succeeded = True
        return results

    def _run(self, arrays: list[np.ndarray], entries: list[ScanEntry]) -> list[Perception]:
        return self.pipeline.run_batch(arrays, classes=self.ontology, tag_merge=self.tag_merge,
                                       sources=[str(e.path) for e in entries], errors="return")
