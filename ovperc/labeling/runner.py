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
from ovperc.labeling.output import check_layout, hand_validation_set, is_in_place
from ovperc.labeling.scan import mirrored_stems, output_stems, scan_images
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
    existing: str | None = None,
    merge_iou: float | None = None,
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
        existing: ``out`` holds labels ovperc did not write (a hand-labelled dataset in the
            format's layout) and this is what to do with an image that has them: ``keep``
            (not labelled; its labels stay and are part of the dataset), ``skip`` (not
            labelled, and no file ovperc did not write changes), ``merge`` (labelled; only
            the new boxes that overlap none of its boxes above ``merge_iou`` are added). See
            :mod:`ovperc.labeling.existing`. ``source`` may then be ``out/images`` (labelled
            where they are; no image is written). Output names mirror ``source``'s folders.
        merge_iou: with ``existing="merge"`` (default 0.5): the IoU with an existing box (of
            any class) above which a new box is not added.

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
    _check_existing(existing, merge_iou, val_split=val_split, masks=masks, mask_png=mask_png, format=format)
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
    in_place = existing is not None and is_in_place(source, out)
    writer = make_writer(format, out, masks=masks, mask_png=mask_png, images="none" if in_place else images,
                         durable=durable, val_from=None if hand is None else hand.images_dir)
    if not Path(source).exists():
        raise FileNotFoundError(f"image folder or file not found: {source}")
    check_layout(source, out, writer, in_place=in_place)
    own = None
    base_classes = [] if ontology is None else list(ontology.classes)
    if existing is not None:
        from ovperc.labeling.existing import DEFAULT_MERGE_IOU, open_existing

        own = open_existing(writer, existing, merge_iou=merge_iou or DEFAULT_MERGE_IOU,
                            classes=None if ontology is None else ontology.classes)
        base_classes = [*own.classes, *(c for c in base_classes if c not in own.classes)]
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
    if own is not None:
        run_signature["images"] = writer.images
        run_signature["existing"] = {"mode": own.mode, "classes": own.classes, "in_place": in_place,
                                     **({"merge_iou": own.merge_iou} if own.mode == "merge" else {})}
    preflight(out, run_signature, pipeline, overwrite=overwrite, engine=engine, source=source,
              existing=own is not None)
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
    if in_place and images != "none":
        notes.append("SOURCE is the dataset's own images folder: the images stay where they are "
                     f"(--images {images} does not apply)")
    stems = (mirrored_stems if own is not None else output_stems)([e.rel for e in entries])
    job = Job(pipeline, entries, stems, writer, run_signature, base_classes, source=str(source),
              format=format, ontology=ontology, tag_merge=tag_merge, notes=notes, existing=own)
    return run_job(job, out, overwrite=overwrite, engine=engine, batch_size=batch_size,
                   decode_workers=decode_workers, max_pixels=max_pixels, progress=progress,
                   write_behind=write_behind, source=source)


def _check_existing(existing: str | None, merge_iou: float | None, *, val_split: float, masks: bool,
                    mask_png: bool, format: str) -> None:
    """Refuse ``existing`` settings that cannot work, before anything is read.

    Raises:
        ValueError: what was given and what is accepted.
    """
    from ovperc.labeling.existing import EXISTING_MODES

    if existing is None:
        if merge_iou is not None:
            raise ValueError("--merge-iou only applies with --existing merge")
        return
    if existing not in EXISTING_MODES:
        raise ValueError(f"--existing must be one of {', '.join(EXISTING_MODES)}, got {existing!r}")
    if merge_iou is not None and existing != "merge":
        raise ValueError(f"--merge-iou only applies with --existing merge, not {existing}")
    if merge_iou is not None and not 0.0 < merge_iou <= 1.0:
        raise ValueError(f"--merge-iou must be above 0 and at most 1, got {merge_iou}")
    if val_split:
        raise ValueError("--existing and --val-split cannot be combined: the dataset's own images "
                         "already are where they are; split it with your own tools, or give "
                         "--val-from a hand-labelled validation set")
    if existing == "merge" and (mask_png or (masks and format == "voc")):
        raise ValueError("--existing merge adds boxes to an image's own labels, which have no "
                         "instance-mask PNG to add to: leave out --mask-png (and, for VOC, --masks)")
