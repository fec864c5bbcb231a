"""The ``ovperc`` command line: one module per subcommand.

Each subcommand module defines ``add_parser(subparsers)`` (which registers its options and
sets ``func``) and the function that runs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

#: subcommand modules, in the order ``ovperc --help`` lists them (``import_``: ``ovperc import``).
COMMANDS = ("label", "track", "run", "segment", "evaluate", "tune", "export", "import_", "demo", "models")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="ovperc",
        description="Zero-shot open-vocabulary perception: tag, detect, segment, classify.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-v info, -vv debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"ovperc.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ovperc`` console script; returns the exit code.

    Example:
        >>> main(["label", "photos/", "--out", "dataset/", "--classes", "dog"])  # doctest: +SKIP
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
