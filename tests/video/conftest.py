"""Fixtures of the video tests: one small moving-shapes clip, as a video file and as frames."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_clip():
    from ovperc.shapes.motion import generate_clip

    return generate_clip(seed=5, frames=16, size=(96, 72), radius=(9.0, 14.0))


@pytest.fixture(scope="session")
def small_video(small_clip, tmp_path_factory) -> Path:
    from ovperc.shapes.motion import write_clip_video

    return write_clip_video(small_clip, tmp_path_factory.mktemp("video") / "clip.mp4")
