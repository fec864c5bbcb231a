"""``label_folder``: label a folder of photos into a dataset, as a job of the engine.

It scans the folder, checks the settings and the layout of SOURCE and OUT, and runs the
chain over the images with :func:`~ovperc.labeling.engine.run_job` (decode prefetch,
batches, write-behind, resume, bad-file report; locally or on Ray). With ``write_behind``
(worth it when the models run on a GPU and the CPU is free) writing runs on one background
thread, in order, while the models work on the next batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ovperc.image import DEFAULT_MAX_PIXELS
from ovperc.labeling.engine import (  # noqa: F401  (engine names, also used from here)
    FATAL_ERRORS,
    Job,
    LabelEngine,
    is_fatal,
    load_models,
    plan_batches,
    preflight,
    run_job,
)
from ovperc.labeling.output import check_layout, hand_validation_set
from ovperc.labeling.scan import output_stems, scan_images
from ovperc.labeling.sink import DatasetSink, ResultRecorder, split_of  # noqa: F401
from ovperc.labeling.writers import ImageMode, make_writer
from ovperc.ontology import ClassesLike, Ontology

if TYPE_CHECKING:
    from ovperc.labeling.report import Report
    from ovperc.pipeline import Pipeline

logger = logging.getLogger(__name__)

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
    if masks and pipeline.segmenter is None and not getattr(pipeline.detector, "provides_masks", False):
        raise ValueError("masks=True needs a pipeline with a segmenter (e.g. preset 'detect+segment') "
                         "or a detector that segments (e.g. preset 'sam3')")
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
    pipeline.check(ontology)  # e.g. a class too long for the detector: refused before any image
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
    preflight(out, run_signature, pipeline, overwrite=overwrite, engine=engine, source=source)
    nested: list[Path] = []
    entries = scan_images(source, exclude=[out], datasets=nested)
    held_out = [] if hand is None else hand.members(entries)
    if held_out:
        entries = [e for e in entries if e.rel not in set(held_out)]
    if val_split > 0:
        entries = [replace(e, split=split_of(e.rel, val_split)) for e in entries]
    notes = [f"not scanned: {p} holds an ovperc dataset (its images are an earlier run's copies)"
             for p in nested]
    if held_out:
        notes.append(f"{len(held_out)} images of SOURCE are in the hand-labelled validation set and "
                     f"were not labelled: {', '.join(held_out[:5])}" + (" ..." if len(held_out) > 5 else ""))
    job = Job(pipeline, entries, output_stems([e.rel for e in entries]), writer, run_signature,
              [] if ontology is None else ontology.classes, source=str(source), format=format,
              ontology=ontology, tag_merge=tag_merge, notes=notes)
    return run_job(job, out, overwrite=overwrite, engine=engine, batch_size=batch_size,
                   decode_workers=decode_workers, max_pixels=max_pixels, progress=progress,
                   write_behind=write_behind, source=source)
