"""Class maps between two datasets' class names (``man=person``, ``tree=`` drops a class)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import supervision as sv


class ClassMismatchError(ValueError):
    """The predictions name classes the ground truth does not have."""


def parse_class_map(text: str) -> dict[str, str]:
    """Parse ``"old=new, other=new2"`` into a dict; ``old=`` drops that class.

    Raises:
        ValueError: an entry has no ``=``.

    Example:
        >>> parse_class_map("man=person, woman=person, tree=")
        {'man': 'person', 'woman': 'person', 'tree': ''}
    """
    mapping: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        old, sep, new = item.partition("=")
        if not sep or not old.strip():
            raise ValueError(f"class map entries look like old=new, got {item.strip()!r}")
        mapping[" ".join(old.split())] = " ".join(new.split())
    return mapping


def read_class_map(path: str | Path) -> dict[str, str]:
    """Read a class map from YAML/JSON (``old: new``) or text (``old=new`` per line).

    Example:
        >>> read_class_map("class-map.yaml")  # doctest: +SKIP
        {'man': 'person'}
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        import yaml

        data = yaml.safe_load(text) or {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected an old: new mapping")
        return {" ".join(str(k).split()): " ".join(str(v or "").split()) for k, v in data.items()}
    return parse_class_map(",".join(line.split("#", 1)[0] for line in text.splitlines()))


def rename_classes(det: sv.Detections, class_map: Mapping[str, str], classes: list[str]) -> sv.Detections:
    """Apply the class map, drop emptied classes, and re-id by the ground truth's classes.

    Example:
        >>> rename_classes(det, {"man": "person"}, ["person"]).data["class_name"]  # doctest: +SKIP
        array(['person'], dtype=object)
    """
    names = [class_map.get(str(n), str(n)) for n in det.data.get("class_name", [])]
    keep = np.array([bool(n) for n in names], dtype=bool)
    det = det[keep] if len(det) else det
    names = [n for n in names if n]
    det.class_id = np.array([classes.index(n) for n in names], dtype=int)
    det.data["class_name"] = np.array(names, dtype=object)
    return det


def check_classes(pred_classes: Sequence[str], gt_classes: Sequence[str],
                  class_map: Mapping[str, str] | None = None) -> None:
    """Refuse predictions whose classes (after the map) are not ground-truth classes.

    Raises:
        ClassMismatchError: the message lists the unknown names and how to map them.

    Example:
        >>> check_classes(["man"], ["person"], {"man": "person"})
    """
    class_map = class_map or {}
    mapped = [class_map.get(c, c) for c in pred_classes]
    unknown = [c for c, m in zip(pred_classes, mapped) if m and m not in gt_classes]
    if unknown:
        example = ",".join(f"{c}={gt_classes[0] if gt_classes else 'NEW'}" for c in unknown[:2])
        raise ClassMismatchError(
            f"prediction classes {unknown} are not ground-truth classes {list(gt_classes)}; "
            f"map them with --class-map (e.g. --class-map \"{example}\"; 'name=' drops a class) "
            "or --class-map-file"
        )
