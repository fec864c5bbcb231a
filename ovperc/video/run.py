"""A whole tracking run: frames in (:mod:`ovperc.video.reader`), a :class:`~ovperc.Tracker`,
outputs written chunk by chunk (:mod:`ovperc.video.output`), a report at the end.

Example:
    >>> tracker = ovperc.Tracker(ovperc.Pipeline.from_preset("detect+segment"))  # doctest: +SKIP
    >>> report = track_video(tracker, "street.mp4", "tracks/", classes="person, car")  # doctest: +SKIP
    >>> report.frames_per_second  # doctest: +SKIP
    3.2
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ovperc.atomic import atomic_write_text
from ovperc.labeling.lock import dataset_lock
from ovperc.labeling.report import EXIT_ERROR, EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK
from ovperc.ontology import ClassesLike, Ontology
from ovperc.video.output import (
    COCO_NAME,
    DATASET_DIR,
    MASKS_DIR,
    REPORT_NAME,
    ChunkWriter,
    DatasetOptions,
    TrackOutput,
    read_tracks,
)
from ovperc.video.reader import FrameReader, VideoInfo, probe_video
from ovperc.video.types import FrameTracks, VideoFrame

logger = logging.getLogger(__name__)

#: the frame rate of the annotated video when the source does not say (a folder of frames).
DEFAULT_FPS = 10.0


@dataclass
class TrackReport:
    """What a tracking run did.

    Attributes:
        source, out: the video and the output folder.
        frames_expected: frames the run is to track (when the source says how many).
        frames_done: frames tracked in ``out`` (this run and the runs it resumed).
        frames_this_run: frames tracked by this run.
        frames_skipped: frames that could not be decoded (corrupt), skipped.
        tracks_per_class: tracks per class over the video.
        elapsed_s: wall time of this run.
        interrupted: stopped (Ctrl-C, SIGTERM) before the end.
        error: a fatal error that stopped the run.
        notes: what else a person should know (a truncated file, files left alone).
        scores: MOTA, IDF1, id switches, ... against a ground truth, when one was given
            (:class:`~ovperc.video.metrics.TrackingScores`).
    """

    source: str
    out: str
    frames_expected: int | None = None
    frames_done: int = 0
    frames_this_run: int = 0
    frames_skipped: int = 0
    tracks_per_class: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    interrupted: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    scores: dict[str, Any] | None = None

    @property
    def frames_per_second(self) -> float:
        """Frames tracked per second of wall time in this run."""
        return self.frames_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 every frame tracked; 1 some frames skipped or files left alone; 2 error; 130 interrupted."""
        if self.error is not None:
            return EXIT_ERROR
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILURES if self.frames_skipped or self.notes else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["elapsed_s"] = round(self.elapsed_s, 3)
        data["frames_per_second"] = round(self.frames_per_second, 3)
        data["exit_code"] = self.exit_code
        return data

    def summary(self) -> str:
        """The lines the CLI prints."""
        lines = []
        if self.error:
            lines.append(f"stopped by an error: {self.error}")
        elif self.interrupted:
            lines.append("interrupted: rerun the same command to resume where it stopped")
        of = f" of {self.frames_expected}" if self.frames_expected else ""
        lines.append(f"{self.frames_done}{of} frames tracked in {self.out}; {self.frames_this_run} now in "
                     f"{self.elapsed_s:.1f} s ({self.frames_per_second:.2f} frames/s)")
        tracks = ", ".join(f"{name} {n}" for name, n in self.tracks_per_class.items()) or "none"
        lines.append(f"tracks per class: {tracks}")
        if self.frames_skipped:
            lines.append(f"skipped {self.frames_skipped} frames that could not be decoded")
        lines.extend(f"note: {note}" for note in self.notes)
        if self.scores is not None:
            s = self.scores
            lines.append(f"scores against the ground truth on {s['frames']} frames: MOTA {s['mota']:.3f}, "
                         f"IDF1 {s['idf1']:.3f}, {s['id_switches']} id switches, precision "
                         f"{s['precision']:.3f}, recall {s['recall']:.3f}")
        return "\n".join(lines)


