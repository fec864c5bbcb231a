"""The four roles of the chain. Any object with the right method fits a role.

Every role takes a batch: a list of RGB ``uint8`` arrays ``(H, W, 3)``, and returns one
result per image, in order. ``supervision.Detections`` is the currency between stages:
``xyxy`` in pixels, ``confidence``, ``class_id`` and extra fields in ``data``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import supervision as sv

    from ovperc.ontology import Ontology
    from ovperc.types import Tag


@runtime_checkable
class Tagger(Protocol):
    """Names what is in each image."""

    def tag(self, images: Sequence[np.ndarray]) -> list[list[Tag]]:
        """Tags per image, best first."""
        ...


@runtime_checkable
class Detector(Protocol):
    """Finds boxes for text prompts."""

    def detect(
        self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]
    ) -> list[sv.Detections]:
        """Boxes per image for that image's prompts.

        ``class_id`` is the index of the matched prompt in ``prompts[i]`` and
        ``data["prompt"]`` its text; every prompt is searched, none dropped.
        """
        ...


@runtime_checkable
class Segmenter(Protocol):
    """Turns boxes into masks."""

    def segment(
        self, images: Sequence[np.ndarray], detections: Sequence[sv.Detections]
    ) -> list[sv.Detections]:
        """The same detections with ``mask`` set: bool ``(N, H, W)`` in image pixels."""
        ...


@runtime_checkable
class Classifier(Protocol):
    """Judges each region against the classes (re-label, re-score or reject)."""

    def classify(
        self,
        images: Sequence[np.ndarray],
        detections: Sequence[sv.Detections],
        ontologies: Sequence[Ontology],
    ) -> list[sv.Detections]:
        """Detections with ``data["clip_class"]`` and ``data["clip_score"]`` set.

        ``ontologies`` holds one vocabulary per image (the classes that image may hold);
        a re-labelled box gets the new name in ``data["class_name"]``.
        """
        ...
