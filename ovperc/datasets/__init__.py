"""Dataset tools: read YOLO/COCO/VOC datasets, score labels against ground truth, add SAM
masks to box datasets, and export labels for review in Label Studio.

Example:
    >>> from ovperc.datasets import evaluate  # doctest: +SKIP
    >>> print(evaluate("auto-labels/", "hand-labels/").boxes.map50)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_dataset": "ovperc.datasets.io",
    "detect_format": "ovperc.datasets.io",
    "Dataset": "ovperc.datasets.io",
    "DatasetError": "ovperc.datasets.io",
    "evaluate": "ovperc.datasets.evaluate",
    "Evaluation": "ovperc.datasets.evaluate",
    "ClassMismatchError": "ovperc.datasets.evaluate",
    "segment_dataset": "ovperc.datasets.segment",
    "export_label_studio": "ovperc.datasets.label_studio",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ovperc.datasets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
