"""``ovperc evaluate``: score a labelled dataset against a hand-labelled one."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ovperc.datasets.io import FORMAT_CHOICES

HELP = "score labels (e.g. auto-labels) against ground truth: mAP, per-class P/R/AP"


def _thresholds(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.2,0.3,0.5, got {text!r}") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"thresholds must be in [0, 1], got {text!r}")
    return values


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``ovperc evaluate``.

    Example:
        >>> add_parser(parser.add_subparsers())  # doctest: +SKIP
    """
    from ovperc.datasets.scoring import DEFAULT_SWEEP

    parser = subparsers.add_parser(
        "evaluate", help=HELP, description=(
            "Compare PRED (the labels to score) with GT (hand labels), any pair of YOLO, COCO "
            "and Pascal VOC datasets. Images are paired by path relative to the images folder. "
            "Prints mAP@0.5, mAP@0.5:0.95 and per-class precision/recall/AP for boxes, and "
            "for masks when both sides have them."),
    )
    parser.add_argument("pred", type=Path, help="dataset to score (e.g. written by ovperc label)")
    parser.add_argument("gt", type=Path, help="ground-truth dataset")
    parser.add_argument("--pred-format", choices=FORMAT_CHOICES, default="auto",
                        help="format of PRED (default: detected from its files)")
    parser.add_argument("--gt-format", choices=FORMAT_CHOICES, default="auto",
                        help="format of GT (default: detected from its files)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the scores as JSON")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--class-map", metavar="OLD=NEW,...",
                       help="rename prediction classes to ground-truth names; OLD= drops a class")
    group.add_argument("--class-map-file", type=Path, metavar="FILE",
                       help="the same as a YAML/JSON 'old: new' mapping or 'old=new' lines")
    parser.add_argument("--sweep", nargs="?", type=_thresholds, metavar="T1,T2,...",
                        const=list(DEFAULT_SWEEP),
                        help="also report box scores at several confidence thresholds "
                             f"(default {','.join(str(t) for t in DEFAULT_SWEEP)}); refused "
                             "when PRED carries no confidences")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``ovperc evaluate``; 0 on success, 2 when the inputs are refused.

    Example:
        >>> run(build_parser().parse_args(["evaluate", "auto/", "hand/"]))  # doctest: +SKIP
        0
    """
    from ovperc.datasets.scoring import evaluate, format_report, parse_class_map, read_class_map

    try:
        class_map = (parse_class_map(args.class_map) if args.class_map else
                     read_class_map(args.class_map_file) if args.class_map_file else {})
        result = evaluate(args.pred, args.gt, pred_format=args.pred_format, gt_format=args.gt_format,
                          class_map=class_map, sweep=args.sweep)
    except (ValueError, OSError) as exc:
        print(f"ovperc evaluate: {exc}", file=sys.stderr)
        return 2
    print(format_report(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        print(f"scores written to {args.json}")
    return 0
