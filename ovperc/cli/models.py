"""``ovperc models``: the models ovperc knows by name, with their cost and licence."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ovperc.registry import ModelEntry

HELP = "list the models ovperc knows by name (role, hub id, licence, size)"
ROLES = ("tagger", "detector", "segmenter", "classifier")
COLUMNS = ("name", "roles", "hub id / model", "licence", "gated", "params", "input")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``ovperc models``.

    Example:
        >>> add_parser(parser.add_subparsers())  # doctest: +SKIP
    """
    parser = subparsers.add_parser(
        "models", help=HELP, description=(
            "List every registered model: its short name (what --detector, --segmenter, "
            "--classifier and --tagger accept, besides hub ids and local folders), roles, hub "
            "id, licence, whether the hub repo is gated, published parameter count and input "
            "size. A local folder's architecture is read from its config.json model_type; the "
            "model types each role accepts are listed at the end."),
    )
    parser.add_argument("--role", choices=ROLES, help="only the models that fill this role")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)
    return parser


def _row(entry: ModelEntry) -> tuple[str, ...]:
    params = "-" if entry.params_m is None else f"{entry.params_m:g}M"
    return (entry.name, ",".join(entry.roles), entry.hub_id or entry.model or "(stage default)",
            entry.licence, "yes" if entry.gated else "no", params, entry.input_size or "-")


def format_table(entries: list[ModelEntry]) -> str:
    """A plain-text table of the entries, one per line.

    Example:
        >>> print(format_table(models("detector")).splitlines()[0])  # doctest: +SKIP
        name  roles  hub id / model ...
    """
    rows = [COLUMNS, *(_row(e) for e in entries)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run(args: argparse.Namespace) -> int:
    """Print the registry (table or JSON); returns 0.

    Example:
        >>> run(build_parser().parse_args(["models", "--role", "detector"]))  # doctest: +SKIP
        0
    """
    from ovperc.registry import model_types, models

    entries = models(args.role)
    types = model_types(args.role)
    if args.json:
        print(json.dumps({
            "models": [
                {"name": e.name, "roles": list(e.roles), "hub_id": e.hub_id, "model": e.model,
                 "licence": e.licence, "gated": e.gated, "params_m": e.params_m,
                 "input_size": e.input_size, "quality": e.quality, "source": e.source}
                for e in entries
            ],
            "model_types": types,
        }, indent=2))
        return 0
    print(format_table(entries))
    print()
    print("local folders and other hub ids: config.json model_type -> stage")
    for model_type, stage in types.items():
        print(f"  {model_type}: {stage}")
    return 0
