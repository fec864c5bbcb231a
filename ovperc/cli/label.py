"""``ovperc label``: label a folder of images into a training dataset (resumable)."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ovperc.cli.options import (
    add_class_options,
    add_model_options,
    add_threshold_options,
    build_pipeline,
    choose_preset,
    describe_error,
    iou_value,
    non_negative_float,
    ontology_from_args,
    positive_int,
    run_resumable,
    run_signature,
)
from ovperc.image import DEFAULT_MAX_PIXELS

ENGINES = ("local", "ray")

EPILOG = """\
examples:
  ovperc label photos/ --out dataset/ --classes "person, car, dog" --format yolo --masks
  ovperc label photos/ --out dataset/ --ontology ontology.yaml --format coco
  ovperc label photos/ --out dataset/            # no classes: tags decide
  ovperc label /shared/photos --out /shared/ds --classes dog --engine ray --ray-address auto
  ovperc label hand/images --out hand/ --classes "person, helmet" --existing keep
  ovperc label hand/images --out hand/ --classes "person, helmet" --existing merge --merge-iou 0.4

A dataset that already holds labels ovperc did not write (labelled by hand or by another
tool, in the layout of --format) is never overwritten. Without --existing such an --out is
refused (or, with --overwrite, every image whose label file is there is skipped). With it:
  keep   images that have labels are not labelled; their labels stay byte for byte and stay
         part of the dataset: data.yaml / labels.txt / annotations.json keep their classes
         and ids, new classes are appended, COCO keeps every image and annotation it lists
  skip   images that have labels are left out of the run, and no file ovperc did not write
         changes at all (data.yaml stays as it is, so every class must be in it; a COCO
         dataset, whose one annotations.json would have to change, is refused: use keep)
  merge  every image is labelled; an image's own labels stay and only the new boxes that
         overlap none of them above --merge-iou (any class) are added to them
A file ovperc changes that it did not write is copied to DIR/.ovperc/originals first;
--overwrite, a changed image and a killed run put the original back. SOURCE may be
DIR/images: the dataset's own images are labelled where they are (none is copied or moved).

Rerun the same command after an interruption (Ctrl-C, kill, crash) to resume: finished
images are skipped and the result is the dataset an uninterrupted run writes.
Both engines write the same dataset, so a run started with one resumes with the other.
Exit code: 0 all images labelled, 1 some images skipped (see report.json),
2 error (bad options, models not available, settings differ from the run in --out),
130 interrupted.
"""


def add_parser(subparsers: Any) -> None:
    """Register ``label`` and its options."""
    from ovperc.labeling.existing import DEFAULT_MERGE_IOU, EXISTING_MODES
    from ovperc.labeling.writers import FORMATS, IMAGE_MODES

    parser = subparsers.add_parser(
        "label",
        help="label a folder of images into a YOLO, COCO or Pascal VOC dataset",
        description="Scan SOURCE recursively for images (jpg, jpeg, png, bmp, webp, tif, "
                    "tiff, any case), run the chain on each, and write a dataset to --out. "
                    "Bad files are skipped with a reason; a report is printed and saved as "
                    "report.json.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", type=Path, metavar="SOURCE",
                        help="folder of images (scanned recursively, hidden files skipped) "
                             "or a single image file")
    parser.add_argument("--out", "-o", type=Path, required=True, metavar="DIR",
                        help="dataset folder to write (created; resumed if it holds an "
                             "interrupted run with the same settings)")
    add_class_options(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS, default="yolo",
                     help="yolo: images/, labels/*.txt, data.yaml; coco: images/, "
                          "annotations.json; voc: images/, annotations/*.xml, labels.txt "
                          "(default yolo)")
    out.add_argument("--masks", action="store_true",
                     help="segment every box with SAM and write masks: YOLO segmentation "
                          "polygons, COCO RLE, or for VOC instance PNGs in masks/")
    out.add_argument("--mask-png", action="store_true",
                     help="also write masks/<name>.png per image: pixel value k is the k-th "
                          "annotation of that image, 0 background (implies --masks)")
    out.add_argument("--images", choices=IMAGE_MODES, default="copy",
                     help="how images get into DIR/images: copy (default), hardlink, symlink, "
                          "or none (annotations only)")
    out.add_argument("--overwrite", action="store_true",
                     help="discard a previous run in --out made with other settings (classes, "
                          "models, thresholds, format) and start over: only the files its manifest "
                          "recorded are removed, never SOURCE or files ovperc did not write (a file "
                          "it changed under --existing gets its original bytes back)")
    out.add_argument("--val-split", type=_fraction, default=0.0, metavar="F",
                     help="hold out about this fraction of the images as a validation split "
                          "(YOLO images/{train,val}, COCO annotations_{train,val}.json, VOC "
                          "ImageSets/Main/{train,val}.txt); which image goes where depends only "
                          "on its path, so reruns and resumes keep it (default 0: no split)")
    out.add_argument("--val-from", type=Path, metavar="DIR",
                     help="validate on this hand-labelled dataset instead: data.yaml's val points "
                          "at its images, its classes are the run's, and SOURCE images identical to "
                          "one of its images are not labelled")
    out.add_argument("--existing", choices=EXISTING_MODES, metavar="MODE",
                     help="DIR already holds labels ovperc did not write (hand labels in the "
                          "--format layout): keep (label only the images without labels; theirs "
                          "stay and are listed in the dataset files), skip (leave those images out "
                          "and change no file ovperc did not write), or merge (add only new boxes "
                          "that overlap none of an image's own); see below")
    out.add_argument("--merge-iou", type=iou_value, metavar="IOU",
                     help="with --existing merge: a new box overlapping one of the image's own boxes "
                          f"(any class) by more than this IoU is not added (default {DEFAULT_MERGE_IOU})")
    out.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                     help=f"skip images declaring more pixels than N (default {DEFAULT_MAX_PIXELS:,})")
    out.add_argument("--no-progress", action="store_true",
                     help="no progress bar (it shows images/s and the time left)")
    add_model_options(parser)
    add_threshold_options(parser)
    add_engine_options(parser)
    parser.set_defaults(func=run_label)


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--engine``, ``--ray-address``, ``--num-workers``, ``--gpus-per-worker``."""
    group = parser.add_argument_group(
        "engine", "where the chain runs; both engines write the same dataset")
    group.add_argument("--engine", choices=ENGINES, default="local",
                       help="local: this process (default); ray: an actor pool on Ray Data, "
                            "on a local Ray instance or the cluster at --ray-address "
                            '(pip install "ovperc[ray]")')
    group.add_argument("--ray-address", metavar="ADDR",
                       help="join this Ray cluster (auto, HOST:PORT or ray://HOST:10001) instead "
                            "of starting a local instance; SOURCE must be a path every node "
                            "sees (a shared file system); the dataset is written here")
    group.add_argument("--num-workers", type=positive_int, metavar="N",
                       help="Ray actors, each holding one copy of the models (default: one per "
                            "GPU, or one per node on CPU-only clusters)")
    group.add_argument("--gpus-per-worker", type=non_negative_float, metavar="G",
                       help="GPUs per Ray actor; 0.5 puts two actors on a GPU (default 1 when "
                            "the cluster has GPUs, else 0)")


