"""Launch the ovperc demo from a source checkout: ``python demo/app.py [ovperc demo options]``.

The app itself lives in the package (:mod:`ovperc.demo`), so ``ovperc demo`` works from an
installed copy too; this launcher adds the example images of this folder.

Example:
    python demo/app.py --port 7860 --preset detect+segment
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when Gradio is imported

from ovperc.demo import build_app  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent / "examples"

__all__ = ["EXAMPLES", "build_app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``ovperc demo`` with this folder's examples; returns the exit code."""
    import argparse
    import logging

    from ovperc.cli import demo as demo_cli

    parser = argparse.ArgumentParser(prog="python demo/app.py")
    demo_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    if args.examples is None:
        args.examples = EXAMPLES
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(demo_cli.run(args))


if __name__ == "__main__":
    sys.exit(main())
