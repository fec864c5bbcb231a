"""``ovperc import``: bring labels reviewed in Label Studio back into the dataset."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "replace a dataset's auto labels with the labels reviewed in Label Studio"
SOURCES = ("label-studio",)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``ovperc import``.

    Example:
        >>> add_parser(parser.add_subparsers())  # doctest: +SKIP
    """
    parser = subparsers.add_parser(
        "import", help=HELP, description=(
            "Read a Label Studio JSON export (Export -> JSON) and replace, image by image, the "
            "labels `ovperc label` wrote with each task's latest submitted annotation "
            "(rectangles, polygons, brush masks), in the dataset's own format. Images without "
            "a submitted annotation keep their labels; only files ovperc wrote are replaced."),
    )
    parser.add_argument("source", choices=SOURCES, help="the tool the labels come from")
    parser.add_argument("export", type=Path, help="the JSON export file")
    parser.add_argument("--out", type=Path, required=True,
                        help="the dataset folder (written by `ovperc label`) to update")
    parser.add_argument("--add-classes", action="store_true",
                        help="append class names the dataset does not have (default: an error "
                             "listing them; existing class ids never move)")
    parser.add_argument("--report", type=Path, metavar="FILE",
                        help="also write the import report (replaced, skipped tasks and why) as JSON")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``ovperc import``: 0 all imported, 1 some tasks skipped, 2 nothing could be imported.

    Example:
        >>> argv = ["import", "label-studio", "e.json", "--out", "ds/"]
        >>> run(build_parser().parse_args(argv))  # doctest: +SKIP
        0
    """
    from ovperc.datasets.label_studio_import import import_label_studio
    from ovperc.labeling.manifest import ManifestMismatchError

    try:
        report = import_label_studio(args.export, args.out, add_classes=args.add_classes)
    except (ValueError, OSError, ManifestMismatchError) as exc:
        print(f"ovperc import: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    if args.report is not None:
        args.report.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n",
                               encoding="utf-8")
    return report.exit_code
