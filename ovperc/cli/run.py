"""``ovperc run``: run the chain on one image; print, draw and save what it found."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ovperc.cli.options import (
    add_class_options,
    add_model_options,
    add_threshold_options,
    build_pipeline,
    choose_preset,
    describe_error,
    ontology_from_args,
)

EPILOG = """\
examples:
  ovperc run street.jpg --classes "person, bicycle" --save annotated.jpg --json out.json
  ovperc run street.jpg --no-masks --json -        # JSON to stdout
"""


def add_parser(subparsers: Any) -> None:
    """Register ``run`` and its options."""
    parser = subparsers.add_parser(
        "run",
        help="run the chain on one image; print a summary, save a drawing and/or JSON",
        description="Detect (and by default segment) the given classes in IMAGE, or what a "
                    "tagger finds when no classes are given.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", type=Path, metavar="IMAGE", help="the image file")
    add_class_options(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--save", type=Path, metavar="FILE",
                     help="save the image with masks, boxes and labels drawn (format from "
                          "the extension, e.g. annotated.jpg)")
    out.add_argument("--json", metavar="FILE",
                     help="save the result as JSON (boxes, classes, scores, tags, masks as "
                          "COCO RLE, timings); '-' prints it")
    out.add_argument("--no-masks", action="store_true",
                     help="boxes only: do not run the segmenter (faster on a CPU)")
    add_model_options(parser)
    add_threshold_options(parser, batching=False)
    parser.set_defaults(func=run_run)


def run_run(args: argparse.Namespace) -> int:
    """Run ``ovperc run``; returns the exit code."""
    from PIL import Image

    from ovperc.image import ImageError, load_image

    try:
        _check_outputs(args)
        ontology = ontology_from_args(args)
        tags = ontology is None or args.tag_merge
        preset = choose_preset(args, masks=not args.no_masks, tags=tags)
        pipeline = build_pipeline(args, preset=preset, keep_images=True)
        image = load_image(args.image)
        pipeline.check(ontology)
        result = pipeline.run_batch([image], classes=ontology, tag_merge=args.tag_merge,
                                    sources=[str(args.image)])[0]
    except ImageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        print(f"error: {describe_error(error)}", file=sys.stderr)
        return 2
    to_stdout = args.json == "-"
    summary = _summary(result, args.image)
    print(summary, file=sys.stderr if to_stdout else sys.stdout)
    if args.save is not None:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(result.annotate()).save(args.save)
        print(f"saved {args.save}", file=sys.stderr if to_stdout else sys.stdout)
    if args.json is not None:
        text = json.dumps(result.to_dict(), indent=2, ensure_ascii=False)
        if to_stdout:
            print(text)
        else:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text + "\n", encoding="utf-8")
            print(f"saved {args.json}")
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any model runs, outputs that would replace the input photo or each other,
    and a drawing whose file type PIL cannot write."""
    from PIL import Image

    outputs = {"--save": args.save, "--json": None if args.json in (None, "-") else Path(args.json)}
    chosen = {flag: Path(path) for flag, path in outputs.items() if path is not None}
    for flag, path in chosen.items():
        if path.exists() and args.image.exists() and os.path.samefile(path, args.image):
            raise ValueError(f"{flag} {path} is the input image; ovperc never writes over your photos, "
                             "choose another file")
    if len(chosen) == 2 and os.path.abspath(chosen["--save"]) == os.path.abspath(chosen["--json"]):
        raise ValueError("--save and --json name the same file; give them different names")
    if args.save is not None and args.save.suffix.lower() not in Image.registered_extensions():
        raise ValueError(f"--save {args.save}: unknown image type {args.save.suffix!r}; use .jpg or .png")


def _summary(result: Any, path: Path, max_lines: int = 20) -> str:
    width, height = result.image_size
    det = result.detections
    names = result.class_names
    counts = ", ".join(f"{n} {c}" for n, c in Counter(names).most_common())
    lines = [f"{path} ({width}x{height}): {len(det)} detections" + (f": {counts}" if counts else "")]
    for i in range(min(len(det), max_lines)):
        score = "" if det.confidence is None else f" {float(det.confidence[i]):.2f}"
        box = ", ".join(f"{v:.0f}" for v in det.xyxy[i])
        lines.append(f"  {names[i] if names else det.class_id[i]}{score} [{box}]")
    if len(det) > max_lines:
        lines.append(f"  ... {len(det) - max_lines} more")
    if result.tags:
        lines.append("tags: " + ", ".join(f"{t.name} {t.score:.2f}" for t in result.tags[:10]))
    if result.timings:
        lines.append("time: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items()))
    return "\n".join(lines)
