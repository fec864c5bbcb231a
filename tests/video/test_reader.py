"""Streaming frames in: video files, folders of frames, and what goes wrong with them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ovperc.video.reader import VideoError, natural_key, probe_video, read_frames


def _mkv(video, target):
    """The same packets in Matroska, whose header comes first (so a cut file still opens)."""
    import av

    with av.open(str(video)) as source, av.open(str(target), "w") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return target


def test_video_frames_stream_in_order_with_timestamps(small_video, small_clip):
    info = probe_video(small_video)
    assert (info.kind, info.size, info.fps, info.frames) == ("video", (96, 72), 10.0, 16)
    frames = list(read_frames(small_video))
    assert [f.index for f in frames] == list(range(16))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10 for i in range(16)])
    error = np.abs(frames[6].image.astype(int) - small_clip.frame(6).image.astype(int)).mean()
    assert error < 6  # a lossy codec, but the same picture


def test_stride_start_and_max_frames(small_video):
    frames = list(read_frames(small_video, stride=3, start=2, max_frames=4))
    assert [f.index for f in frames] == [2, 5, 8, 11]
    assert frames[1].timestamp == pytest.approx(0.5)


def test_folder_in_natural_order_skipping_other_files(tmp_path, small_clip):
    for i in (0, 2, 10):
        Image.fromarray(small_clip.frame(i).image).save(tmp_path / f"f{i}.png")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "f5.jpg").write_bytes(b"not a jpeg")
    reader = read_frames(tmp_path)
    frames = list(reader)
    assert [f.index for f in frames] == [0, 1, 3]  # f0, f2, (f5 broken), f10
    assert np.array_equal(frames[2].image, small_clip.frame(10).image)
    assert reader.skipped == 1
    assert any("notes.txt" in m for m in reader.messages)
    assert any("frame 2 skipped" in m and "f5.jpg" in m for m in reader.messages)


def test_truncated_file_ends_cleanly_with_a_message(tmp_path, small_video):
    whole = _mkv(small_video, tmp_path / "whole.mkv").read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole[: len(whole) // 2])
    reader = read_frames(cut)
    frames = list(reader)
    assert 0 < len(frames) < 16
    assert any("truncated" in m and f"after {len(frames)} of the 16" in m for m in reader.messages)


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("missing.mp4", None, "file not found"),
    ("empty.mp4", b"", "empty file"),
    ("text.mp4", b"this is not a video at all" * 20, "not a video FFmpeg can read"),
])
def test_unreadable_sources_fail_before_any_frame(tmp_path, name, content, reason):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoError, match=reason):
        read_frames(path)


def test_folder_without_images(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(VideoError, match="no image files"):
        read_frames(tmp_path)


def test_unopenable_stream():
    with pytest.raises(VideoError, match="cannot open stream"):
        read_frames("rtsp://127.0.0.1:9/none", max_frames=1).__iter__().__next__()


def test_natural_key():
    assert sorted(["b10", "b9", "a100", "B1"], key=natural_key) == ["a100", "B1", "b9", "b10"]


def test_variable_frame_rate_keeps_the_containers_timestamps(tmp_path):
    from fractions import Fraction

    import av

    path = tmp_path / "vfr.mkv"
    steps = [0, 1, 3, 4, 8, 9]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 10)
        for i, pts in enumerate(steps):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 20 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 10)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    frames = list(read_frames(path))
    assert [f.timestamp for f in frames] == pytest.approx([s / 10 for s in steps])
    assert [f.index for f in frames] == list(range(len(steps)))


def test_odd_sizes_and_fractional_rates_encode(tmp_path):
    from ovperc.video.encode import VideoEncoder

    images = [np.full((31, 45, 3), 40 * i, np.uint8) for i in range(5)]
    with VideoEncoder(tmp_path / "odd.mp4", fps=29.97, size=(45, 31)) as video:
        for image in images:
            video.write(image)
    info = probe_video(tmp_path / "odd.mp4")
    assert info.size == (46, 32) and info.fps == pytest.approx(29.97, abs=0.01)  # padded to even
    back = list(read_frames(tmp_path / "odd.mp4"))
    assert len(back) == 5 and abs(int(back[3].image[:31, :45].mean()) - 120) < 4
    with pytest.raises(ValueError, match="frame of 10x10 pixels"), \
            VideoEncoder(tmp_path / "bad.mp4", fps=10, size=(45, 31)) as video:
        video.write(np.zeros((10, 10, 3), np.uint8))
    assert not (tmp_path / "bad.mp4").exists() and not list(tmp_path.glob(".bad.mp4*"))