def track_video(
    tracker: Any,
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    classes: ClassesLike | None = None,
    tag_merge: bool = False,
    video: bool = True,
    masks: bool = True,
    dataset: DatasetOptions | None = None,
    chunk_frames: int = 100,
    stride: int = 1,
    start: int = 0,
    max_frames: int | None = None,
    fps: float | None = None,
    overwrite: bool = False,
    signature: Mapping[str, Any] | None = None,
    progress: bool = False,
    truth: Sequence[FrameTracks] | None = None,
) -> TrackReport:
    """Track ``source`` into ``out``; rerun the same call to resume a run that was stopped.

    A resumed run starts again at the first frame of its first unfinished chunk, with a new
    detection there: objects tracked across that frame get new ids (ids stay unique, they
    continue after the largest id written so far).

    Args:
        tracker: a :class:`~ovperc.Tracker` (anything with ``track(frames, classes, tag_merge=,
            first_id=)``).
        source: a video file or a folder of frames.
        out: the output folder (see :mod:`ovperc.video.output` for its layout).
        classes: what to track.
        tag_merge: also track what the tracker's tagger names.
        video, masks: write ``annotated.mp4`` and ``masks/*.png``.
        dataset: also write every k-th frame as a training dataset.
        chunk_frames: source frames per resumable chunk.
        stride, start, max_frames: which source frames to track.
        fps: frame rate of the annotated video (default: the source's, else 10).
        overwrite: discard a previous run in ``out`` made with other settings.
        signature: what else defines the run's output (models, thresholds); a resumed run
            must have the same.
        progress: show a progress bar.
        truth: ground-truth tracks (e.g. :func:`~ovperc.video.metrics.read_mot`); the run's
            tracks are scored against them on the frames tracked (``report.scores``).

    Raises:
        VideoError: the source cannot be read (before anything is written).
        ManifestMismatchError: ``out`` holds another run or files ovperc did not write.

    Example:
        >>> track_video(tracker, "clip.mp4", "out/", classes="car",  # doctest: +SKIP
        ...             dataset=DatasetOptions(every=10, format="yolo"))
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be 1 or more, got {chunk_frames}")
    FrameReader(source, stride=stride, start=start, max_frames=max_frames)  # checks the options
    info = probe_video(source)
    if info.kind == "stream":
        raise ValueError(f"{source}: a camera or stream has no end to resume from; track it with "
                         "Tracker.track(read_frames(...)) in Python")
    check_outside(source, out)
    rate = fps or (info.fps / stride if info.fps else DEFAULT_FPS)
    name = video_name(source)
    ontology = _ontology(classes)
    given = dict(signature) if signature is not None else {"tracker": repr(tracker)}
    full = {**given, "source": _source_signature(source, info),
            "classes": None if ontology is None else ontology.to_dict(),
            "tag_merge": tag_merge, "video": video, "masks": masks,
            "dataset": None if dataset is None else asdict(dataset), "chunk_frames": chunk_frames,
            "stride": stride, "start": start, "max_frames": max_frames, "fps": rate}
    report = TrackReport(str(source), str(out), frames_expected=_expected(info, stride, start, max_frames))
    t0 = time.perf_counter()
    with dataset_lock(out):
        output = TrackOutput.open(out, full, classes=[] if ontology is None else ontology.classes,
                                  fps=rate, size=info.size, name=name, video=video, masks=masks,
                                  dataset=dataset, chunk_frames=chunk_frames, start=start, stride=stride,
                                  overwrite=overwrite)
        begin = _first_on_grid(max(start, output.first_unfinished() * chunk_frames), start, stride)
        before = (begin - start) // stride  # kept frames before the resumed start
        remaining = None if max_frames is None else max_frames - before
        try:
            if remaining is None or remaining > 0:
                frames = FrameReader(source, stride=stride, start=begin, max_frames=remaining)
                report.frames_this_run = _run(tracker, frames, output, ontology, tag_merge, progress,
                                              info, begin, stride, remaining)
                report.frames_skipped = frames.skipped
                report.notes.extend(frames.messages)
            report.notes.extend(output.finalize())
            if truth is not None and (Path(out) / COCO_NAME).is_file():
                from ovperc.video.metrics import score_tracks

                tracked = read_tracks(Path(out) / COCO_NAME)
                indices = {t.index for t in tracked}
                report.scores = score_tracks([t for t in truth if t.index in indices], tracked).to_dict()
        except KeyboardInterrupt:
            report.interrupted = True
        report.notes.extend(f"{path} is in the way (ovperc did not write it): left alone"
                            for path in output.blocked)
        report.frames_done = sum(int(c.get("frames", 0)) for c in output.finished())
        report.tracks_per_class = output.counts()
        report.elapsed_s = time.perf_counter() - t0
        if output.manifest.claim(Path(out) / REPORT_NAME):
            atomic_write_text(Path(out) / REPORT_NAME, json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _run(tracker: Any, frames: FrameReader, output: TrackOutput, classes: ClassesLike | None, tag_merge: bool,
         progress: bool, info: VideoInfo, begin: int, stride: int, remaining: int | None) -> int:
    """Track ``frames`` and write each chunk not finished yet; returns the frames tracked."""
    stash: dict[int, VideoFrame] = {}

    def kept() -> Iterator[VideoFrame]:
        for frame in frames:
            if frame.size != info.size:  # a folder's odd frame: one bad frame never stops a run
                frames.skip(f"frame {frame.index} skipped: {frame.size[0]}x{frame.size[1]} pixels, not the "
                            f"{info.size[0]}x{info.size[1]} of the first frame")
                continue
            stash[frame.index] = frame
            yield frame

    bar = None
    if progress:
        from tqdm import tqdm

        total = _expected(info, stride, begin, remaining)
        bar = tqdm(total=total, unit="frame", desc="tracking", dynamic_ncols=True)
    chunk: ChunkWriter | None = None
    number = -1
    done = 0
    try:
        # a resumed run numbers its tracks after the ids already written: ids are never reused
        for tracks in tracker.track(kept(), classes, tag_merge=tag_merge, first_id=output.id_offset + 1):
            frame = stash.pop(tracks.index)
            if output.chunk_of(frame.index) != number:
                if chunk is not None:
                    chunk.__exit__(None, None, None)
                    chunk = None
                number = output.chunk_of(frame.index)
                if not output.is_done(number):
                    chunk = output.chunk(number, _chunk_indices(number, output.chunk_frames, begin, stride,
                                                                remaining, info.frames))
                    chunk.__enter__()
            if chunk is not None:
                chunk.write(frame, tracks)
            done += 1
            if bar is not None:
                bar.update(1)
    except BaseException as error:
        if chunk is not None:
            chunk.__exit__(type(error), error, None)
        raise
    finally:
        if bar is not None:
            bar.close()
    if chunk is not None:
        chunk.__exit__(None, None, None)
    return done


def _chunk_indices(number: int, size: int, begin: int, stride: int, remaining: int | None,
                   frames: int | None) -> list[int]:
    """The source frames chunk ``number`` may hold on the run's grid."""
    low = _first_on_grid(max(begin, number * size), begin, stride)
    high = (number + 1) * size
    if remaining is not None:
        high = min(high, begin + remaining * stride)
    if frames is not None:
        high = min(high, frames)
    return list(range(low, high, stride))


