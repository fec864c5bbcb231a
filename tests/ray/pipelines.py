"""Pipelines the Ray actors build from a picklable factory (this module is imported there)."""

from __future__ import annotations

import os
from pathlib import Path

from ovperc import Pipeline
from tests.labeling.fakes import FakeDetector, FakeSegmenter


class DyingDetector(FakeDetector):
    """Kills its whole process on the first call made by any process (``marker`` records it)."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def detect(self, images, prompts):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().detect(images, prompts)
        os.close(fd)
        os._exit(1)  # the worker dies as in an out-of-memory kill: no exception, no cleanup


def fake_pipeline(fail_on_width: int | None = None, die_marker: str | Path | None = None) -> Pipeline:
    """The fake detect+segment chain; optionally failing on a width or dying once."""
    detector = FakeDetector(fail_on_width) if die_marker is None else DyingDetector(str(die_marker))
    return Pipeline(detector=detector, segmenter=FakeSegmenter())


class AlwaysDyingDetector(FakeDetector):
    """Kills its process on every call, as a batch that always runs out of memory would."""

    def detect(self, images, prompts):
        os._exit(1)


def doomed_pipeline() -> Pipeline:
    """A detect chain whose worker dies on every batch."""
    return Pipeline(detector=AlwaysDyingDetector())


def box_filler_pipeline() -> Pipeline:
    """The chain of a segment job with the deterministic test segmenter."""
    from tests.datasets.test_segment import BoxFiller

    return Pipeline(segmenter=BoxFiller(), nms="none")
