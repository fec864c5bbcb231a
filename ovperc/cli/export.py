"""``ovperc export``: hand a dataset's labels to reviewers (Label Studio)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ovperc.datasets.io import FORMAT_CHOICES

HELP = "export labels as Label Studio tasks with pre-annotations, for human review"
TARGETS = ("label-studio",)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``ovperc export``.

    Example:
        >>> add_parser(parser.add_subparsers())  # doctest: +SKIP
    """
    parser = subparsers.add_parser(
        "export", help=HELP, description=(
            "Write a Label Studio import file: one task per image, the dataset's boxes as "
            "rectanglelabels predictions and its masks as polygonlabels, with the matching "
            "labelling config. Import the tasks into a project that uses the config."),
    )
    parser.add_argument("dataset", type=Path, help="YOLO, COCO or Pascal VOC dataset folder")
    parser.add_argument("--to", choices=TARGETS, default="label-studio", help="target tool")
    parser.add_argument("--out", type=Path, required=True, help="tasks JSON file to write")
    parser.add_argument("--config-out", type=Path, metavar="FILE",
                        help="also write the labelling config XML (default: next to --out as "
                             "<out>.config.xml)")
    parser.add_argument("--image-root-url", metavar="URL",
                        help="base URL the dataset folder is served from; image paths relative to "
                             "the dataset are appended. Default: Label Studio local files "
                             "(/data/local-files/?d=<dataset name>/...; set "
                             "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT to the dataset's parent)")
    parser.add_argument("--format", dest="fmt", choices=FORMAT_CHOICES, default="auto",
                        help="dataset format (default: detected)")
    parser.add_argument("--model-version", default="ovperc",
                        help="model_version shown on the predictions (default: ovperc)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``ovperc export``; 0 on success, 2 when the dataset cannot be read.

    Example:
        >>> run(build_parser().parse_args(["export", "ds/", "--out", "t.json"]))  # doctest: +SKIP
        0
    """
    from ovperc.datasets.label_studio import export_label_studio

    config_out = args.config_out or args.out.with_name(args.out.stem + ".config.xml")
    try:
        counts = export_label_studio(args.dataset, args.out, fmt=args.fmt, config_out=config_out,
                                     image_root_url=args.image_root_url,
                                     model_version=args.model_version)
    except (ValueError, OSError) as exc:
        print(f"ovperc export: {exc}", file=sys.stderr)
        return 2
    print(f"{counts['tasks']} tasks ({counts['rectangles']} rectangles, {counts['polygons']} polygons) "
          f"written to {args.out}; labelling config: {config_out}")
    return 0
