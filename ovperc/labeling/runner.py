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
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ovperc.hub import ModelNotAvailableError
from ovperc.image import DEFAULT_MAX_PIXELS, ImageError
from ovperc.labeling.lock import check_unlocked, dataset_lock
from ovperc.labeling.manifest import Manifest, check_empty, check_resumable
from ovperc.labeling.output import (
    check_layout,
    hand_validation_set,
    holds_only_source,
    prepare_output,
    revalidate,
)
from ovperc.labeling.report import Report
from ovperc.labeling.scan import ScanEntry, output_stems, scan_images
from ovperc.labeling.sink import DatasetSink, ResultRecorder
from ovperc.labeling.writers import DatasetWriter, ImageMode, make_writer
from ovperc.ontology import ClassesLike, Ontology
from ovperc.prefetch import decode_images

if TYPE_CHECKING:

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
        if not holds_only_source(Path(out), source):
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
