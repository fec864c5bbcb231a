"""``ovperc tune``: per-class confidence thresholds from a hand-labelled validation set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ovperc.cli.options import positive_int
from ovperc.datasets.io import FORMAT_CHOICES

HELP = "choose a confidence threshold per class from hand labels; writes thresholds.yaml"

EPILOG = """\
examples:
  ovperc tune auto/ hand/ --out thresholds.yaml
  ovperc tune auto/ hand/ --out thresholds.yaml --precision 0.9 --min-support 20
  ovperc label photos/ --out dataset/ --classes "cat, dog" --thresholds thresholds.yaml

AUTO must carry confidences (ovperc label keeps them: YOLO in scores/ beside labels/, COCO
'score', VOC <score>). Label AUTO with the same models and a --box-threshold no higher than
the thresholds you want to find: boxes the detector dropped cannot be brought back.
Exit code: 0 written, 2 refused (bad options, datasets that do not pair, no confidences,
--out holding a file ovperc did not write).
"""


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _iou(text: str) -> float:
    from ovperc.datasets.tuning import IOU_CHOICES

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    matching = [c for c in IOU_CHOICES if abs(c - value) < 1e-9]
    if not matching:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(f'{c:g}' for c in IOU_CHOICES)}, got {text!r}")
    return matching[0]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``ovperc tune``.

    Example:
        >>> add_parser(parser.add_subparsers())  # doctest: +SKIP
    """
    from ovperc.datasets.tuning import DEFAULT_MIN_SUPPORT

    parser = subparsers.add_parser(
        "tune", help=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Compare AUTO (auto-labels with confidences) with HAND (hand labels of the same "
            "images, kept out of training) and choose, for each class, the confidence "
            "threshold that maximises F1 (or the lowest one reaching --precision). Prints a "
            "table and writes the thresholds as YAML for ovperc label/run --thresholds."),
    )
    parser.add_argument("pred", type=Path, metavar="AUTO", help="auto-labelled dataset (with scores)")
    parser.add_argument("gt", type=Path, metavar="HAND", help="hand-labelled dataset of the same images")
    parser.add_argument("--out", "-o", type=Path, required=True, metavar="FILE",
                        help="thresholds file to write (YAML: 'default' and 'classes'); an "
                             "existing file is replaced only if ovperc tune wrote it")
    parser.add_argument("--precision", type=_probability, metavar="P",
                        help="per class, the lowest threshold whose precision reaches P "
                             "(default: the threshold with the best F1)")
    parser.add_argument("--iou", type=_iou, default=0.5, metavar="IOU",
                        help="IoU a box needs to match a hand box: 0.5, 0.55, ..., 0.95 (default 0.5)")
    parser.add_argument("--min-support", type=positive_int, default=DEFAULT_MIN_SUPPORT, metavar="N",
                        help="hand boxes a class needs for its own threshold; classes with "
                             f"fewer keep the global default (default {DEFAULT_MIN_SUPPORT})")
    parser.add_argument("--pred-format", choices=FORMAT_CHOICES, default="auto",
                        help="format of AUTO (default: detected from its files)")
    parser.add_argument("--gt-format", choices=FORMAT_CHOICES, default="auto",
                        help="format of HAND (default: detected from its files)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--class-map", metavar="OLD=NEW,...",
                       help="rename AUTO classes to HAND names; OLD= drops a class")
    group.add_argument("--class-map-file", type=Path, metavar="FILE",
                       help="the same as a YAML/JSON 'old: new' mapping or 'old=new' lines")
    parser.set_defaults(func=run)
    return parser


def _writable(path: Path) -> None:
    """Refuse to replace a file that ovperc tune did not write."""
    from ovperc.thresholds import HEADER

    if not path.exists():
        return
    if not path.is_file():
        raise ValueError(f"--out {path} exists and is not a file")
    with path.open("rb") as handle:
        first = handle.readline().decode("utf-8", "replace").rstrip("\r\n")
    if first != HEADER:
        raise ValueError(f"--out {path} exists and was not written by ovperc tune "
                         f"(its first line is not {HEADER!r}); choose another path or remove it")


def run(args: argparse.Namespace) -> int:
    """Run ``ovperc tune``; 0 on success, 2 when the inputs are refused.

    Example:
        >>> run(build_parser().parse_args(["tune", "auto/", "hand/", "--out", "t.yaml"]))  # doctest: +SKIP
        0
    """
    from ovperc.datasets.scoring import parse_class_map, read_class_map
    from ovperc.datasets.tuning import format_tuning, tune_thresholds
    from ovperc.thresholds import write_thresholds

    try:
        _writable(args.out)
        class_map = (parse_class_map(args.class_map) if args.class_map else
                     read_class_map(args.class_map_file) if args.class_map_file else {})
        result = tune_thresholds(args.pred, args.gt, iou=args.iou, precision=args.precision,
                                 min_support=args.min_support, pred_format=args.pred_format,
                                 gt_format=args.gt_format, class_map=class_map)
        goal = f"precision >= {args.precision:g}" if args.precision is not None else "best F1"
        write_thresholds(args.out, result.thresholds(), comments=[
            f"tuned by ovperc tune on {result.images} images: {args.pred} against {args.gt}",
            f"IoU {result.iou:g}, {goal}, own threshold from {result.min_support} hand boxes",
            "a box is kept when its confidence >= its class's threshold (else 'default')",
        ])
    except (ValueError, OSError) as exc:
        print(f"ovperc tune: {exc}", file=sys.stderr)
        return 2
    print(format_tuning(result))
    print(f"thresholds written to {args.out}")
    return 0
