"""Launch the ovperc demo from a source checkout: ``python demo/app.py [ovperc demo options]``.

The app itself lives in the package (:mod:`ovperc.demo`), so ``ovperc demo`` works from an
installed copy too. The page's examples suit the models: everyday scenes for the default
models, scenes of the shapes world for the ``shapes-tiny`` toy models (``--examples DIR``
shows a folder of your own instead).

Example:
    python demo/app.py --port 7860 --preset shapes-tiny
"""

from __future__ import annotations

import os
import sys

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when Gradio is imported

from ovperc.demo import build_app  # noqa: E402

__all__ = ["build_app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``ovperc demo`` with these arguments; returns the exit code."""
    import argparse
    import logging

    from ovperc.cli import demo as demo_cli

    parser = argparse.ArgumentParser(prog="python demo/app.py")
    demo_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(demo_cli.run(args))


if __name__ == "__main__":
    sys.exit(main())
