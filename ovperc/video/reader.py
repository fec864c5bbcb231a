"""Streaming frames from a video file, a folder of frames, or a camera/stream.

Frames are decoded one at a time (never the whole video in memory):

* a video file (anything FFmpeg reads: mp4, mkv, avi, mov, webm, ...) through PyAV, with
  each frame's timestamp from the container, so variable frame rate videos keep their
  real timing;
* a folder of frames: image files in natural order (``frame2`` before ``frame10``), each
  decoded by :func:`ovperc.image.load_image` (EXIF orientation, odd modes); other files
  are reported and skipped;
* in Python, a camera index (``0``) or a stream URL (``rtsp://...``) through OpenCV.

A frame that cannot be decoded is skipped with a warning and counted
(:attr:`FrameReader.skipped`); a file that ends early (truncated) ends the stream cleanly
with a message (:attr:`FrameReader.messages`); a source that cannot be opened at all
raises :class:`VideoError` at once, before any model is loaded.

Example:
    >>> reader = read_frames("clip.mp4", stride=2)  # doctest: +SKIP
    >>> for frame in reader:  # doctest: +SKIP
    ...     print(frame.index, frame.timestamp, frame.size)
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ovperc.image import ImageError, load_image
from ovperc.labeling.scan import is_image_name
from ovperc.video.types import VideoFrame

logger = logging.getLogger(__name__)

#: URL schemes opened as a stream with OpenCV.
STREAM_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")

VideoSource = str | os.PathLike | int


class VideoError(ValueError):
    """A video source that cannot be read; the message says which and why."""


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a source before decoding it.

    Attributes:
        kind: ``"video"``, ``"folder"`` or ``"stream"``.
        size: ``(width, height)`` of the frames (the first frame's, for a folder).
        fps: average frames per second when the container says (``None`` for a folder).
        frames: number of frames when known (the container's count, or the folder's images).
        duration: seconds, when known.

    Example:
        >>> probe_video("clip.mp4")  # doctest: +SKIP
        VideoInfo(kind='video', size=(1280, 720), fps=29.97, frames=300, duration=10.01)
    """

    kind: str
    size: tuple[int, int]
    fps: float | None
    frames: int | None
    duration: float | None = None


def natural_key(name: str) -> tuple:
    """Sort key that orders numbers by value: ``frame2`` before ``frame10``.

    Example:
        >>> sorted(["f10.png", "f2.png", "f1.png"], key=natural_key)
        ['f1.png', 'f2.png', 'f10.png']
    """
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", name) if part)


def _kind(source: VideoSource) -> str:
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return "stream"
    if isinstance(source, str) and source.lower().startswith(STREAM_SCHEMES):
        return "stream"
    return "folder" if Path(source).is_dir() else "video"


def probe_video(source: VideoSource) -> VideoInfo:
    """Open ``source`` and say what it holds, without decoding more than one frame.

    Raises:
        VideoError: the source does not exist or cannot be read as a video or frames.

    Example:
        >>> probe_video("frames/").kind  # doctest: +SKIP
        'folder'
    """
    kind = _kind(source)
    if kind == "folder":
        files, _ = _folder_files(Path(source))
        for path in files:
            try:
                image = load_image(path)
            except ImageError:
                continue
            return VideoInfo("folder", (image.shape[1], image.shape[0]), None, len(files))
        raise VideoError(f"{source}: no readable image in the folder (frames must be image files: "
                         "jpg, png, bmp, webp, tif)")
    if kind == "stream":
        capture = _open_capture(source)
        try:
            width = int(capture.get(3))
            height = int(capture.get(4))
            fps = float(capture.get(5)) or None
        finally:
            capture.release()
        return VideoInfo("stream", (width, height), fps, None)
    container = _open_container(source)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else None
        duration = _duration(stream, container)
        size = (int(stream.codec_context.width), int(stream.codec_context.height))
        if not all(size):
            raise VideoError(f"{source}: the video stream has no frame size (a broken header)")
        return VideoInfo("video", size, fps, _frame_count(stream, container), duration)
    finally:
        container.close()


def _duration(stream, container) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None if container.duration is None else container.duration / 1_000_000


def _frame_count(stream, container) -> int | None:
    """The container's frame count, or its duration times its average rate."""
    if stream.frames:
        return int(stream.frames)
    duration = _duration(stream, container)
    if stream.average_rate and duration:
        return int(round(float(stream.average_rate) * duration))
    return None


