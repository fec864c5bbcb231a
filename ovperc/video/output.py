"""The output folder of a tracking run, written in chunks so that a killed run resumes.

Layout of ``OUT``::

    annotated.mp4          the video with masks, boxes and "#id class" labels (H.264)
    tracks.txt             MOT-challenge lines: frame,id,x,y,w,h,conf,-1,-1,-1 (frame 1-based)
    tracks.json            COCO-style: videos, images (one per frame), annotations with track_id
    masks/<frame>.png      per frame: each pixel holds the track id there, 0 none
    dataset/               every k-th frame as a YOLO/COCO/VOC dataset (``ovperc label``'s writers)
    report.json            what the run did
    .ovperc/               manifest, per-chunk records and video segments, lock

Frames are grouped in chunks of ``chunk_frames`` source frames. A chunk's files are
recorded in the manifest (:class:`~ovperc.labeling.manifest.Manifest`) before they are
written and the chunk is recorded done after its last file is in place; a rerun of the same
command skips the finished chunks and removes what a killed run left half-written. The
whole-video files (``tracks.txt``, ``tracks.json``, ``annotated.mp4``, the dataset's
``data.yaml``/``annotations.json``) are assembled from the chunks' records at the end.

Nothing ovperc did not write is overwritten or removed: the manifest is the only thing
that decides what may be deleted, and a file in the way is left alone and reported.

Example:
    >>> output = TrackOutput.open("out/", signature, classes=["car"], fps=25.0,  # doctest: +SKIP
    ...                           size=(1280, 720), name="street")
    >>> with output.chunk(0, range(0, 100)) as chunk:  # doctest: +SKIP
    ...     chunk.write(frame, tracks)
    >>> output.finalize()  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ovperc.atomic import atomic_file, atomic_write_bytes
from ovperc.labeling.manifest import STATE_DIR, Manifest, discard, read_stored
from ovperc.labeling.writers import DatasetWriter, ImageItem, make_writer
from ovperc.video.encode import concat_videos
from ovperc.video.types import FrameTracks, VideoFrame
from ovperc.video.writers import (
    TrackAnnotator,
    class_names_of,
    coco_objects,
    frame_record,
    id_png,
    mot_lines,
    tracks_from_record,
)

logger = logging.getLogger(__name__)

#: the files a tracking run writes at the top of ``OUT``.
VIDEO_NAME, MOT_NAME, COCO_NAME, REPORT_NAME = "annotated.mp4", "tracks.txt", "tracks.json", "report.json"
#: the folders a tracking run writes into.
MASKS_DIR, DATASET_DIR = "masks", "dataset"


@dataclass(frozen=True)
class DatasetOptions:
    """Which frames go into a training dataset, and how.

    Attributes:
        every: every ``every``-th tracked frame (the first frame always).
        format: ``yolo``, ``coco`` or ``voc``.
        masks: write masks (YOLO polygons, COCO RLE, VOC instance PNGs).
    """

    every: int
    format: str = "yolo"
    masks: bool = True


class TrackOutput:
    """The output folder of one tracking run; use :meth:`open`.

    Attributes:
        out: the folder.
        manifest: its manifest (class list, finished chunks).
        video, masks: whether ``annotated.mp4`` and ``masks/*.png`` are written.
        dataset: the frames dataset's options, or ``None``.
        id_offset: the largest track id the finished chunks hold; a resumed run numbers
            its tracks after it, so ids stay unique (see :meth:`open`).
        blocked: files that were not written because something ovperc did not write is there.
    """

    def __init__(self, out: Path, manifest: Manifest, *, fps: float, size: tuple[int, int], name: str,
                 video: bool, masks: bool, dataset: DatasetOptions | None, chunk_frames: int,
                 start: int = 0, stride: int = 1) -> None:
        self.out = out
        self.manifest = manifest
        self.fps = fps
        self.size = size
        self.name = name
        self.video = video
        self.masks = masks
        self.dataset = dataset
        self.chunk_frames = chunk_frames
        self.start = start
        self.stride = stride
        self.blocked: list[str] = []
        self.writer: DatasetWriter | None = None
        if dataset is not None:
            self.writer = make_writer(dataset.format, out / DATASET_DIR, masks=dataset.masks,
                                      mask_png=dataset.format == "voc" and dataset.masks, images="none")
        self.id_offset = max((int(r.get("max_track_id", 0)) for r in manifest.done.values()), default=0)
        self._annotator: TrackAnnotator | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, out: str | os.PathLike, signature: Mapping[str, Any], *, classes: Sequence[str],
             fps: float, size: tuple[int, int], name: str, video: bool = True, masks: bool = True,
             dataset: DatasetOptions | None = None, chunk_frames: int = 100, start: int = 0,
             stride: int = 1, overwrite: bool = False) -> TrackOutput:
        """Open (resume) or start the run in ``out``; the caller holds its lock.

        A resumed run goes on from its first unfinished chunk with a fresh tracker, so an
        object tracked across that boundary gets a new id there; ids are never reused
        (the tracker starts after :attr:`id_offset`, the largest id recorded).

        Raises:
            ManifestMismatchError: ``out`` holds a run with other settings (and not
                ``overwrite``), or files ovperc did not write (and not ``overwrite``).
        """
        out = Path(out)
        if overwrite and out.exists():
            stored = read_stored(out)
            if stored is not None and stored.get("signature") != json.loads(json.dumps(dict(signature))):
                discard(out)
        manifest = Manifest.open(out, signature, classes=classes, require_empty=not overwrite)
        return cls(out, manifest, fps=fps, size=size, name=name, video=video, masks=masks, dataset=dataset,
                   chunk_frames=chunk_frames, start=start, stride=stride)

    # ------------------------------------------------------------------ chunks
    @staticmethod
    def chunk_name(number: int) -> str:
        """The manifest key of chunk ``number``: ``chunk-000003``."""
        return f"chunk-{number:06d}"

    def chunk_of(self, index: int) -> int:
        """The chunk that source frame ``index`` belongs to."""
        return index // self.chunk_frames

    def is_done(self, number: int) -> bool:
        """Whether chunk ``number`` was finished by this or an earlier run."""
        return self.chunk_name(number) in self.manifest.done

    def first_unfinished(self) -> int:
        """The first chunk not finished yet (where a resumed run starts)."""
        number = 0
        while self.is_done(number):
            number += 1
        return number

    def chunk(self, number: int, indices: Iterable[int]) -> ChunkWriter:
        """Begin chunk ``number``, which may write frames ``indices`` (source frame indices)."""
        return ChunkWriter(self, number, list(indices))

    def part_path(self, number: int) -> Path:
        """Where a chunk's tracks are recorded (one JSON line per frame)."""
        return self.out / STATE_DIR / "chunks" / f"{number:06d}.jsonl"

    def segment_path(self, number: int) -> Path:
        """Where a chunk's piece of the annotated video is kept until the end."""
        return self.out / STATE_DIR / "chunks" / f"{number:06d}.mp4"

    def mask_path(self, index: int) -> Path:
        """``masks/<frame>.png`` of source frame ``index``."""
        return self.out / MASKS_DIR / f"{index:06d}.png"

    def dataset_item(self, index: int) -> ImageItem:
        """The dataset entry of source frame ``index``: ``<video name>_<frame>.jpg``."""
        return ImageItem(Path(f"{self.name}_{index:06d}.jpg"), f"{self.name}_{index:06d}", ".jpg",
                         self.size[0], self.size[1])

    def in_dataset(self, index: int) -> bool:
        """Whether source frame ``index`` goes into the dataset: every ``every``-th tracked
        frame, counted from the run's first frame (``start``, in steps of ``stride``)."""
        if self.dataset is None:
            return False
        position, off_grid = divmod(index - self.start, self.stride)
        return not off_grid and position >= 0 and position % self.dataset.every == 0

    def dataset_paths(self, index: int) -> list[Path]:
        """Every file the dataset gets for source frame ``index``."""
        assert self.writer is not None
        item = self.dataset_item(index)
        return [self.writer.image_path(item), *self.writer.paths(item)]

    @property
    def annotator(self) -> TrackAnnotator:
        """The drawer of the annotated video (built on first use)."""
        if self._annotator is None:
            self._annotator = TrackAnnotator()
        return self._annotator

    # ------------------------------------------------------------------ the end
    def finished(self) -> list[dict[str, Any]]:
        """The finished chunks' records, in order."""
        return sorted(self.manifest.done.values(), key=lambda r: int(r["chunk"]))

    def records(self) -> Iterable[dict[str, Any]]:
        """Every tracked frame's record (see :func:`~ovperc.video.writers.frame_record`), in order."""
        for chunk in self.finished():
            with open(self.part_path(int(chunk["chunk"])), encoding="utf-8") as handle:
                for line in handle:
                    yield json.loads(line)

    def finalize(self) -> list[str]:
        """Assemble the whole-video files from the finished chunks.

        Returns:
            What was not written and why (files ovperc did not write in the way).
        """
        problems = []
        wanted = [self.out / MOT_NAME, self.out / COCO_NAME]
        if self.video:
            wanted.append(self.out / VIDEO_NAME)
        stems: list[str] = [s for chunk in self.finished() for s in chunk.get("dataset", [])]
        if self.writer is not None:
            wanted += self.writer.dataset_files()
        allowed = []
        for path in wanted:
            if self.manifest.claim(path):
                allowed.append(path)
            else:
                problems.append(f"{path} not written: ovperc did not write the file there, "
                                "so it is left alone")
        classes = self.manifest.classes
        if self.out / MOT_NAME in allowed:
            with atomic_file(self.out / MOT_NAME, "w") as handle:
                for record in self.records():
                    for line in mot_lines(tracks_from_record(_without_masks(record), classes)):
                        handle.write(line + "\n")
        if self.out / COCO_NAME in allowed:
            self._write_coco(self.out / COCO_NAME)
        segments = [self.segment_path(int(c["chunk"])) for c in self.finished() if c.get("frames")]
        if self.out / VIDEO_NAME in allowed and segments:
            concat_videos(segments, self.out / VIDEO_NAME)
        if self.writer is not None and all(p in allowed for p in self.writer.dataset_files()):
            self.writer.finalize(classes, stems)
        return problems

    def _write_coco(self, target: Path) -> None:
        from supervision.dataset.formats.coco import classes_to_coco_categories

        classes = self.manifest.classes
        width, height = self.size
        video = {"id": 1, "name": self.name, "width": width, "height": height, "fps": self.fps}
        with atomic_file(target, "w") as handle:
            handle.write('{"info": {"description": "tracked with ovperc"},\n')
            handle.write(f'"categories": {_dumps(classes_to_coco_categories(classes))},\n')
            handle.write(f'"videos": [{_dumps(video)}],\n"images": [')
            for image_id, record in enumerate(self.records(), start=1):
                image = {"id": image_id, "video_id": 1, "frame_index": record["index"],
                         "timestamp": record.get("timestamp"), "width": width, "height": height}
                handle.write(("\n" if image_id == 1 else ",\n") + _dumps(image))
            handle.write('],\n"annotations": [')
            annotation_id = 1
            for image_id, record in enumerate(self.records(), start=1):
                tracks = tracks_from_record(record, classes)
                for annotation in coco_objects(tracks, classes, masks=True):
                    full = {"id": annotation_id, "image_id": image_id, "video_id": 1, **annotation}
                    handle.write(("\n" if annotation_id == 1 else ",\n") + _dumps(full))
                    annotation_id += 1
            handle.write("]}\n")

    def counts(self) -> dict[str, int]:
        """Tracks per class over the whole video (a track counts for its first class)."""
        first: dict[int, str] = {}
        for chunk in self.finished():
            for track_id, name in chunk.get("tracks", {}).items():
                first.setdefault(int(track_id), name)
        total = Counter(first.values())
        return {name: total[name] for name in self.manifest.classes if total[name]}


class ChunkWriter:
    """Writes one chunk's files as its frames come; a context manager.

    On entry the chunk's files are recorded as begun; on a clean exit it is recorded done.
    A chunk that ends with an error (or a kill) is not recorded done: the next run removes
    its files and tracks it again.
    """

    def __init__(self, output: TrackOutput, number: int, indices: list[int]) -> None:
        self.output = output
        self.number = number
        self.indices = indices
        self.frames = 0
        self.max_track_id = output.id_offset
        self.tracks: dict[str, str] = {}
        self.stems: list[str] = []
        self._encoder = None
        self._part: io.TextIOWrapper | None = None
        self._planned: list[Path] = []

    def _plan(self) -> list[Path]:
        out = self.output
        paths = [out.part_path(self.number)]
        if out.video:
            paths.append(out.segment_path(self.number))
        for index in self.indices:
            if out.masks:
                paths.append(out.mask_path(index))
            if out.in_dataset(index):
                paths += out.dataset_paths(index)
        return paths

    def __enter__(self) -> ChunkWriter:
        out = self.output
        self._dataset_frames = {i for i in self.indices if out.in_dataset(i)}
        planned = self._plan()
        ours = {out.part_path(self.number), out.segment_path(self.number)}
        in_the_way = {p for p in planned if p not in ours and (p.exists() or p.is_symlink())}
        for path in sorted(in_the_way):
            out.blocked.append(str(path))
            logger.warning("%s is in the way and ovperc did not write it: left alone, not written", path)
        self._blocked = in_the_way
        self._planned = [p for p in planned if p not in in_the_way]
        files = [p.relative_to(out.out).as_posix() for p in self._planned]
        out.manifest.begin([{"rel": out.chunk_name(self.number), "files": files}])
        out.part_path(self.number).parent.mkdir(parents=True, exist_ok=True)
        self._part = open(out.part_path(self.number), "w", encoding="utf-8")  # noqa: SIM115
        if out.video:
            from ovperc.video.encode import VideoEncoder

            self._encoder = VideoEncoder(out.segment_path(self.number), fps=out.fps, size=out.size)
            self._encoder.open()
        return self

    def write(self, frame: VideoFrame, tracks: FrameTracks) -> FrameTracks:
        """Write one frame's files; returns its tracks with the run's ids and class ids."""
        out = self.output
        tracks = self._stable(tracks)
        assert self._part is not None
        self._part.write(json.dumps(frame_record(tracks), separators=(",", ":")) + "\n")
        det = tracks.detections
        for track_id, name in zip(det.tracker_id.tolist() if len(det) else [], class_names_of(tracks)):
            self.tracks.setdefault(str(track_id), name)
            self.max_track_id = max(self.max_track_id, int(track_id))
        if out.masks and out.mask_path(frame.index) not in self._blocked:
            atomic_write_bytes(out.mask_path(frame.index), id_png(tracks), durable=False)
        if self._encoder is not None:
            self._encoder.write(out.annotator.draw(frame.image, tracks))
        if out.dataset is not None and frame.index in self._dataset_frames:
            self._write_dataset(frame, tracks)
        self.frames += 1
        return tracks

    def _stable(self, tracks: FrameTracks) -> FrameTracks:
        """The tracks with class ids as the manifest gives them (ids grow, never move)."""
        out = self.output
        det = tracks.detections
        names = class_names_of(tracks)
        classes = out.manifest.classes
        new = [n for n in dict.fromkeys(names) if n not in classes]
        if new:
            out.manifest.set_classes([*classes, *new])
        if len(det):
            det = det[:]
            det.class_id = np.array([out.manifest.classes.index(n) for n in names], dtype=int)
            det.data["class_name"] = np.array(names, dtype=object)
        return FrameTracks(tracks.index, tracks.timestamp, tracks.size, det, tracks.keyframe,
                           list(out.manifest.classes))

    def _write_dataset(self, frame: VideoFrame, tracks: FrameTracks) -> None:
        from PIL import Image

        out = self.output
        assert out.writer is not None
        item = out.dataset_item(frame.index)
        if any(p in self._blocked for p in out.dataset_paths(frame.index)):
            return
        buffer = io.BytesIO()
        Image.fromarray(frame.image).save(buffer, format="JPEG", quality=95)
        atomic_write_bytes(out.writer.image_path(item), buffer.getvalue(), durable=False)
        out.writer.write(item, tracks.detections, out.manifest.classes)
        self.stems.append(item.stem)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        out = self.output
        if self._part is not None:
            self._part.flush()
            os.fsync(self._part.fileno())
            self._part.close()
        if self._encoder is not None:
            self._encoder.close(keep=kind is None and self.frames > 0)
        if kind is not None:
            return  # not recorded: the next run removes this chunk's files and redoes it
        record = {"rel": out.chunk_name(self.number), "stem": out.chunk_name(self.number),
                  "chunk": self.number, "frames": self.frames, "max_track_id": self.max_track_id,
                  "tracks": self.tracks, "dataset": self.stems,
                  "files": [p.relative_to(out.out).as_posix() for p in self._planned if p.exists()],
                  "counts": dict(Counter(self.tracks.values()))}
        out.manifest.record([record])


def read_tracks(path: str | os.PathLike) -> list[FrameTracks]:
    """Read a run's ``tracks.json`` back as one :class:`FrameTracks` per frame (boxes, track
    ids, classes, scores, and masks where the file has them).

    Example:
        >>> tracks = read_tracks("out/tracks.json")  # doctest: +SKIP
        >>> tracks[0].detections.tracker_id  # doctest: +SKIP
        array([1, 2])
    """
    import supervision as sv

    from ovperc.masks import coco_rle_to_mask

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in data["categories"]}
    classes = [names[k] for k in sorted(names)]
    by_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in data["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    out = []
    for image in sorted(data["images"], key=lambda i: i["frame_index"]):
        objects = by_image.get(image["id"], [])
        size = (int(image["width"]), int(image["height"]))
        if objects:
            xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (o["bbox"] for o in objects)], np.float32)
            with_masks = all(isinstance(o.get("segmentation"), dict) for o in objects)
            det = sv.Detections(
                xyxy=xyxy,
                mask=np.stack([coco_rle_to_mask(o["segmentation"]) for o in objects]) if with_masks else None,
                confidence=np.array([o.get("score", 1.0) for o in objects], np.float32),
                class_id=np.array([classes.index(names[o["category_id"]]) for o in objects], int),
                tracker_id=np.array([o["track_id"] for o in objects], int),
                data={"class_name": np.array([names[o["category_id"]] for o in objects], dtype=object)},
            )
        else:
            det = sv.Detections.empty()
        out.append(FrameTracks(int(image["frame_index"]), image.get("timestamp"), size, det, False, classes))
    return out


def _without_masks(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "objects": [{k: v for k, v in o.items() if k != "mask"} for o in record["objects"]]}


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
