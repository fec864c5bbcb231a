"""``Tracker``: detect on keyframes, follow every object's mask between them, keep its id.

Every ``detect_every``-th frame (a keyframe) runs the pipeline's detector (and its tagger
and classifier, when it has them; its image segmenter is not needed there, the video
segmenter gives the masks). The keyframe's detections are paired one to one with the
tracked objects by box IoU (Hungarian assignment) against where each object is expected on
that frame (a track box nested in a detection also pairs, see ``nested_share``). A paired
object is re-anchored: the video segmenter restarts it from the detection's box, which
corrects drift. A detection that overlaps no tracked object by ``new_track_iou`` starts a
new track with a new id; ids count up from 1 and are never reused. On every frame the video
segmenter carries every object's mask forward; an object whose mask stays empty for
``max_lost`` frames in a row ends (a detection that pairs with it before then brings it
back under the same id), and of two tracks whose masks cover one object the one confirmed
less recently ends (``duplicate_iou``).

A track's class is the majority of the classes of the detections that started and
confirmed it (a tie keeps the class it has), so one keyframe with a wrong label does not
flip it; its ``confidence`` is the score of the detection that last confirmed it.

Memory stays flat however long the video: the tracker keeps a few numbers per live track
and no frames; the video segmenters keep a bounded window (see their docs).
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ovperc.image import ImageError
from ovperc.ontology import ClassesLike, Ontology
from ovperc.video.matching import assign, box_containment, box_iou, box_motion, mask_box, predict_box
from ovperc.video.segmenter import VideoSegmenter, as_video_segmenter
from ovperc.video.types import FrameTracks, VideoFrame

if TYPE_CHECKING:
    import supervision as sv

    from ovperc.pipeline import Pipeline

logger = logging.getLogger(__name__)


@dataclass
class _Track:
    """What the tracker keeps of one live object: a few numbers, no pixels."""

    id: int
    box: np.ndarray
    class_name: str
    confidence: float
    votes: Counter[str] = field(default_factory=Counter)
    motion: np.ndarray = field(default_factory=lambda: np.zeros(4))
    lost: int = 0
    confirmed: int = 0  # the frame position a detection last paired with it (or started it)

    def vote(self, class_name: str, confidence: float) -> None:
        self.votes[class_name] += 1
        self.confidence = confidence
        best = max(self.votes.values())
        if self.votes[self.class_name] < best:
            self.class_name = next(name for name, n in self.votes.items() if n == best)


class Tracker:
    """Follow every object of the named classes through a video, each under a stable id.

    Args:
        pipeline: the chain that detects (and, if it has them, tags and CLIP-checks) on
            keyframes; its segmenter is used only when no ``video_segmenter`` is given.
        video_segmenter: what carries masks between frames: a model name, hub id or folder
            of a transformers video tracker (``"sam2.1-tiny"``, ``"edgetam"``, see
            :class:`~ovperc.video.sam2_video.Sam2VideoSegmenter`), a
            :class:`~ovperc.video.segmenter.VideoSegmenter`, an image segmenter (prompted
            frame by frame with each object's last box, see
            :class:`~ovperc.video.segmenter.BoxPromptPropagator`), or ``None``: the
            pipeline's own segmenter that way.
        detect_every: run the detector on one frame in this many (the first frame always).
        new_track_iou: a detection pairs with a tracked object when their boxes overlap by
            at least this IoU; one that overlaps no tracked object this much starts a track.
        max_lost: frames in a row an object's mask may stay empty before its track ends.
        nested_share: a detection also pairs with a track (when no better pair is left) if
            one box holds this share of the other's area: a propagated mask that shrank or
            drifted inside its object is re-anchored, not doubled by a new track. ``None``:
            box IoU alone.
        duplicate_iou: two tracks whose masks overlap by this IoU follow one object: the one
            a detection confirmed less recently ends (a propagated mask can spread onto a
            neighbour that another track already follows).
        reanchor: restart a paired object from its detection's box on keyframes (corrects
            drift; an object that was lost is always restarted).
        min_mask_area: masks of fewer pixels count as empty.
        device, dtype: for a video segmenter loaded from a name, hub id or folder.
        segmenter_options: keyword arguments for the video segmenter built here.

    Example:
        >>> import ovperc
        >>> pipe = ovperc.Pipeline.from_preset("detect+segment")  # doctest: +SKIP
        >>> tracker = ovperc.Tracker(pipe, video_segmenter="sam2.1-tiny", detect_every=10)  # doctest: +SKIP
        >>> for tracks in tracker.track(frames, classes="person, car"):  # doctest: +SKIP
        ...     print(tracks.index, tracks.detections.tracker_id)
    """

    def __init__(
        self,
        pipeline: Pipeline,
        video_segmenter: Any = None,
        *,
        detect_every: int = 10,
        new_track_iou: float = 0.3,
        max_lost: int = 30,
        duplicate_iou: float = 0.7,
        nested_share: float | None = 0.8,
        reanchor: bool = True,
        min_mask_area: int = 1,
        device: str = "auto",
        dtype: str = "float32",
        segmenter_options: dict[str, Any] | None = None,
    ) -> None:
        for name, value, low in (("detect_every", detect_every, 1), ("max_lost", max_lost, 1),
                                 ("min_mask_area", min_mask_area, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        for name, value in (("new_track_iou", new_track_iou), ("duplicate_iou", duplicate_iou),
                            ("nested_share", 1.0 if nested_share is None else nested_share)):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        if pipeline.detector is None:
            raise ValueError("tracking needs a pipeline with a detector to find objects on keyframes")
        self.pipeline = pipeline
        self.video_segmenter: VideoSegmenter = as_video_segmenter(
            video_segmenter, fallback=pipeline.segmenter, device=device, dtype=dtype,
            **(segmenter_options or {}))
        self.detect_every = detect_every
        self.new_track_iou = float(new_track_iou)
        self.max_lost = max_lost
        self.duplicate_iou = float(duplicate_iou)
        self.nested_share = None if nested_share is None else float(nested_share)
        self.reanchor = bool(reanchor)
        self.min_mask_area = min_mask_area
        # Keyframes need boxes only: the video segmenter makes the masks.
        self._keyframe_chain = copy.copy(pipeline)
        self._keyframe_chain.segmenter = None
        self._keyframe_chain.keep_images = False

    def __repr__(self) -> str:
        return (f"Tracker({self.pipeline!r}, video_segmenter={self.video_segmenter!r}, "
                f"detect_every={self.detect_every}, new_track_iou={self.new_track_iou}, "
                f"max_lost={self.max_lost})")

    def track(self, frames: Iterable[VideoFrame | np.ndarray], classes: ClassesLike | None = None, *,
              tag_merge: bool = False, first_id: int = 1) -> Iterator[FrameTracks]:
        """Follow the objects through ``frames``, yielding each frame's tracks as soon as known.

        Frames are read one at a time and not kept, so a stream of any length runs in
        constant memory; the video segmenter starts afresh for each call.

        Args:
            frames: :class:`~ovperc.video.types.VideoFrame` objects or RGB ``uint8`` arrays
                (numbered from 0 in the order given), all of one size.
            classes: what to track, as for :meth:`ovperc.Pipeline.__call__`; ``None``: the
                pipeline's tagger names them on each keyframe.
            tag_merge: with classes given, also track what the tagger names.
            first_id: the id of the first track; a run resumed part way through a video
                passes one past the largest id it already wrote, so no id is used twice.

        Yields:
            One :class:`~ovperc.video.types.FrameTracks` per frame, in order.

        Raises:
            ValueError: bad classes (before any frame is read), or a frame that is not an
                RGB image or not of the first frame's size.

        Example:
            >>> for tracks in tracker.track(frames, classes=["car"]):  # doctest: +SKIP
            ...     print(tracks.index, len(tracks.detections))
        """
        if isinstance(first_id, bool) or not isinstance(first_id, int) or first_id < 1:
            raise ValueError(f"first_id must be an int >= 1, got {first_id!r}")
        ontology = self.pipeline.check(classes)
        run = _Run(self, ontology, tag_merge)
        run.next_id = first_id
        self.video_segmenter.reset()
        try:
            for position, item in enumerate(frames):
                yield run.step(position, _as_frame(item, position))
        finally:
            self.video_segmenter.reset()


class _Run:
    """The state of one ``Tracker.track`` call."""

    def __init__(self, tracker: Tracker, ontology: Ontology | None, tag_merge: bool) -> None:
        self.tracker = tracker
        self.classes = ontology
        self.ontology = ontology
        self.tag_merge = tag_merge
        self.tracks: dict[int, _Track] = {}
        self.next_id = 1
        self.size: tuple[int, int] | None = None
        self.position = 0

    def step(self, position: int, frame: VideoFrame) -> FrameTracks:
        self.position = position
        if self.size is None:
            self.size = frame.size
        elif frame.size != self.size:
            raise ValueError(f"frame {frame.index} is {frame.size[0]}x{frame.size[1]} but the video's frames "
                             f"are {self.size[0]}x{self.size[1]}; every frame must have the first one's size")
        keyframe = position % self.tracker.detect_every == 0
        prompts: dict[int, np.ndarray] = {}
        if keyframe:
            detections = self._detect(frame)
            keyframe = detections is not None
            if detections is not None:
                prompts = self._associate(detections)
        masks = self.tracker.video_segmenter.propagate(frame, prompts)
        self._update(masks, set(prompts))
        self._drop_duplicates(masks)
        return self._frame_tracks(frame, masks, keyframe)

    def _detect(self, frame: VideoFrame) -> sv.Detections | None:
        [result] = self.tracker._keyframe_chain.run_batch(
            [frame.image], classes=self.classes, tag_merge=self.tag_merge, run_ontology=self.ontology,
            errors="return")
        if isinstance(result, ImageError):
            logger.warning("frame %d: no detection on this keyframe: %s", frame.index, result)
            return None
        self.ontology = result.ontology or self.ontology
        return result.detections

    def _associate(self, detections: sv.Detections) -> dict[int, np.ndarray]:
        """Pair detections with tracks; returns the boxes to (re)start objects from."""
        tracker = self.tracker
        ids = sorted(self.tracks)
        expected = np.array([predict_box(self.tracks[i].box, self.tracks[i].motion) for i in ids])
        expected = expected.reshape(-1, 4)
        boxes = np.asarray(detections.xyxy, dtype=np.float64).reshape(-1, 4)
        iou = box_iou(expected, boxes)
        if tracker.nested_share is not None and iou.size:  # a drifted track inside its detection
            held = box_containment(expected, boxes)
            iou = np.where(held >= tracker.nested_share, np.maximum(iou, tracker.new_track_iou), iou)
        names = detections.data.get("class_name")
        scores = detections.confidence
        prompts: dict[int, np.ndarray] = {}
        paired: set[int] = set()
        for row, col in assign(iou, tracker.new_track_iou):
            track = self.tracks[ids[row]]
            track.vote(_name(names, col), _score(scores, col))
            track.confirmed = self.position
            if tracker.reanchor or track.lost:
                prompts[track.id] = boxes[col]
            paired.add(col)
        overlap = iou.max(axis=0) if len(ids) else np.zeros(len(boxes))
        for col in range(len(boxes)):
            if col in paired or overlap[col] >= tracker.new_track_iou:
                continue  # a tracked object, or a second box on one
            track = _Track(self.next_id, boxes[col].copy(), _name(names, col), _score(scores, col),
                           confirmed=self.position)
            track.votes[track.class_name] += 1
            self.tracks[track.id] = track
            self.next_id += 1
            prompts[track.id] = boxes[col]
        return prompts

    def _update(self, masks: dict[int, np.ndarray], restarted: set[int]) -> None:
        tracker = self.tracker
        ended = []
        for track in self.tracks.values():
            mask = masks.get(track.id)
            box = None if mask is None or mask.sum() < tracker.min_mask_area else mask_box(mask)
            if box is None:
                track.lost += 1
                track.motion = np.zeros(4)
                if track.lost >= tracker.max_lost:
                    ended.append(track.id)
                continue
            fresh = track.lost or track.id in restarted
            track.motion = np.zeros(4) if fresh else box_motion(track.box, box)
            track.box = box
            track.lost = 0
        if ended:
            logger.debug("tracks ended after %d frames unseen: %s", tracker.max_lost, ended)
            tracker.video_segmenter.remove(ended)
            for track_id in ended:
                del self.tracks[track_id]

    def _drop_duplicates(self, masks: dict[int, np.ndarray]) -> None:
        """End tracks that follow the same object as another: of two whose masks overlap by
        ``duplicate_iou``, the one a detection confirmed less recently ends (the younger on a tie)."""
        tracker = self.tracker
        seen = [t for t in self.tracks.values() if t.lost == 0]
        if len(seen) < 2:
            return
        boxes = np.array([t.box for t in seen])
        near = box_iou(boxes, boxes) >= tracker.duplicate_iou  # a mask IoU needs at least this box IoU
        ended: set[int] = set()
        for a, b in zip(*np.nonzero(np.triu(near, k=1))):
            first, second = seen[a], seen[b]
            if first.id in ended or second.id in ended:
                continue
            ma, mb = masks[first.id], masks[second.id]
            union = np.logical_or(ma, mb).sum()
            if union and np.logical_and(ma, mb).sum() / union >= tracker.duplicate_iou:
                loser = min((first, second), key=lambda t: (t.confirmed, -t.id))
                ended.add(loser.id)
        if ended:
            logger.debug("tracks ended as duplicates of others: %s", sorted(ended))
            tracker.video_segmenter.remove(ended)
            for track_id in ended:
                del self.tracks[track_id]

    def _frame_tracks(self, frame: VideoFrame, masks: dict[int, np.ndarray], keyframe: bool) -> FrameTracks:
        import supervision as sv

        width, height = frame.size
        seen = [t for t in sorted(self.tracks.values(), key=lambda t: t.id) if t.lost == 0]
        names = [t.class_name for t in seen]
        if names:  # classes only the tracks name (no classes given, no tagger) join the run's
            known = self.ontology.classes if self.ontology is not None else []
            unknown = [n for n in dict.fromkeys(names) if n not in known]
            if unknown:
                self.ontology = Ontology(unknown) if self.ontology is None else self.ontology.extend(unknown)
        class_names = list(self.ontology.classes) if self.ontology is not None else []
        detections = sv.Detections(
            xyxy=np.array([t.box for t in seen], dtype=np.float32).reshape(-1, 4),
            mask=np.array([masks[t.id] for t in seen], dtype=bool).reshape(-1, height, width),
            confidence=np.array([t.confidence for t in seen], dtype=np.float32),
            class_id=np.array([class_names.index(n) for n in names], dtype=int),
            tracker_id=np.array([t.id for t in seen], dtype=int),
            data={"class_name": np.array(names, dtype=object)},
        )
        return FrameTracks(frame.index, frame.timestamp, frame.size, detections, keyframe, class_names)


def _as_frame(item: VideoFrame | np.ndarray, position: int) -> VideoFrame:
    if isinstance(item, VideoFrame):
        frame = item
    elif isinstance(item, np.ndarray):
        frame = VideoFrame(position, item)
    else:
        raise TypeError(f"frame {position}: expected a VideoFrame or an RGB uint8 array, "
                        f"got {type(item).__name__}")
    image = frame.image
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", None)
        raise ValueError(f"frame {frame.index}: expected an RGB uint8 array (H, W, 3), got shape {shape} "
                         f"dtype {dtype}")
    return frame


def _name(names: Any, index: int) -> str:
    return str(names[index]) if names is not None else "object"


def _score(scores: Any, index: int) -> float:
    return float(scores[index]) if scores is not None else 1.0
