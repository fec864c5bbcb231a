"""The demo's Video tab: upload a short clip, name the classes, watch every object tracked.

:class:`VideoDemo` does one request without any web framework (read at most
:attr:`VideoLimits.max_frames` frames, downscaled to :attr:`VideoLimits.max_side`, track
them with a :class:`~ovperc.Tracker` over the demo's loaded pipeline, write the annotated
clip and the MOT tracks into the demo's work folder); :func:`add_video_tab` lays out the
tab and turns its results and :class:`~ovperc.demo.core.DemoInputError` messages into page
updates. The files it returns are ones the demo wrote, in the demo's own work folder.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ovperc.demo.core import DemoInputError, DemoRunner, RunOptions, _safe_stem
from ovperc.demo.guide import split_classes

if TYPE_CHECKING:
    from ovperc.video.types import VideoFrame

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoLimits:
    """What the Video tab accepts.

    Attributes:
        max_frames: frames tracked at most (the rest of a longer clip is left out, and the
            page says so).
        max_side: frames with a longer side are downscaled to it before tracking.
        detect_every: the detector runs on one frame in this many.
        max_lost: frames a track may go unseen before it ends.

    Example:
        >>> VideoLimits(max_frames=60).max_frames
        60
    """

    max_frames: int = 120
    max_side: int = 640
    detect_every: int = 5
    max_lost: int = 15

    def __post_init__(self) -> None:
        for name in ("max_frames", "max_side", "detect_every", "max_lost"):
            if getattr(self, name) < 1:
                raise ValueError(f"VideoLimits.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class VideoResult:
    """One tracked clip.

    Attributes:
        video_path: the annotated clip (H.264 MP4) in the demo's work folder.
        tracks_path: the MOT-challenge ``tracks.txt`` beside it.
        frames: frames tracked.
        tracks: tracks per class.
        seconds: time spent tracking.
        note: what the page should add (frames left out, downscaling), or ``""``.
    """

    video_path: Path
    tracks_path: Path
    frames: int
    tracks: dict[str, int]
    seconds: float
    note: str = ""

    def summary(self) -> str:
        """The page's status line (Markdown)."""
        total = sum(self.tracks.values())
        kinds = ", ".join(f"{name} {n}" for name, n in self.tracks.items()) or "none"
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        lines = [f"**Tracked {total} object{'s' * (total != 1)}** ({kinds}) over {self.frames} frames "
                 f"in {self.seconds:.1f} s ({rate:.1f} frames/s)."]
        if self.note:
            lines.append(self.note)
        return "\n\n".join(lines)


class VideoDemo:
    """Runs Video tab requests on a :class:`~ovperc.demo.core.DemoRunner`'s pipeline.

    Args:
        runner: the demo's runner (its pipeline, work folder, limits and guide).
        limits: what the tab accepts.

    Example:
        >>> VideoDemo(runner).run("clip.mp4", "person, car").video_path  # doctest: +SKIP
        PosixPath('/tmp/ovperc-demo-x1/clip-3f2a9c1e-tracked.mp4')
    """

    def __init__(self, runner: DemoRunner, limits: VideoLimits | None = None) -> None:
        self.runner = runner
        self.limits = limits or VideoLimits()

    @property
    def available(self) -> bool:
        """Whether the pipeline can track: it needs a detector and a segmenter."""
        return self.runner.has_detector and self.runner.has_segmenter

    def run(self, source: str | Path | None, classes: str, name: str | None = None) -> VideoResult:
        """Track one uploaded clip and write its files.

        Raises:
            DemoInputError: no clip, a file that is not a readable video, no classes and no
                tagger, or a pipeline that cannot track.
        """
        from ovperc.video.reader import VideoError, probe_video, read_frames
        from ovperc.video.tracker import Tracker

        if source is None:
            raise DemoInputError("Upload a short video clip first.")
        if not self.available:
            raise DemoInputError("This demo's pipeline has no detector and segmenter to track with.")
        shown = name or Path(source).name
        try:
            info = probe_video(source)
            if info.kind != "video":
                raise VideoError(f"{shown}: not a video file")
        except VideoError as error:
            raise DemoInputError(f"{shown} cannot be read as a video: {_reason(error, source)}") from None
        # the tagger runs only when it must name the classes; CLIP is left out for speed
        options = RunOptions(classes=classes, classify=False, tagging=not split_classes(classes))
        ontology = self.runner.ontology(classes, options)
        view = self.runner.view(options)
        tracker = Tracker(view, detect_every=self.limits.detect_every, max_lost=self.limits.max_lost)
        scale = min(1.0, self.limits.max_side / max(info.size))
        size = _scaled(info.size, scale)
        stem = f"{_safe_stem(shown)}-{uuid.uuid4().hex[:8]}"
        video_path, tracks_path = self.runner.result_paths(f"{stem}-tracked.mp4", f"{stem}-tracks.txt")
        reader = read_frames(source, max_frames=self.limits.max_frames)
        start = time.perf_counter()
        try:
            frames, first_class, lines = self._track(tracker, reader, ontology, scale, size, info.fps,
                                                     video_path)
        except ValueError as error:
            raise DemoInputError(f"The tracker refused this clip: {error}") from error
        seconds = time.perf_counter() - start
        if frames == 0:
            raise DemoInputError(f"No frame of {shown} could be decoded.")
        tracks_path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        counts: dict[str, int] = {}
        for class_name in first_class.values():
            counts[class_name] = counts.get(class_name, 0) + 1
        notes = []
        if info.frames is not None and info.frames > frames:
            notes.append(f"The demo tracks the first {frames} of the clip's {info.frames} frames.")
        if scale < 1.0:
            notes.append(f"Frames were downscaled from {info.size[0]}x{info.size[1]} to {size[0]}x{size[1]}.")
        if reader.messages:
            notes.append(" ".join(reader.messages[:3]))
        return VideoResult(video_path, tracks_path, frames, dict(sorted(counts.items())), seconds,
                           " ".join(notes))

    def _track(self, tracker: Any, reader: Any, ontology: Any, scale: float, size: tuple[int, int],
               fps: float | None, video_path: Path) -> tuple[int, dict[int, str], list[str]]:
        from ovperc.video.encode import VideoEncoder
        from ovperc.video.writers import TrackAnnotator, class_names_of, mot_lines

        stash: dict[int, VideoFrame] = {}

        def frames() -> Any:
            for frame in reader:
                frame = _resized(frame, scale, size)
                stash[frame.index] = frame
                yield frame

        annotator = TrackAnnotator()
        first_class: dict[int, str] = {}
        lines: list[str] = []
        count = 0
        with VideoEncoder(video_path, fps=fps or 10.0, size=size) as encoder:
            for tracks in tracker.track(frames(), ontology):
                frame = stash.pop(tracks.index)
                encoder.write(annotator.draw(frame.image, tracks))
                lines.extend(mot_lines(tracks))
                ids = tracks.detections.tracker_id if len(tracks.detections) else []
                for track_id, class_name in zip(ids, class_names_of(tracks)):
                    first_class.setdefault(int(track_id), class_name)
                count += 1
        return count, first_class, lines


