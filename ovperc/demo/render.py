"""What the page shows of a result: the annotated image, the table, the tags, the mask PNG.

Colours follow the class *name* (a stable hash into supervision's palette), not the
class id, which depends on the order of the classes typed in one request: a class keeps
its colour from run to run and from image to image. A hash can give two names one colour;
the few classes toy models know are *reserved* the first palette colours, so they never
share one. Labels are kept inside the image.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ovperc.result import Perception

#: Column headers of the detections table.
TABLE_HEADERS = ["#", "class", "score", "CLIP class", "CLIP score", "x1", "y1", "x2", "y2"]


def color_index(name: str, size: int, reserved: Sequence[str] = ()) -> int:
    """The palette index of a class name: the same for a name in every run and process.

    Args:
        name: the class name (case and spacing ignored).
        size: the palette's number of colours.
        reserved: names that take indices 0, 1, ... in order; other names are hashed.

    Example:
        >>> color_index("dog", 21) == color_index(" Dog", 21)
        True
        >>> color_index("blue square", 21, reserved=["red circle", "blue square"])
        1
    """
    key = " ".join(name.lower().split())
    for index, known in enumerate(reserved):
        if " ".join(known.lower().split()) == key:
            return index % size
    return zlib.crc32(key.encode("utf-8")) % size


def annotate(perception: Perception, image: np.ndarray | None = None, *,
             reserved: Sequence[str] = ()) -> np.ndarray:
    """Draw masks, boxes and labels (class and score), coloured by class name.

    Args:
        perception: the result to draw.
        image: the RGB image to draw on; defaults to the result's own image.
        reserved: class names that get the first palette colours (see :func:`color_index`).

    Returns:
        A new RGB ``uint8`` array.

    Raises:
        ValueError: neither the result nor the call holds an image.

    Example:
        >>> PIL.Image.fromarray(annotate(result)).save("annotated.png")  # doctest: +SKIP
    """
    import supervision as sv

    image = perception.image if image is None else image
    if image is None:
        raise ValueError("this result holds no image; pass the image to annotate()")
    det = perception.detections
    if len(det) == 0:
        return image.copy()
    canvas = np.ascontiguousarray(image[..., ::-1])  # supervision draws numpy images as BGR
    names = perception.class_names
    if not names:
        names = [str(i) for i in (det.class_id if det.class_id is not None else [0] * len(det))]
    palette = sv.ColorPalette.DEFAULT
    lookup = np.array([color_index(name, len(palette.colors), reserved) for name in names],
                      dtype=np.int64)
    labels = [name if det.confidence is None else f"{name} {det.confidence[i]:.2f}"
              for i, name in enumerate(names)]
    height, width = canvas.shape[:2]
    scale = sv.calculate_optimal_text_scale(resolution_wh=(width, height))
    thickness = sv.calculate_optimal_line_thickness(resolution_wh=(width, height))
    if det.mask is not None:
        canvas = sv.MaskAnnotator(color=palette, opacity=0.45).annotate(
            canvas, det, custom_color_lookup=lookup)
    canvas = sv.BoxAnnotator(color=palette, thickness=thickness).annotate(
        canvas, det, custom_color_lookup=lookup)
    # smart_position moves a label that would cross the image edge back inside it
    canvas = sv.LabelAnnotator(color=palette, text_scale=scale, text_thickness=max(1, thickness // 2),
                               smart_position=True).annotate(
        canvas, det, labels=labels, custom_color_lookup=lookup)
    return np.ascontiguousarray(canvas[..., ::-1])


def instance_mask(perception: Perception) -> np.ndarray | None:
    """One image of instance ids: pixel value ``k`` is detection ``k`` (1-based), 0 is none.

    Where masks overlap, the later detection wins, as in every mask ovperc writes
    (:func:`ovperc.masks.instance_ids`). The array is ``uint8`` up to 255 detections, else
    ``uint16``; ``None`` without masks.

    Example:
        >>> instance_mask(result).max() == len(result.detections)  # doctest: +SKIP
        True
    """
    det = perception.detections
    if det.mask is None or len(det) == 0:
        return None
    from ovperc.masks import instance_ids

    return instance_ids(det.mask)


def detections_table(perception: Perception) -> list[list[Any]]:
    """Rows of :data:`TABLE_HEADERS`: number, class, score, CLIP class and score, box.

    Example:
        >>> detections_table(result)[0][:3]  # doctest: +SKIP
        [1, 'dog', 0.871]
    """
    det = perception.detections
    clip_class = det.data.get("clip_class")
    clip_score = det.data.get("clip_score")
    rows = []
    for i in range(len(det)):
        rows.append([
            i + 1,
            perception.class_names[i] if perception.class_names else str(det.class_id[i]),
            None if det.confidence is None else round(float(det.confidence[i]), 3),
            "" if clip_class is None else str(clip_class[i]),
            "" if clip_score is None else f"{float(clip_score[i]):.3f}",
            *(round(float(v), 1) for v in det.xyxy[i]),
        ])
    return rows


def tag_scores(perception: Perception) -> dict[str, float]:
    """Tags as ``{name: score}``, best first.

    Example:
        >>> tag_scores(result)  # doctest: +SKIP
        {'dog': 0.93, 'grass': 0.71}
    """
    return {tag.name: float(tag.score) for tag in perception.tags}
