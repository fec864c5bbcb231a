"""The two values that cross every video module: a decoded frame, and the tracks in it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import supervision as sv


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame of a video, a folder of frames or a stream.

    Attributes:
        index: 0-based position of the frame in its source (kept when frames are skipped,
            so ``index`` always names the same frame of the same file).
        image: ``HxWx3`` ``uint8`` RGB pixels.
        timestamp: seconds from the start of the source, when the container knows it
            (variable frame rate videos have irregular steps); ``None`` otherwise.

    Example:
        >>> frame = VideoFrame(0, np.zeros((4, 6, 3), np.uint8), 0.0)
        >>> frame.size
        (6, 4)
    """

    index: int
    image: np.ndarray
    timestamp: float | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the frame in pixels."""
        height, width = self.image.shape[:2]
        return int(width), int(height)


@dataclass
class FrameTracks:
    """What is tracked in one frame.

    Attributes:
        index: the frame's :attr:`VideoFrame.index`.
        timestamp: the frame's :attr:`VideoFrame.timestamp`.
        size: ``(width, height)`` of the frame.
        detections: ``supervision.Detections`` with ``xyxy`` (pixels), ``tracker_id``
            (ints from 1, stable for as long as the object is tracked, never reused),
            ``class_id``, ``confidence`` (the score of the detection that started or last
            confirmed the track), ``mask`` (``N x H x W`` bool) when a segmenter ran, and
            ``data["class_name"]``.
        keyframe: whether the detector ran on this frame.
        class_names: the run's classes; ``class_id`` indexes this list.

    Example:
        >>> import supervision as sv
        >>> tracks = FrameTracks(3, 0.1, (640, 480), sv.Detections.empty(), False, ["car"])
        >>> len(tracks.detections)
        0
    """

    index: int
    timestamp: float | None
    size: tuple[int, int]
    detections: sv.Detections
    keyframe: bool
    class_names: list[str]
