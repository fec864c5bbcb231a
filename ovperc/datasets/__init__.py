"""Dataset tools: read YOLO/COCO/VOC datasets, score labels against ground truth, add SAM
masks to box datasets, export labels for review in Label Studio and import the reviewed
labels back.

Example:
    >>> from ovperc.datasets import evaluate  # doctest: +SKIP
    >>> print(evaluate("auto-labels/", "hand-labels/").boxes.map50)  # doctest: +SKIP
"""

from __future__ import annotations

from ovperc.lazy import lazy_exports

_LAZY = {
    "load_dataset": "ovperc.datasets.io",
    "detect_format": "ovperc.datasets.io",
    "Dataset": "ovperc.datasets.io",
    "DatasetError": "ovperc.datasets.io",
    "evaluate": "ovperc.datasets.scoring",
    "Evaluation": "ovperc.datasets.scoring",
    "ClassMismatchError": "ovperc.datasets.class_map",
    "NoScoresError": "ovperc.datasets.scoring",
    "tune_thresholds": "ovperc.datasets.tuning",
    "segment_dataset": "ovperc.datasets.segment",
    "export_label_studio": "ovperc.datasets.label_studio",
    "import_label_studio": "ovperc.datasets.label_studio_import",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