def add_video_tab(gr: Any, demo: VideoDemo, *, concurrency_limit: int, placeholder: str) -> None:
    """Lay out the Video tab inside the current ``gr.Blocks`` and wire its Run button.

    Example:
        >>> with gr.Blocks() as app:  # doctest: +SKIP
        ...     add_video_tab(gr, VideoDemo(runner), concurrency_limit=1, placeholder="person, car")
    """
    from gradio.utils import get_upload_folder

    from ovperc.demo import api

    limits = demo.limits
    with gr.Tab("Video", id="video-tab", elem_id="video-tab"):
        gr.Markdown(f"Upload a short clip and name what to follow: the detector runs on one frame in "
                    f"{limits.detect_every}, SAM carries every object's mask between them, and each "
                    f"object keeps its id (`#id class`). The first {limits.max_frames} frames are "
                    f"tracked, at most {limits.max_side} pixels wide.", elem_id="video-intro")
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                clip = gr.Video(label="Clip", sources=["upload"], elem_id="input-video", height=300)
                classes = gr.Textbox(label="Classes", lines=1, elem_id="video-classes",
                                     placeholder=placeholder, info="separated by commas")
                run = gr.Button("Track", variant="primary", elem_id="video-run")
            with gr.Column(scale=6):
                status = gr.Markdown("The tracked clip appears here.", elem_id="video-status")
                tracked = gr.Video(label="Tracked", interactive=False, elem_id="tracked-video", height=360)
                tracks_file = gr.DownloadButton("Download tracks.txt (MOT)", interactive=False,
                                                elem_id="download-tracks")

        def on_track(upload: Any, text: Any) -> tuple:
            try:
                path, name = api.check_upload(upload, get_upload_folder())
                classes_text = api.text(text, "classes")
            except api.RequestError as error:
                raise api.refuse(gr, str(error)) from None
            try:
                result = demo.run(path, classes_text, name=name)
            except DemoInputError as error:
                gr.Warning(str(error))
                return f"**Cannot run:** {error}", None, gr.DownloadButton(value=None, interactive=False)
            except Exception as error:  # the page must explain, never hang
                logger.exception("video request failed")
                message = (f"**Something went wrong while tracking** ({type(error).__name__}: {error}). "
                           "The server log has the details.")
                gr.Warning(message)
                return message, None, gr.DownloadButton(value=None, interactive=False)
            return (result.summary(), str(result.video_path),
                    gr.DownloadButton(value=str(result.tracks_path), interactive=True))

        run.click(on_track, inputs=[clip, classes], outputs=[status, tracked, tracks_file],
                  api_name="track", preprocess=False, concurrency_limit=concurrency_limit)


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(2, int(round(size[0] * scale))), max(2, int(round(size[1] * scale)))


def _resized(frame: VideoFrame, scale: float, size: tuple[int, int]) -> VideoFrame:
    if scale >= 1.0:
        return frame
    import cv2

    from ovperc.video.types import VideoFrame

    image = cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA)
    return VideoFrame(frame.index, np.ascontiguousarray(image), frame.timestamp)


def _reason(error: Exception, source: Any) -> str:
    """An error message without the server's path of the upload."""
    return str(error).replace(str(source), "the file").removeprefix("the file: ")
