"""Video segmenters: carry every tracked object's mask from one frame to the next.

A video segmenter holds the objects it follows, each under the tracker's id. Every frame
goes through :meth:`VideoSegmenter.propagate` once, in order, with the boxes of the
objects that start or are re-anchored on that frame; it answers a mask for every object it
follows (empty when the object is not visible). Two kinds ship:

- :class:`~ovperc.video.sam2_video.Sam2VideoSegmenter`: SAM 2.1 / EdgeTAM / SAM 3
  tracker video models from transformers, which carry a memory of past frames (a bounded
  window here);
- :class:`BoxPromptPropagator`: any ovperc image segmenter (SAM from segment-anything,
  the transformers SAM family, the ``shapes-tiny`` SAM) prompted on every frame with each
  object's previous box, a little enlarged: no video memory, one image embedding per frame,
  the cheap option on a CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ovperc.video.matching import box_motion, mask_box, predict_box

if TYPE_CHECKING:
    from ovperc.stages.base import Segmenter
    from ovperc.video.types import VideoFrame

logger = logging.getLogger(__name__)


@runtime_checkable
class VideoSegmenter(Protocol):
    """Follows objects through a stream of frames, each under a caller's integer id."""

    def propagate(self, frame: VideoFrame, boxes: Mapping[int, np.ndarray] | None = None
                  ) -> dict[int, np.ndarray]:
        """Masks on ``frame`` for every object followed.

        Args:
            frame: the next frame of the stream (frames come once each, in order).
            boxes: ``{id: xyxy}`` in this frame's pixels: a new id starts an object there, a
                known id is re-anchored to the box (its memory restarts from it).

        Returns:
            ``{id: HxW bool mask}`` for every object followed; an empty mask where the
            object is not seen on this frame.
        """
        ...

    def remove(self, ids: Iterable[int]) -> None:
        """Stop following these objects and free what was kept for them."""
        ...

    def reset(self) -> None:
        """Forget every object and frame (a new video starts)."""
        ...


