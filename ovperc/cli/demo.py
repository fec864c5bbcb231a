"""``ovperc demo``: serve the web demo on a local port."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ovperc.cli.options import ROLES, add_model_options, add_threshold_options, build_pipeline

HELP = "start the web demo (Gradio) on a local port"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``ovperc demo``.

    Example:
        >>> add_parser(parser.add_subparsers())  # doctest: +SKIP
    """
    parser = subparsers.add_parser(
        "demo", help=HELP, description=(
            "Serve a web page where you upload an image, type classes (or let the tagger "
            "name them), switch stages on and off, and see boxes, masks, tags, a table and "
            "the JSON result. Models load once at start. Needs the demo extra: "
            "pip install 'ovperc[demo]'."),
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1: this machine only; "
                             "0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also open a public Gradio share link (off by default)")
    add_model_options(parser, default_preset="default")
    add_threshold_options(parser, batching=False)
    page = parser.add_argument_group("page")
    page.add_argument("--examples", type=Path, metavar="DIR",
                      help="folder of example images (default: drawn examples that suit the "
                           "models: scenes of the shapes world for the shapes-tiny models, "
                           "everyday scenes for others)")
    page.add_argument("--concurrency-limit", type=int, default=1, metavar="N",
                      help="requests that run at the same time; the rest wait (default 1)")
    page.add_argument("--max-classes", type=int, default=1000, metavar="N",
                      help="most classes one request may name (default 1000)")
    parser.set_defaults(func=run)
    return parser


def _examples(folder: Path | None, guide: Any) -> list[Any]:
    if folder is None:
        from ovperc.demo import example_images

        return list(example_images(guide))
    suffixes = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)


def run(args: argparse.Namespace) -> int:
    """Run ``ovperc demo``: build the pipeline, load its models, serve the page.

    Returns 2 when the models cannot be loaded or an option is invalid.

    Example:
        >>> run(build_parser().parse_args(["demo", "--port", "7861"]))  # doctest: +SKIP
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from ovperc.demo import DemoLimits, guide_for, launch
    from ovperc.hub import ModelNotAvailableError

    if args.examples is not None and not args.examples.is_dir():
        print(f"ovperc demo: --examples {args.examples} is not a folder", file=sys.stderr)
        return 2
    try:
        limits = DemoLimits(max_classes=args.max_classes)
        pipeline = build_pipeline(args, preset=args.preset)
        print(f"loading models: {pipeline}", file=sys.stderr)
        load_stages(pipeline)
    except (ValueError, OSError, ModelNotAvailableError) as exc:
        print(f"ovperc demo: {exc}", file=sys.stderr)
        return 2
    guide = guide_for(pipeline)
    if guide.note:
        print(guide.note, file=sys.stderr)
    print(f"serving the demo on http://{args.host}:{args.port} (Ctrl+C stops it)", file=sys.stderr)
    launch(pipeline, host=args.host, port=args.port, share=args.share,
           examples=_examples(args.examples, guide), concurrency_limit=args.concurrency_limit,
           limits=limits, guide=guide)
    return 0


def load_stages(pipeline: Any) -> None:
    """Load every stage's model now, so the first request does not wait (and fails early).

    Example:
        >>> load_stages(Pipeline.from_preset("detect"))  # doctest: +SKIP
    """
    for role in ROLES:
        stage = getattr(pipeline, role)
        load = getattr(stage, "load", None) or getattr(getattr(stage, "clip", None), "load", None)
        if callable(load):
            load()
