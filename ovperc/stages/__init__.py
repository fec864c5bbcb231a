"""Stage implementations, one module per backend, imported only when used.

Example:
    >>> from ovperc.stages import GroundingDinoDetector  # doctest: +SKIP
"""

from __future__ import annotations

from ovperc.lazy import lazy_exports
from ovperc.stages.base import Classifier, Detector, Segmenter, Tagger

_LAZY = {
    "GroundingDinoDetector": "ovperc.stages.grounding_dino",
    "OwlDetector": "ovperc.stages.owl",
    "OmDetTurboDetector": "ovperc.stages.omdet_turbo",
    "SamSegmenter": "ovperc.stages.sam",
    "HfSamSegmenter": "ovperc.stages.sam_hf",
    "Sam3Detector": "ovperc.stages.sam3",
    "ClipModel": "ovperc.stages.clip_model",
    "ClipClassifier": "ovperc.stages.clip_classifier",
    "ClipTagger": "ovperc.stages.clip_tagger",
    "RamTagger": "ovperc.stages.ram",
}

__all__ = ["Classifier", "Detector", "Segmenter", "Tagger", *_LAZY]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
