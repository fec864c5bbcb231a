"""The job engine: one loop for every job that reads images, runs a chain and writes a dataset.

``ovperc label`` (a folder of photos, the detector finds boxes) and ``ovperc segment`` (an
existing dataset, its boxes get masks) are the same :class:`Job`: entries to read, a chain to
run, a writer. :func:`run_job` runs one with the same decode prefetch, batching, write-behind,
resume manifest, bad-file report and Ctrl-C handling, locally or on Ray
(:class:`~ovperc.labeling.ray_engine.RayEngine`).

The writing half (:class:`~ovperc.labeling.sink.DatasetSink`, fed by
:class:`~ovperc.labeling.sink.ResultRecorder`) is separate from the inference loop so every
engine writes the same bytes. Engines batch the same way (:func:`plan_batches`): a batch is
``batch_size`` consecutive readable entries; entries that fail to decode drop out of their
batch, so a batch's images depend only on the input, never on timing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ovperc.hub import ModelNotAvailableError
from ovperc.image import ImageError
from ovperc.labeling.lock import check_unlocked, dataset_lock
from ovperc.labeling.manifest import check_empty, check_resumable
from ovperc.labeling.output import fill_legacy_files, holds_only_source, prepare_output, revalidate
from ovperc.labeling.report import Report
from ovperc.labeling.scan import ScanEntry
from ovperc.labeling.sink import DatasetSink, ResultRecorder
from ovperc.labeling.writers import DatasetWriter
from ovperc.prefetch import decode_images

if TYPE_CHECKING:
    from ovperc.labeling.existing import ExistingLabels
    from ovperc.ontology import Ontology
    from ovperc.pipeline import Pipeline
    from ovperc.result import Perception

logger = logging.getLogger(__name__)

#: errors that stop the run instead of skipping an image: the setup is wrong (running out of
#: memory too, but only on a single image: see :func:`is_fatal`).
FATAL_ERRORS: tuple[type[BaseException], ...] = (ModelNotAvailableError, ImportError, MemoryError)


def plan_batches(todo: Sequence[ScanEntry], batch_size: int) -> list[list[ScanEntry]]:
    """The readable entries of ``todo`` (no scan ``problem``), ``batch_size`` at a time, in order.

    Example:
        >>> [[e.rel for e in b] for b in plan_batches([ScanEntry(Path(r), r) for r in "abc"], 2)]
        [['a', 'b'], ['c']]
    """
    readable = [e for e in todo if e.problem is None]
    return [readable[i : i + batch_size] for i in range(0, len(readable), batch_size)]


class LabelEngine(Protocol):
    """Runs the chain over the images still to do and hands results to a recorder in order.

    ``run`` must call ``recorder.skip`` / ``recorder.record`` in dataset order, batching as
    :func:`plan_batches` does, so every engine writes the same dataset.
    """

    def run(self, todo: list[ScanEntry], recorder: ResultRecorder, *, ontology: Ontology | None,
            tag_merge: bool, batch_size: int, decode_workers: int, max_pixels: int,
            progress: bool) -> None:
        """Label ``todo`` (scan order, finished images already left out)."""


@dataclass
class Job:
    """What one run reads, runs and writes.

    Attributes:
        pipeline: the chain (its models load once, before the first image).
        entries: what to read, in dataset order (a :class:`ScanEntry` may carry ``given``
            boxes and a ``split``).
        stems: ``rel -> output name`` for every entry.
        writer: the dataset format writer.
        signature: everything that changes the output; a resumed run must match it.
        base_classes: the dataset's first classes, in id order.
        source: what was read (for the report).
        format: the dataset format (for the report).
        ontology: the classes to detect (``None``: the tagger decides).
        tag_merge: also detect what the tagger names.
        refine: applied to each result before it is written (see ``ResultRecorder``).
        failure: how a failed image's reason begins in the report.
        notes: what the report should also say.
        existing: labels the dataset already holds that ovperc did not write, and what to do
            with them (``ovperc label --existing``); ``None``: ``out`` is ovperc's alone.

    Example:
        >>> job = Job(pipe, entries, stems, writer, {"format": "yolo"}, ["dog"])  # doctest: +SKIP
        >>> report = run_job(job, "dataset/")  # doctest: +SKIP
    """

    pipeline: Pipeline
    entries: list[ScanEntry]
    stems: Mapping[str, str]
    writer: DatasetWriter
    signature: dict[str, Any]
    base_classes: list[str]
    source: str = ""
    format: str = ""
    ontology: Ontology | None = None
    tag_merge: bool = False
    refine: Callable[[Perception], Perception] | None = None
    failure: str = "pipeline failed"
    notes: list[str] = field(default_factory=list)
    existing: ExistingLabels | None = None


def preflight(out: str | os.PathLike, signature: Mapping[str, Any], pipeline: Pipeline, *,
              overwrite: bool, engine: Any = None, source: str | os.PathLike | None = None,
              existing: bool = False) -> None:
    """Everything checked before a run reads its first image: the run in ``out`` (same
    settings, or none and an empty folder, or with ``existing`` a dataset of other labels),
    its lock, and every model (loaded now).

    Nothing is created, and no model loads, before the cheap checks pass.

    Raises:
        ManifestMismatchError: ``out`` holds another run or foreign files (not ``overwrite``),
            or another run holds it.
    """
    if not overwrite:
        check_resumable(Path(out), signature)
        if not existing and not holds_only_source(Path(out), source):
            check_empty(Path(out))
    check_unlocked(out)
    if engine is None:
        load_models(pipeline)  # a model that cannot load stops the run before image one


def run_job(job: Job, out: str | os.PathLike, *, overwrite: bool = False, engine: LabelEngine | None = None,
            batch_size: int = 4, decode_workers: int = 2, max_pixels: int = 0, progress: bool = True,
            write_behind: bool = False, source: str | os.PathLike | None = None) -> Report:
    """Run a job into the dataset folder ``out`` (call :func:`preflight` first); resumable.

    Returns:
        The report, also saved as ``out/report.json``.
    """
    out = Path(out)
    start = time.perf_counter()
    with dataset_lock(out):
        manifest = prepare_output(out, job.writer, job.signature, classes=job.base_classes,
                                  overwrite=overwrite, source=source, existing=job.existing is not None)
        sink = DatasetSink(job.writer, manifest, job.existing)
        report = Report(source=job.source, out=str(out), format=job.format, images_found=len(job.entries))
        report.notes.extend(job.notes)
        fill_legacy_files(manifest, job.writer)
        entries = job.entries
        if job.existing is not None:
            job.existing.bind(manifest)
            entries, held = job.existing.partition(entries, job.stems)
        redone = revalidate(manifest, entries, job.stems, job.base_classes)
        if redone:
            report.notes.append(f"{len(redone)} images done by an earlier run were removed or "
                                "changed since; their files were removed and they are done again")
        todo = [e for e in entries if e.rel not in manifest.done]
        report.already_done = len(entries) - len(todo)
        runner: LabelEngine = engine if engine is not None else _Loop(job.pipeline)

        def run(entries: list[ScanEntry]) -> None:
            recorder = ResultRecorder(sink, report, job.stems, background=write_behind,
                                      refine=job.refine, failure=job.failure)
            try:
                runner.run(entries, recorder, ontology=job.ontology, tag_merge=job.tag_merge,
                           batch_size=batch_size, decode_workers=decode_workers,
                           max_pixels=max_pixels, progress=progress)
            finally:
                recorder.close()  # every result computed is written, whatever stopped the run

        try:
            run(todo)
            for _ in range(3):
                # when tags decide the classes and a resumed run found new images before finished
                # ones, ids follow first use in dataset order only after those are done again
                moved = set(revalidate(manifest, entries, job.stems, job.base_classes))
                if not moved:
                    break
                report.notes.append(f"{len(moved)} images labelled again so that class ids follow "
                                    "first use in dataset order, as in an uninterrupted run")
                run([e for e in entries if e.rel in moved])
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
            if job.existing is not None:
                report.notes.extend(job.existing.notes(held))
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
                                       sources=[str(e.path) for e in entries],
                                       detections=given_boxes(entries), errors="return")


def given_boxes(entries: Sequence[ScanEntry]) -> list[Any] | None:
    """The boxes the entries carry (``None`` when none does: the detector finds them).

    Example:
        >>> given_boxes([ScanEntry(Path("a.jpg"), "a.jpg")]) is None
        True
    """
    if all(e.given is None for e in entries):
        return None
    import supervision as sv

    return [e.given if e.given is not None else sv.Detections.empty() for e in entries]
