"""ovperc: zero-shot open-vocabulary perception.

Tag an image, detect any named class with Grounding DINO, segment every box with SAM and
check every region with CLIP, through one chain:

    >>> import ovperc
    >>> pipe = ovperc.Pipeline.from_preset("detect+segment")  # doctest: +SKIP
    >>> result = pipe("street.jpg", classes=["person", "bicycle"])  # doctest: +SKIP

Importing ovperc is cheap: torch and the models load only when a stage first runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Pipeline": "ovperc.pipeline",
    "Perception": "ovperc.result",
    "Ontology": "ovperc.ontology",
    "load_image": "ovperc.image",
    "ImageError": "ovperc.image",
    "Tag": "ovperc.types",
    "ModelNotAvailableError": "ovperc.hub",
    "PRESETS": "ovperc.presets",
}

__all__ = [
    "PRESETS",
    "ImageError",
    "ModelNotAvailableError",
    "Ontology",
    "Perception",
    "Pipeline",
    "Tag",
    "__version__",
    "load_image",
    "stages",
]

if TYPE_CHECKING:
    from ovperc import stages
    from ovperc.hub import ModelNotAvailableError
    from ovperc.image import ImageError, load_image
    from ovperc.ontology import Ontology
    from ovperc.pipeline import Pipeline
    from ovperc.presets import PRESETS
    from ovperc.result import Perception
    from ovperc.types import Tag


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "stages":
        return importlib.import_module("ovperc.stages")
    raise AttributeError(f"module 'ovperc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
