"""``ovperc segment``: add SAM masks to every box of an existing dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ovperc.cli.options import positive_int
from ovperc.datasets.io import FORMAT_CHOICES

HELP = "add a SAM mask to every box of a YOLO/COCO/VOC dataset (resumable)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``ovperc segment``.

    Example:
        >>> add_parser(parser.add_subparsers())  # doctest: +SKIP
    """
    from ovperc.device import DTYPES
    from ovperc.labeling.writers import IMAGE_MODES
    from ovperc.presets import DEFAULT_MODELS

    parser = subparsers.add_parser(
        "segment", help=HELP, description=(
            "Read a YOLO, COCO or Pascal VOC box dataset and write the same dataset (classes, "
            "boxes, image files, split folders) with a SAM mask for every box: YOLO "
            "segmentation polygons, COCO RLE, or VOC instance-mask PNGs in masks/. Rerun the "
            "same command after an interruption to resume; unreadable images are skipped and "
            "listed in OUT/report.json."),
    )
    parser.add_argument("dataset", type=Path, help="the box dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="the output dataset folder")
    parser.add_argument("--format", dest="fmt", choices=FORMAT_CHOICES, default="auto",
                        help="input format (default: detected); the output keeps it")
    parser.add_argument("--segmenter", default=DEFAULT_MODELS["segmenter"], metavar="MODEL",
                        help="a segmenter short name from `ovperc models` (SAM vit_b, vit_l, vit_h: "
                             "official checkpoints, downloaded once), a local .pth checkpoint, a hub "
                             f"id or a folder (default {DEFAULT_MODELS['segmenter']})")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps (default auto)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="model precision; float16/bfloat16 need a GPU (default float32)")
    parser.add_argument("--batch-size", type=positive_int, default=4, metavar="N",
                        help="images per SAM call (default 4; raise it on a GPU)")
    parser.add_argument("--mask-png", action="store_true",
                        help="also write masks/<name>.png per image (pixel value k = k-th box)")
    parser.add_argument("--images", choices=IMAGE_MODES, default="copy",
                        help="how images get into OUT: copy (default), hardlink, symlink, none")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard a previous run in OUT made with other settings")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``ovperc segment``; the exit code is the report's (0 ok, 1 images skipped, 2 error).

    Example:
        >>> run(build_parser().parse_args(["segment", "ds/", "--out", "ds-masks/"]))  # doctest: +SKIP
        0
    """
    from ovperc.cli.options import describe_error
    from ovperc.datasets.segment import segment_dataset
    from ovperc.hub import ModelNotAvailableError
    from ovperc.labeling.report import EXIT_ERROR
    from ovperc.registry import build_stage

    model = Path(args.segmenter).expanduser()
    spec = str(model.resolve()) if model.exists() else args.segmenter
    try:
        segmenter = build_stage("segmenter", args.segmenter, device=args.device, dtype=args.dtype)
        report = segment_dataset(
            segmenter, args.dataset, args.out, fmt=args.fmt, images=args.images,
            mask_png=args.mask_png, batch_size=args.batch_size, overwrite=args.overwrite,
            signature={"segmenter": spec, "dtype": args.dtype},
            progress=not args.no_progress,
        )
    except (ValueError, OSError, ModelNotAvailableError) as exc:
        print(f"ovperc segment: {describe_error(exc)}", file=sys.stderr)
        return EXIT_ERROR
    print(report.summary())
    return report.exit_code