class FrameReader:
    """An iterable of :class:`~ovperc.video.types.VideoFrame` over one source.

    Iterating decodes the source again from its start (a stream: from now). After (or
    during) iteration, :attr:`skipped` counts frames that could not be decoded and
    :attr:`messages` says what went wrong, in words.

    Args:
        source: a video file, a folder of frames, a camera index or a stream URL.
        stride: keep every ``stride``-th frame (indices keep their place in the source).
        start: first frame index to keep.
        max_frames: stop after this many kept frames.

    Example:
        >>> frames = FrameReader("clip.mp4", max_frames=10)  # doctest: +SKIP
        >>> [f.index for f in frames]  # doctest: +SKIP
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """

    def __init__(self, source: VideoSource, *, stride: int = 1, start: int = 0,
                 max_frames: int | None = None) -> None:
        if stride < 1:
            raise ValueError(f"stride must be 1 or more, got {stride}")
        if start < 0:
            raise ValueError(f"start must be 0 or more, got {start}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be 1 or more, got {max_frames}")
        self.source = source
        self.kind = _kind(source)
        self.stride = stride
        self.start = start
        self.max_frames = max_frames
        self.skipped = 0
        self.messages: list[str] = []

    def __iter__(self) -> Iterator[VideoFrame]:
        self.skipped = 0
        self.messages = []
        kept = 0
        decode = {"video": self._video, "folder": self._folder, "stream": self._stream}[self.kind]
        for index, produce in decode():
            if index < self.start or (index - self.start) % self.stride:
                continue
            frame = produce()
            if frame is None:
                continue
            yield frame
            kept += 1
            if self.max_frames is not None and kept >= self.max_frames:
                return

    def skip(self, message: str) -> None:
        """Count a frame a consumer could not use (it is reported with the reader's own).

        Example:
            >>> reader.skip("frame 7 skipped: 640x360, not the video's 1280x720")  # doctest: +SKIP
        """
        self._problem(message)

    def _problem(self, message: str, *, skipped: bool = True) -> None:
        logger.warning("%s", message)
        self.messages.append(message)
        self.skipped += int(skipped)

    # ------------------------------------------------------------------ video files
    def _video(self) -> Iterator[tuple[int, object]]:
        import av

        container = _open_container(self.source)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            expected = _frame_count(stream, container)
            index = 0
            base = None
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.FFmpegError as error:
                    self._problem(f"{self.source}: a corrupt frame near frame {index} was skipped ({error})")
                    continue
                for frame in decoded:
                    seconds = None if frame.time is None else float(frame.time)
                    if seconds is not None:
                        base = seconds if base is None else base
                        seconds = round(seconds - base, 6)
                    yield index, _lazy_video_frame(index, frame, seconds)
                    index += 1
        except av.FFmpegError as error:
            self._problem(f"{self.source}: decoding stopped after {index} frames ({error}); the file "
                          "may be truncated or damaged", skipped=False)
            return
        finally:
            container.close()
        if expected is not None and index < expected * 0.98 - 1:
            self._problem(f"{self.source}: the file ends after {index} of the {expected} frames its "
                          "header announces (a truncated or damaged file?)", skipped=False)

    # ------------------------------------------------------------------ folders
    def _folder(self) -> Iterator[tuple[int, object]]:
        files, others = _folder_files(Path(self.source))
        if others:
            shown = ", ".join(others[:5]) + (" ..." if len(others) > 5 else "")
            self._problem(f"{self.source}: {len(others)} files that are not images were skipped ({shown})",
                          skipped=False)
        for index, path in enumerate(files):
            def produce(index: int = index, path: Path = path) -> VideoFrame | None:
                try:
                    return VideoFrame(index, load_image(path), None)
                except ImageError as error:
                    self._problem(f"frame {index} skipped: {error}")
                    return None
            yield index, produce

    # ------------------------------------------------------------------ cameras and streams
    def _stream(self) -> Iterator[tuple[int, object]]:
        import cv2

        capture = _open_capture(self.source)
        failures = 0
        index = 0
        try:
            while True:
                ok, image = capture.read()
                if not ok:
                    failures += 1
                    if failures >= 3:
                        self._problem(f"{self.source}: the stream ended or stopped sending frames",
                                      skipped=False)
                        return
                    continue
                failures = 0
                msec = capture.get(cv2.CAP_PROP_POS_MSEC)
                rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
                seconds = msec / 1000 if msec and msec > 0 else None
                yield index, (lambda i=index, im=rgb, s=seconds: VideoFrame(i, im, s))
                index += 1
        finally:
            capture.release()


def read_frames(source: VideoSource, *, stride: int = 1, start: int = 0,
                max_frames: int | None = None) -> FrameReader:
    """Stream the frames of ``source`` (see :class:`FrameReader`), checking it opens first.

    Raises:
        VideoError: the source does not exist or cannot be opened (raised here, before
            any frame is decoded).

    Example:
        >>> for frame in read_frames("frames/", stride=5):  # doctest: +SKIP
        ...     print(frame.index, frame.image.shape)
    """
    reader = FrameReader(source, stride=stride, start=start, max_frames=max_frames)
    if reader.kind != "stream":
        probe_video(source)
    return reader


def _lazy_video_frame(index: int, frame: object, seconds: float | None):
    def produce() -> VideoFrame:
        return VideoFrame(index, frame.to_ndarray(format="rgb24"), seconds)  # type: ignore[attr-defined]
    return produce


def _folder_files(folder: Path) -> tuple[list[Path], list[str]]:
    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError as error:
        raise VideoError(f"{folder}: cannot list the folder ({error.strerror or error})") from None
    files = sorted((p for p in entries if p.is_file() and is_image_name(p.name)),
                   key=lambda p: natural_key(p.name))
    others = sorted(p.name for p in entries if not (p.is_file() and is_image_name(p.name)))
    if not files:
        raise VideoError(f"{folder}: the folder holds no image files (frames must be jpg, png, bmp, "
                         "webp or tif files)")
    return files, others


def _open_container(source: VideoSource):
    import av

    path = Path(source)
    if not path.exists():
        raise VideoError(f"{source}: file not found")
    if not path.is_file():
        raise VideoError(f"{source}: not a regular file, nor a folder of frames")
    if path.stat().st_size == 0:
        raise VideoError(f"{source}: empty file (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise VideoError(f"{source}: not a video FFmpeg can read, or a truncated or damaged one "
                         f"({error})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{source}: the file holds no video stream")
    return container


def _open_capture(source: VideoSource):
    import cv2

    target: int | str = int(source) if isinstance(source, int) or str(source).isdigit() else str(source)
    capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        capture.release()
        what = f"camera {target}" if isinstance(target, int) else f"stream {target}"
        raise VideoError(f"cannot open {what} (check the index or URL, and that nothing else uses it)")
    return capture