def _first_on_grid(index: int, start: int, stride: int) -> int:
    """The first frame at or after ``index`` that lies on ``start + k * stride``."""
    if index <= start:
        return start
    return start + -(-(index - start) // stride) * stride


def _expected(info: VideoInfo, stride: int, start: int, max_frames: int | None) -> int | None:
    if info.frames is None:
        return max_frames
    count = max(0, -(-(info.frames - start) // stride))
    return count if max_frames is None else min(count, max_frames)


def video_name(source: str | os.PathLike) -> str:
    """A file-name-safe name for the source: its stem, or the folder's name.

    Example:
        >>> video_name("clips/Street cam 1.mp4")
        'Street_cam_1'
    """
    path = Path(os.path.abspath(source))
    base = path.name if path.is_dir() else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("._") or "video"


def check_outside(source: str | os.PathLike, out: str | os.PathLike) -> None:
    """Refuse an ``out`` that is the source, or a source inside a folder the run writes.

    Raises:
        ValueError: the layout is refused; the message says why.
    """
    src, dst = Path(os.path.realpath(source)), Path(os.path.realpath(out))
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; choose a folder for the results")
    if src == dst:
        raise ValueError(f"--out {out} is the source itself; write the results to another folder")
    for folder in (MASKS_DIR, DATASET_DIR, ".ovperc"):
        if dst / folder == src or dst / folder in src.parents:
            raise ValueError(f"the source {source} is inside {out}/{folder}, where ovperc writes; "
                             "move it or choose another --out")


def _source_signature(source: str | os.PathLike, info: VideoInfo) -> dict[str, Any]:
    path = Path(os.path.abspath(source))
    stat = path.stat()
    return {"path": str(path), "kind": info.kind, "size": list(info.size),
            **({"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns} if info.kind == "video" else {})}


def _ontology(classes: ClassesLike | None) -> Ontology | None:
    return None if classes is None else Ontology.from_any(classes)
