"""A tracker that knows the answer: it yields a moving-shapes clip's ground truth, so the
writers, the resume logic and the CLI are tested apart from any model."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ovperc.shapes.motion import MovingClip
from ovperc.shapes.world import CLASSES
from ovperc.video.types import FrameTracks, VideoFrame


class OracleTracker:
    """Yields the clip's exact tracks for each frame it is given, their ids shifted to start at
    ``first_id`` like a real tracker's."""

    def __init__(self, clip: MovingClip, *, fail_at: int | None = None) -> None:
        self.clip = clip
        self.fail_at = fail_at
        self.calls: list[int] = []

    def __repr__(self) -> str:
        return f"OracleTracker(seed={self.clip.seed})"

    def track(self, frames: Iterable[VideoFrame], classes=None, *, tag_merge: bool = False,
              first_id: int = 1) -> Iterator[FrameTracks]:
        first = None
        for position, frame in enumerate(frames):
            if first is None:
                first = frame.index
                self.calls.append(first)
            if self.fail_at is not None and frame.index == self.fail_at:
                raise KeyboardInterrupt("stopped by the test")
            truth = self.clip.frame(frame.index).detections()
            truth.tracker_id = truth.tracker_id + first_id - 1
            yield FrameTracks(frame.index, frame.timestamp, frame.size, truth, position % 4 == 0,
                              list(CLASSES))
