"""A demo request's own thresholds, applied on the shared detector's output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import supervision as sv


class ThresholdedDetector:
    """Runs the shared detector, then drops boxes under this request's thresholds.

    Example:
        >>> class Stub:
        ...     def detect(self, images, prompts):
        ...         return [sv.Detections(xyxy=np.zeros((2, 4)), confidence=np.array([0.2, 0.6]))]
        >>> [len(d) for d in ThresholdedDetector(Stub(), 0.5, None).detect([None], [["cat"]])]
        [1]
    """

    def __init__(self, detector: Any, box_threshold: float | None,
                 text_threshold: float | None) -> None:
        self.detector = detector
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold

    def detect(self, images: Sequence[np.ndarray],
               prompts: Sequence[Sequence[str]]) -> list[sv.Detections]:
        return [self._keep(det) for det in self.detector.detect(images, prompts)]

    def _keep(self, det: sv.Detections) -> sv.Detections:
        if len(det) == 0:
            return det
        keep = np.ones(len(det), dtype=bool)
        if self.box_threshold is not None and det.confidence is not None:
            keep &= det.confidence >= self.box_threshold
        text_score = det.data.get("text_score")
        if self.text_threshold is not None and text_score is not None:
            keep &= np.asarray(text_score, dtype=float) >= self.text_threshold
        return det if keep.all() else det[keep]


def threshold_of(stage: Any, name: str) -> float | None:
    """A stage's numeric threshold attribute ``name``, or ``None`` when it has none."""
    value = getattr(stage, name, None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