class BoxPromptPropagator:
    """Follow objects with an image segmenter, prompting each frame with last frame's boxes.

    On every frame each object's box from the previous frame, moved by its last motion,
    prompts the segmenter; the mask it answers, cut to that box enlarged by ``margin`` of its
    size on every side (room to move, not to spread over a neighbour), gives the object's
    new box. The image is embedded once per frame and all boxes are decoded together (the
    segmenter's ``segment`` call).
    An object whose mask comes back empty, or scored below ``min_score`` by the segmenter,
    keeps its last box and is prompted there again on the next frame.

    Args:
        segmenter: any ovperc image segmenter (``segment(images, detections)``), e.g.
            :class:`~ovperc.stages.sam.SamSegmenter`.
        margin: how far past the prompt box a mask may reach, as a fraction of the box's
            width and height on each side (lets a moving object's mask follow it).
        min_score: masks the segmenter scores below this (``data["mask_score"]``, SAM's
            predicted IoU) count as empty.
        min_area: masks of fewer pixels count as empty.

    Example:
        >>> from ovperc.stages.sam import SamSegmenter
        >>> propagator = BoxPromptPropagator(SamSegmenter("vit_b"))  # doctest: +SKIP
        >>> masks = propagator.propagate(frame, {1: np.array([10, 20, 110, 220])})  # doctest: +SKIP
    """

    def __init__(self, segmenter: Segmenter, *, margin: float = 0.15, min_score: float = 0.0,
                 min_area: int = 1) -> None:
        if not callable(getattr(segmenter, "segment", None)):
            raise TypeError(f"BoxPromptPropagator needs an image segmenter with segment(images, "
                            f"detections), got {type(segmenter).__name__}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.segmenter = segmenter
        self.margin = float(margin)
        self.min_score = float(min_score)
        self.min_area = int(min_area)
        self._boxes: dict[int, np.ndarray] = {}
        self._motion: dict[int, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"BoxPromptPropagator({self.segmenter!r}, margin={self.margin})"

    def propagate(self, frame: VideoFrame, boxes: Mapping[int, np.ndarray] | None = None
                  ) -> dict[int, np.ndarray]:
        """Masks on ``frame`` for every object followed (see :class:`VideoSegmenter`).

        Example:
            >>> masks = propagator.propagate(frame)  # doctest: +SKIP
        """
        import supervision as sv

        image = frame.image
        height, width = image.shape[:2]
        limits = np.array([width, height, width, height], dtype=np.float64)
        given = {int(i): np.clip(np.asarray(b, dtype=np.float64).reshape(4), 0, limits)
                 for i, b in (boxes or {}).items()}
        for obj_id in given:
            self._motion.setdefault(obj_id, np.zeros(4))
        ids = sorted(set(self._boxes) | set(given))
        masks = {i: np.zeros((height, width), dtype=bool) for i in ids}
        prompts, regions = {}, {}
        for obj_id in ids:
            if obj_id in given:  # a detection's box
                prompts[obj_id] = given[obj_id]
                regions[obj_id] = _enlarge(given[obj_id], self.margin, limits)
            else:  # where it is expected; its mask may reach a margin past that box
                expected = predict_box(self._boxes[obj_id], self._motion[obj_id])
                prompts[obj_id] = np.clip(expected, 0, limits)
                regions[obj_id] = _enlarge(expected, self.margin, limits)
        usable = [i for i in ids if prompts[i][2] - prompts[i][0] >= 1 and prompts[i][3] - prompts[i][1] >= 1]
        if usable:
            dets = sv.Detections(xyxy=np.stack([prompts[i] for i in usable]).astype(np.float32))
            [out] = self.segmenter.segment([image], [dets])
            scores = out.data.get("mask_score")
            for row, obj_id in enumerate(usable):
                if scores is not None and float(scores[row]) < self.min_score:
                    continue
                x1, y1, x2, y2 = _pixels(regions[obj_id])
                mask = masks[obj_id]
                mask[y1:y2, x1:x2] = np.asarray(out.mask[row], dtype=bool)[y1:y2, x1:x2]
                if mask.sum() < self.min_area:
                    mask[:] = False
        for obj_id in ids:
            box = mask_box(masks[obj_id])
            if box is None:
                self._boxes[obj_id] = given.get(obj_id, self._boxes.get(obj_id, np.zeros(4)))
                self._motion[obj_id] = np.zeros(4)
                continue
            if obj_id in given or obj_id not in self._boxes:
                self._motion[obj_id] = np.zeros(4)
            else:
                self._motion[obj_id] = box_motion(self._boxes[obj_id], box)
            self._boxes[obj_id] = box
        return masks

    def remove(self, ids: Iterable[int]) -> None:
        """Stop following these objects.

        Example:
            >>> propagator.remove([3])  # doctest: +SKIP
        """
        for obj_id in ids:
            self._boxes.pop(int(obj_id), None)
            self._motion.pop(int(obj_id), None)

    def reset(self) -> None:
        """Forget every object.

        Example:
            >>> propagator.reset()  # doctest: +SKIP
        """
        self._boxes.clear()
        self._motion.clear()


def _enlarge(box: np.ndarray, margin: float, limits: np.ndarray) -> np.ndarray:
    size = np.maximum(box[2:] - box[:2], 1.0)
    grown = np.concatenate([box[:2] - margin * size, box[2:] + margin * size])
    return np.clip(grown, 0, limits)


def _pixels(box: np.ndarray) -> tuple[int, int, int, int]:
    """The pixel rows/columns a float box covers (at least one of each)."""
    x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
    x2, y2 = max(x1 + 1, int(np.ceil(box[2]))), max(y1 + 1, int(np.ceil(box[3])))
    return x1, y1, x2, y2


def as_video_segmenter(value: Any, *, fallback: Segmenter | None = None, device: str = "auto",
                       dtype: str = "float32", **options: Any) -> VideoSegmenter:
    """The video segmenter a :class:`~ovperc.video.tracker.Tracker` is given, ready to use.

    Args:
        value: a video segmenter (used as it is); an image segmenter object (followed with
            :class:`BoxPromptPropagator`); a model spec for
            :class:`~ovperc.video.sam2_video.Sam2VideoSegmenter` (``"sam2.1-tiny"``,
            ``"edgetam"``, a hub id or a local folder); or ``None`` for the pipeline's own
            segmenter (``fallback``) behind a :class:`BoxPromptPropagator`.
        fallback: the pipeline's image segmenter.
        device, dtype: for a model loaded from a spec.
        **options: keyword arguments for the segmenter built here.

    Raises:
        ValueError: ``None`` and no pipeline segmenter to fall back on.
        TypeError: a value of another kind.

    Example:
        >>> as_video_segmenter("sam2.1-tiny", device="cpu")  # doctest: +SKIP
        Sam2VideoSegmenter('facebook/sam2.1-hiera-tiny', device='cpu', window=16)
    """
    import os

    if value is None:
        if fallback is None:
            raise ValueError("tracking needs masks: give video_segmenter=... (e.g. 'sam2.1-tiny', or an "
                             "image segmenter) or a pipeline with a segmenter")
        return BoxPromptPropagator(fallback, **options)
    if isinstance(value, (str, os.PathLike)):
        from ovperc.video.sam2_video import Sam2VideoSegmenter

        return Sam2VideoSegmenter(value, device=device, dtype=dtype, **options)
    if all(callable(getattr(value, name, None)) for name in ("propagate", "remove", "reset")):
        return value
    if callable(getattr(value, "segment", None)):
        return BoxPromptPropagator(value, **options)
    raise TypeError(f"video_segmenter must be a video segmenter (propagate/remove/reset), an image segmenter "
                    f"(segment), a model name, hub id or folder, or None; got {type(value).__name__}")