def make_engine(args: argparse.Namespace, *, preset: str) -> Any:
    """The engine ``--engine`` asks for: ``None`` for local, else a :class:`RayEngine`.

    The Ray actors rebuild the pipeline from the parsed options (never a pickled model).

    Raises:
        ValueError: Ray options without ``--engine ray``.
        ImportError: ``--engine ray`` without Ray installed (the message says how to install it).

    Example:
        >>> make_engine(parser.parse_args(["src", "--out", "ds"]), preset="detect") is None  # doctest: +SKIP
        True
    """
    options = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "func"})
    return engine_from_args(args, functools.partial(build_pipeline, options, preset=preset))


def engine_from_args(args: argparse.Namespace, factory: Callable[[], Any]) -> Any:
    """``None`` for ``--engine local``, else a Ray engine whose actors call ``factory``
    (a picklable callable that builds the pipeline).

    Raises:
        ValueError: Ray options without ``--engine ray``.

    Example:
        >>> engine_from_args(args, functools.partial(build, "vit_b"))  # doctest: +SKIP
    """
    ray_options = {"--ray-address": args.ray_address, "--num-workers": args.num_workers,
                   "--gpus-per-worker": args.gpus_per_worker}
    if args.engine == "local":
        given = [name for name, value in ray_options.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --engine ray")
        return None
    from ovperc.labeling.ray_engine import RayEngine

    return RayEngine(factory, address=args.ray_address, num_workers=args.num_workers,
                     gpus_per_worker=args.gpus_per_worker)


def run_label(args: argparse.Namespace) -> int:
    """Run ``ovperc label``; returns the exit code."""
    from ovperc.device import resolve_device
    from ovperc.hub import ModelNotAvailableError
    from ovperc.labeling.runner import label_folder

    masks = bool(args.masks or args.mask_png)
    try:
        ontology = ontology_from_args(args)
        if ontology is None and args.val_from is not None:
            from ovperc.labeling.runner import hand_validation_set
            from ovperc.ontology import Ontology

            ontology = Ontology(hand_validation_set(args.val_from, args.format).classes)
        tags = ontology is None or args.tag_merge
        preset = choose_preset(args, masks=masks, tags=tags)
        pipeline = build_pipeline(args, preset=preset)
        if pipeline.class_thresholds is not None and not tags:
            pipeline.class_thresholds.check_classes(ontology.classes)
        if tags and pipeline.tagger is None:
            raise ValueError("no --classes or --ontology given and the chain has no tagger: "
                             "give classes, or a preset/--tagger that tags")
        if not args.source.exists():
            raise ValueError(f"source not found: {args.source}")
        pipeline.check(ontology)  # classes the detector cannot take fail before any image
        engine = make_engine(args, preset=preset)
    except (ValueError, OSError, ModelNotAvailableError, ImportError) as error:
        print(f"error: {describe_error(error)}", file=sys.stderr)
        return 2

    report = run_resumable(lambda: label_folder(
        pipeline, args.source, args.out,
        classes=ontology, format=args.format, masks=masks, mask_png=args.mask_png,
        images=args.images, batch_size=args.batch_size, tag_merge=args.tag_merge,
        overwrite=args.overwrite, signature=run_signature(args, preset=preset),
        decode_workers=args.decode_workers, max_pixels=args.max_pixels,
        progress=not args.no_progress, engine=engine,
        # a GPU leaves the CPU free to write while it runs the next batch
        write_behind=engine is None and resolve_device(args.device).type != "cpu",
        val_split=args.val_split, val_from=args.val_from,
        existing=args.existing, merge_iou=args.merge_iou,
    ))
    if isinstance(report, int):
        return report
    print(report.summary())
    print(f"report: {Path(args.out) / 'report.json'}")
    if report.interrupted:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
    return report.exit_code


def _fraction(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.1, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value
