"""The demo's Video tab in a real headless Chromium: upload a clip, track, watch the result.

Needs ``pip install playwright`` and ``apt-get install chromium``; skipped without them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

import ovperc
from ovperc.demo import build_app
from tests.demo.test_browser import ARTIFACTS, _only_local, _open, _serve, chromium_browser  # noqa: F401
from tests.video.colour_stages import COLOURS, frames

pytestmark = pytest.mark.browser


class NearColourDetector:
    """Boxes of the pixels close to each prompt's colour (survives lossy video coding)."""

    def detect(self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]) -> list[sv.Detections]:
        out = []
        for image, names in zip(images, prompts):
            boxes, ids = [], []
            for index, name in enumerate(names):
                near = np.abs(image.astype(int) - np.array(COLOURS[name])).sum(axis=2) < 120
                ys, xs = np.nonzero(near)
                if len(xs) > 20:
                    boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
                    ids.append(index)
            out.append(sv.Detections(xyxy=np.array(boxes, np.float32).reshape(-1, 4),
                                     confidence=np.full(len(ids), 0.9, np.float32),
                                     class_id=np.array(ids, dtype=int)))
        return out


class BrightSegmenter:
    """Like SAM, the whole object a box prompts: every bright blob that reaches into the box."""

    def segment(self, images: Sequence[np.ndarray],
                detections: Sequence[sv.Detections]) -> list[sv.Detections]:
        out = []
        for image, det in zip(images, detections):
            from scipy import ndimage

            blobs, _ = ndimage.label(image.max(axis=2) > 80)
            masks = np.zeros((len(det), *image.shape[:2]), bool)
            for row, (x1, y1, x2, y2) in enumerate(np.round(det.xyxy).astype(int)):
                inside = set(np.unique(blobs[max(y1, 0):y2, max(x1, 0):x2]).tolist()) - {0}
                masks[row] = np.isin(blobs, list(inside))
            det = det[:] if len(det) else sv.Detections(xyxy=np.zeros((0, 4), np.float32))
            det.mask = masks
            out.append(det)
        return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ovperc.video.encode import VideoEncoder

    red = [(10 + 4 * i, 20) for i in range(16)]
    blue = [None] * 6 + [(150 - 4 * i, 70) for i in range(10)]
    path = tmp_path_factory.mktemp("clip") / "squares.mp4"
    with VideoEncoder(path, fps=8, size=(192, 128), quality=12) as video:
        for image in frames(16, {"red square": red, "blue square": blue}, size=(192, 128), side=24):
            video.write(image)
    return path


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    app = build_app(ovperc.Pipeline(detector=NearColourDetector(), segmenter=BrightSegmenter()))
    yield _serve(app)
    app.close()


def test_upload_a_clip_and_watch_it_tracked(chromium_browser: object, server: str,  # noqa: F811
                                            clip: Path):
    page = _open(chromium_browser, server)
    try:
        page.get_by_role("tab", name="Video").click()
        page.locator("#input-video input[type=file]").set_input_files(str(clip))
        page.locator("#input-video video").first.wait_for(timeout=30_000)
        page.locator("#video-classes textarea").fill("red square, blue square")
        page.locator("#video-run").click()
        page.locator("#video-status", has_text="Tracked 2 objects").wait_for(timeout=60_000)
        video = page.locator("#tracked-video video").first
        video.wait_for(timeout=30_000)
        duration = video.evaluate(
            "v => new Promise(done => v.readyState >= 1 ? done(v.duration) : "
            "v.addEventListener('loadedmetadata', () => done(v.duration)))")
        assert duration == pytest.approx(2.0, abs=0.3)  # 16 frames at 8 fps, playable in the page
        assert "blue square 1, red square 1" in page.locator("#video-status").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "demo-video.png"), full_page=True)
        assert _only_local(page.requests) == []
        assert page.console_errors == []
    finally:
        page.context.close()
