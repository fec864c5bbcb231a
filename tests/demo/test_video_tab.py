"""The demo's Video tab: its handler without a browser, and the page's /track endpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ovperc
from ovperc.demo.core import DemoInputError, DemoRunner
from ovperc.demo.video import VideoDemo, VideoLimits
from tests.video.colour_stages import ColourDetector, ColourSegmenter, frames


def _lossless_video(images: list[np.ndarray], path: Path) -> Path:
    """Frames in an AVI file with PNG-coded pictures: the colours come back exact."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("png", rate=10)
        stream.width, stream.height, stream.pix_fmt = images[0].shape[1], images[0].shape[0], "rgb24"
        for image in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture
def clip(tmp_path) -> Path:
    red = [(4 + 3 * i, 10) for i in range(12)]
    blue = [None] * 5 + [(70 - 3 * i, 40) for i in range(7)]  # enters at frame 5
    return _lossless_video(frames(12, {"red square": red, "blue square": blue}), tmp_path / "squares.avi")


@pytest.fixture
def demo(tmp_path) -> VideoDemo:
    pipeline = ovperc.Pipeline(detector=ColourDetector(), segmenter=ColourSegmenter())
    return VideoDemo(DemoRunner(pipeline, workdir=tmp_path / "work"), VideoLimits(detect_every=2))


def test_a_clip_is_tracked_into_files_the_demo_wrote(demo, clip):
    from ovperc.video.reader import read_frames

    result = demo.run(str(clip), "red square, blue square", name="squares.avi")
    assert result.frames == 12 and result.tracks == {"blue square": 1, "red square": 1}
    assert result.summary().startswith("**Tracked 2 objects** (blue square 1, red square 1) over 12 frames")
    assert result.video_path.parent == demo.runner.workdir and result.video_path.suffix == ".mp4"
    assert len(list(read_frames(result.video_path))) == 12
    rows = [line.split(",") for line in result.tracks_path.read_text().splitlines()]
    ids_by_frame = {}
    for row in rows:
        ids_by_frame.setdefault(int(row[0]), set()).add(int(row[1]))
    assert ids_by_frame[1] == {1} and ids_by_frame[12] == {1, 2}  # the entering square: a new id


def test_long_clips_are_cut_and_large_frames_downscaled(tmp_path, clip):
    pipeline = ovperc.Pipeline(detector=ColourDetector(), segmenter=ColourSegmenter())
    demo = VideoDemo(DemoRunner(pipeline, workdir=tmp_path / "work"), VideoLimits(max_frames=4, max_side=48))
    result = demo.run(str(clip), "red square")
    assert result.frames == 4
    assert "first 4 of the clip's 12 frames" in result.note
    assert "downscaled from 96x64 to 48x32" in result.note


@pytest.mark.parametrize(("content", "classes", "message"), [
    (None, "red square", "Upload a short video clip"),
    (b"not a video at all" * 10, "red square", "notes.mp4 cannot be read as a video"),
    ("clip", "", "Type the classes to find"),
])
def test_requests_the_tab_refuses(demo, clip, tmp_path, content, classes, message):
    source = None
    if content == "clip":
        source = str(clip)
    elif content is not None:
        source = str(tmp_path / "upload.mp4")
        Path(source).write_bytes(content)
    with pytest.raises(DemoInputError, match=message) as caught:
        demo.run(source, classes, name="notes.mp4")
    assert str(tmp_path) not in str(caught.value)  # the server's paths stay private


def test_the_page_tracks_through_its_api(clip):
    gr = pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from ovperc.demo import build_app

    pipeline = ovperc.Pipeline(detector=ColourDetector(), segmenter=ColourSegmenter())
    app = build_app(pipeline, video_limits=VideoLimits(detect_every=3))
    with TestClient(gr.mount_gradio_app(FastAPI(), app, path="", max_file_size="50mb")) as client:
        response = client.post("/gradio_api/upload", files={"files": ("squares.avi", clip.read_bytes())})
        [path] = response.json()
        upload = {"path": path, "orig_name": "squares.avi", "meta": {"_type": "gradio.FileData"}}
        response = client.post("/gradio_api/run/track", json={"data": [upload, "red square, blue square"]})
        assert response.status_code == 200, response.text
        status, video, tracks = response.json()["data"]
        assert status.startswith("**Tracked 2 objects**")
        served = client.get(video["url"].replace("http://testserver", ""))
        assert served.status_code == 200 and served.content[4:8] == b"ftyp"
        assert client.get(tracks["value"]["url"].replace("http://testserver", "")).status_code == 200
        # a path that was not uploaded is refused
        response = client.post("/gradio_api/run/track", json={
            "data": [{"path": str(clip), "meta": {"_type": "gradio.FileData"}}, "red square"]})
        assert "was not uploaded to this server" in response.text
