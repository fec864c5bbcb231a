"""Writing frames to a video file that browsers play (H.264 in MP4, through PyAV), and
joining such files without re-encoding.

The file is written beside its target under a temporary name and renamed into place when
the encoder closes cleanly, so a killed run never leaves half a video under the real name.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np

from ovperc.atomic import TEMP_SUFFIX, temp_prefix

#: Codecs tried in order: H.264 plays in every browser; MPEG-4 part 2 is the fallback.
CODECS = ("libx264", "h264", "mpeg4")


class VideoEncoder:
    """Encode RGB frames to an MP4 file, one frame at a time.

    Frames with an odd width or height are padded by one black pixel (H.264 in 4:2:0 needs
    even sizes). Use it as a context manager: the file appears under ``path`` only when
    the block ends without an error.

    Args:
        path: the ``.mp4`` file to write.
        fps: frames per second (may be fractional, e.g. 29.97).
        size: ``(width, height)`` of the frames that will be written.
        quality: constant rate factor for x264 (0 lossless, 23 its default; lower is better).

    Example:
        >>> with VideoEncoder("out.mp4", fps=10, size=(64, 48)) as video:  # doctest: +SKIP
        ...     video.write(np.zeros((48, 64, 3), np.uint8))
    """

    def __init__(self, path: str | os.PathLike, *, fps: float, size: tuple[int, int],
                 quality: int = 20) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be above 0, got {fps}")
        self.path = Path(path)
        self.size = (int(size[0]), int(size[1]))
        self.fps = fps
        self.quality = quality
        self.frames = 0
        self._tmp = temporary_path(self.path)
        self._container = None
        self._stream = None

    def __enter__(self) -> VideoEncoder:
        self.open()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(keep=kind is None)

    def open(self) -> None:
        """Create the temporary file and the video stream."""
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        rate = Fraction(self.fps).limit_denominator(1001)
        width, height = (v + v % 2 for v in self.size)
        for name in CODECS:
            try:
                stream = self._container.add_stream(name, rate=rate)
            except (av.FFmpegError, ValueError):  # codec missing from this FFmpeg build
                continue
            break
        else:  # pragma: no cover - every FFmpeg build has mpeg4
            raise RuntimeError(f"none of the video codecs {CODECS} is available in PyAV")
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if name == "libx264":
            stream.options = {"crf": str(self.quality), "preset": "veryfast"}
        else:
            stream.bit_rate = 4_000_000
        self._stream = stream

    def write(self, image: np.ndarray) -> None:
        """Encode one ``HxWx3`` RGB ``uint8`` frame of the encoder's size."""
        import av

        if self._stream is None:
            raise RuntimeError("the encoder is not open; use it in a `with` block")
        height, width = image.shape[:2]
        if (width, height) != self.size:
            raise ValueError(f"frame of {width}x{height} pixels in a video of {self.size[0]}x{self.size[1]}")
        if width % 2 or height % 2:
            image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self, *, keep: bool = True) -> None:
        """Flush and close; with ``keep`` the file is renamed into place, else removed."""
        if self._container is None:
            return
        try:
            if keep:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        finally:
            self._container.close()
            self._container = self._stream = None
        if keep:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def temporary_path(target: Path) -> Path:
    """A temporary file name beside ``target``, named as :mod:`ovperc.atomic` names its own
    (so a killed run's leftovers are found and removed by the next run).

    Example:
        >>> temporary_path(Path("out/a.mp4")).name.startswith(".a.mp4.ovperc-")
        True
    """
    return target.parent / f"{temp_prefix(target.name)}{secrets.token_hex(4)}{TEMP_SUFFIX}"


def concat_videos(parts: Sequence[Path], target: Path) -> None:
    """Join MP4 pieces made by one :class:`~ovperc.video.encode.VideoEncoder` setting into
    ``target`` without re-encoding (their packets are copied, their times shifted).

    Example:
        >>> concat_videos([Path("a.mp4"), Path("b.mp4")], Path("ab.mp4"))  # doctest: +SKIP
    """
    import av

    if not parts:
        raise ValueError(f"no video pieces to join into {target}")
    tmp = temporary_path(target)
    output = av.open(str(tmp), mode="w", format="mp4")
    try:
        stream = None
        offset = 0
        for part in parts:
            with av.open(str(part)) as source:
                video = source.streams.video[0]
                if stream is None:
                    stream = output.add_stream_from_template(video)
                end = offset
                for packet in source.demux(video):
                    if packet.dts is None:
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    end = max(end, packet.pts + (packet.duration or 0))
                    packet.stream = stream
                    output.mux(packet)
                offset = end
        output.close()
    except BaseException:
        output.close()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
