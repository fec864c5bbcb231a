"""Stage implementations, one module per backend, imported only when used.

Example:
    >>> from ovperc.stages import GroundingDinoDetector  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from ovperc.stages.base import Classifier, Detector, Segmenter, Tagger

_LAZY = {
    "GroundingDinoDetector": "ovperc.stages.grounding_dino",
    "SamSegmenter": "ovperc.stages.sam",
    "ClipModel": "ovperc.stages.clip_model",
    "ClipClassifier": "ovperc.stages.clip_classifier",
    "ClipTagger": "ovperc.stages.clip_tagger",
    "RamTagger": "ovperc.stages.ram",
}

__all__ = ["Classifier", "Detector", "Segmenter", "Tagger", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ovperc.stages' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
