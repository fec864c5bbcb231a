"""ovperc: zero-shot open-vocabulary perception.

Tag an image, detect any named class with Grounding DINO, segment every box with SAM and
check every region with CLIP, through one chain:

    >>> import ovperc
    >>> pipe = ovperc.Pipeline.from_preset("detect+segment")  # doctest: +SKIP
    >>> result = pipe("street.jpg", classes=["person", "bicycle"])  # doctest: +SKIP

Importing ovperc is cheap: torch and the models load only when a stage first runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ovperc.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "Pipeline": "ovperc.pipeline",
    "Perception": "ovperc.result",
    "Ontology": "ovperc.ontology",
    "load_image": "ovperc.image",
    "ImageError": "ovperc.image",
    "UnsupportedImageError": "ovperc.image",
    "Tag": "ovperc.types",
    "ModelNotAvailableError": "ovperc.hub",
    "PRESETS": "ovperc.presets",
    "ModelEntry": "ovperc.registry",
    "models": "ovperc.registry",
    "register_model": "ovperc.registry",
    "register_stage": "ovperc.registry",
    "stages": "ovperc.stages",
    "ClassThresholds": "ovperc.thresholds",
    "read_thresholds": "ovperc.thresholds",
    "Tracker": "ovperc.video.tracker",
}

__all__ = [
    "PRESETS",
    "ClassThresholds",
    "ImageError",
    "ModelEntry",
    "ModelNotAvailableError",
    "Ontology",
    "Perception",
    "Pipeline",
    "Tag",
    "Tracker",
    "UnsupportedImageError",
    "__version__",
    "load_image",
    "read_thresholds",
    "models",
    "register_model",
    "register_stage",
    "stages",
]

if TYPE_CHECKING:
    from ovperc import stages
    from ovperc.hub import ModelNotAvailableError
    from ovperc.image import ImageError, UnsupportedImageError, load_image
    from ovperc.ontology import Ontology
    from ovperc.pipeline import Pipeline
    from ovperc.presets import PRESETS
    from ovperc.registry import ModelEntry, models, register_model, register_stage
    from ovperc.result import Perception
    from ovperc.thresholds import ClassThresholds, read_thresholds
    from ovperc.types import Tag
    from ovperc.video.tracker import Tracker


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
