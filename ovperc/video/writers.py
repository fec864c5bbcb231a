"""What one frame's tracks become in each output: a drawn frame, a MOT line, a COCO record,
an id PNG, and a stored record that brings the tracks back (:func:`frame_record`).

These are pure functions of a :class:`~ovperc.video.types.FrameTracks`; the run that
writes them atomically, in chunks, with a manifest, is :mod:`ovperc.video.output`.

Example:
    >>> mot_lines(tracks)[0]  # doctest: +SKIP
    '1,3,10.00,20.00,30.00,40.00,0.8700,-1,-1,-1'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ovperc.masks import coco_rle_to_mask, encode_instance_png, mask_to_coco_rle
from ovperc.video.types import FrameTracks

if TYPE_CHECKING:
    import supervision as sv


def mot_lines(tracks: FrameTracks) -> list[str]:
    """MOT-challenge lines ``frame,id,x,y,w,h,conf,-1,-1,-1`` (frame 1-based, box top-left
    and size in pixels), one per tracked object.

    Example:
        >>> import supervision as sv
        >>> det = sv.Detections(np.array([[10., 20., 40., 60.]]), confidence=np.array([0.5]),
        ...                     tracker_id=np.array([3]))
        >>> mot_lines(FrameTracks(0, 0.0, (64, 64), det, True, ["dog"]))
        ['1,3,10.00,20.00,30.00,40.00,0.5000,-1,-1,-1']
    """
    det = tracks.detections
    lines = []
    for i in range(len(det)):
        x0, y0, x1, y1 = (float(v) for v in det.xyxy[i])
        score = 1.0 if det.confidence is None else float(det.confidence[i])
        lines.append(f"{tracks.index + 1},{_track_id(det, i)},{x0:.2f},{y0:.2f},{x1 - x0:.2f},{y1 - y0:.2f},"
                     f"{score:.4f},-1,-1,-1")
    return lines


def class_names_of(tracks: FrameTracks) -> list[str]:
    """Each object's class name: ``data["class_name"]``, else ``class_names[class_id]``.

    Example:
        >>> class_names_of(FrameTracks(0, None, (4, 4), sv.Detections.empty(), False, []))  # doctest: +SKIP
        []
    """
    det = tracks.detections
    if len(det) == 0:
        return []
    if "class_name" in det.data:
        return [" ".join(str(n).split()) for n in det.data["class_name"]]
    if det.class_id is not None:
        return [tracks.class_names[int(i)] for i in det.class_id]
    raise ValueError(f"frame {tracks.index}: detections carry neither class names nor class ids")


def frame_record(tracks: FrameTracks, *, masks: bool = True) -> dict[str, Any]:
    """One frame's tracks as a JSON-ready dict (masks as COCO RLE), read back by
    :func:`tracks_from_record`.

    Example:
        >>> frame_record(tracks)["objects"][0]["track_id"]  # doctest: +SKIP
        3
    """
    det = tracks.detections
    names = class_names_of(tracks)
    objects = []
    for i in range(len(det)):
        record: dict[str, Any] = {
            "track_id": _track_id(det, i),
            "class_name": names[i],
            "xyxy": [round(float(v), 2) for v in det.xyxy[i]],
            "score": 1.0 if det.confidence is None else round(float(det.confidence[i]), 4),
        }
        if masks and det.mask is not None:
            record["mask"] = mask_to_coco_rle(det.mask[i])
        objects.append(record)
    return {"index": tracks.index, "timestamp": tracks.timestamp, "size": list(tracks.size),
            "keyframe": bool(tracks.keyframe), "objects": objects}


def tracks_from_record(record: Mapping[str, Any], classes: Sequence[str]) -> FrameTracks:
    """The :class:`FrameTracks` a :func:`frame_record` dict stands for; ``class_id`` indexes
    ``classes`` (names missing from it are an error).

    Example:
        >>> tracks_from_record(frame_record(tracks), ["dog"]).detections.tracker_id  # doctest: +SKIP
        array([3])
    """
    import supervision as sv

    width, height = (int(v) for v in record["size"])
    objects = record.get("objects", [])
    names = [str(o["class_name"]) for o in objects]
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise ValueError(f"frame {record['index']}: classes {unknown} are not among {list(classes)}")
    if objects:
        with_masks = all("mask" in o for o in objects)
        det = sv.Detections(
            xyxy=np.array([o["xyxy"] for o in objects], dtype=np.float32).reshape(-1, 4),
            mask=np.stack([coco_rle_to_mask(o["mask"]) for o in objects]) if with_masks else None,
            confidence=np.array([o["score"] for o in objects], dtype=np.float32),
            class_id=np.array([list(classes).index(n) for n in names], dtype=int),
            tracker_id=np.array([o["track_id"] for o in objects], dtype=int),
            data={"class_name": np.array(names, dtype=object)},
        )
    else:
        det = sv.Detections.empty()
    return FrameTracks(index=int(record["index"]), timestamp=record.get("timestamp"), size=(width, height),
                       detections=det, keyframe=bool(record.get("keyframe")), class_names=list(classes))


def coco_objects(tracks: FrameTracks, classes: Sequence[str], *, masks: bool = True) -> list[dict[str, Any]]:
    """COCO annotations (without ``id``/``image_id``) with ``track_id``; ``category_id`` is the
    class's index in ``classes`` plus one, as in the labelling writers' COCO files.

    Example:
        >>> coco_objects(tracks, ["dog"])[0]["track_id"]  # doctest: +SKIP
        3
    """
    det = tracks.detections
    out = []
    for i, name in enumerate(class_names_of(tracks)):
        x0, y0, x1, y1 = (float(v) for v in det.xyxy[i])
        annotation: dict[str, Any] = {
            "category_id": list(classes).index(name) + 1,
            "track_id": _track_id(det, i),
            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
            "area": round((x1 - x0) * (y1 - y0), 2),
            "iscrowd": 0,
            "score": 1.0 if det.confidence is None else round(float(det.confidence[i]), 4),
        }
        if masks and det.mask is not None:
            annotation["segmentation"] = mask_to_coco_rle(det.mask[i])
            annotation["area"] = float(int(det.mask[i].sum()))
        out.append(annotation)
    return out


def id_png(tracks: FrameTracks) -> bytes:
    """A PNG where each pixel holds the track id of the object there (0: none); where masks
    overlap the later object wins (:func:`ovperc.masks.encode_instance_png`'s rule). 8-bit
    while every id fits, else 16-bit.

    Example:
        >>> png = id_png(tracks)  # doctest: +SKIP
    """
    width, height = tracks.size
    det = tracks.detections
    masks = det.mask if det.mask is not None and len(det) else np.zeros((0, height, width), bool)
    values = [_track_id(det, i) for i in range(len(masks))]
    return encode_instance_png(masks, (height, width), values=values)


class TrackAnnotator:
    """Draws masks, boxes and ``#id class`` labels on frames, coloured by track id
    (supervision's annotators), so an object keeps its colour while it is tracked.

    Example:
        >>> annotator = TrackAnnotator()
        >>> annotator.draw(frame.image, tracks).shape == frame.image.shape  # doctest: +SKIP
        True
    """

    def __init__(self) -> None:
        self._size: tuple[int, int] | None = None
        self._annotators: tuple[Any, Any, Any] | None = None

    def _for_size(self, size: tuple[int, int]) -> tuple[Any, Any, Any]:
        """Mask, box and label annotators with lines and text sized for ``size`` frames."""
        import supervision as sv

        if self._annotators is None or self._size != size:
            lookup = sv.ColorLookup.TRACK
            thickness = sv.calculate_optimal_line_thickness(size)
            scale = max(0.35, sv.calculate_optimal_text_scale(size))
            self._annotators = (
                sv.MaskAnnotator(opacity=0.45, color_lookup=lookup),
                sv.BoxAnnotator(thickness=thickness, color_lookup=lookup),
                sv.LabelAnnotator(text_scale=scale, text_thickness=max(1, thickness // 2),
                                  text_padding=max(2, thickness), color_lookup=lookup, smart_position=True),
            )
            self._size = size
        return self._annotators

    def draw(self, image: np.ndarray, tracks: FrameTracks) -> np.ndarray:
        """A new RGB frame with the tracks drawn on ``image`` (RGB ``uint8``)."""
        det = tracks.detections
        if len(det) == 0:
            return image.copy()
        det = _for_drawing(det)
        labels = [f"#{_track_id(det, i)} {name}" for i, name in enumerate(class_names_of(tracks))]
        masks, boxes, texts = self._for_size((image.shape[1], image.shape[0]))
        canvas = np.ascontiguousarray(image[..., ::-1])  # supervision draws numpy images as BGR
        if det.mask is not None:
            canvas = masks.annotate(canvas, det)
        canvas = boxes.annotate(canvas, det)
        canvas = texts.annotate(canvas, det, labels=labels)
        return np.ascontiguousarray(canvas[..., ::-1])


def _for_drawing(det: sv.Detections) -> sv.Detections:
    det = det[:]
    if det.tracker_id is None:
        det.tracker_id = np.zeros(len(det), dtype=int)
    return det


def _track_id(det: sv.Detections, i: int) -> int:
    return 0 if det.tracker_id is None else int(det.tracker_id[i])
