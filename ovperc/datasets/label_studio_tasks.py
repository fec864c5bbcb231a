"""Read a Label Studio JSON export: each task's reviewed annotation, its image, its regions.

A task's *reviewed annotation* is its latest submitted one: cancelled (skipped) annotations,
drafts and predictions are not reviews. Its regions become objects:

* a ``rectanglelabels`` region is an object's box (rotated boxes: the box around them);
* ``polygonlabels`` and ``brushlabels`` regions are masks. A mask whose id is its box's id
  plus ``p<k>`` (how ``ovperc export`` names the outline pieces of box ``r3``: ``r3p0``,
  ``r3p1``) belongs to that box's object; any other mask region is an object of its own,
  with the box around its mask.

Coordinates are percentages of the image (``original_width`` x ``original_height``); brush
masks are Label Studio's run-length bit stream (:func:`ovperc.masks.brush_rle_to_mask`).

Example:
    >>> annotation = reviewed_annotation(task)  # doctest: +SKIP
    >>> objects = task_objects(annotation["result"], 640, 480)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

#: region types that carry labels ovperc imports.
RECTANGLE, POLYGON, BRUSH = "rectanglelabels", "polygonlabels", "brushlabels"
REGION_TYPES = (RECTANGLE, POLYGON, BRUSH)
_PIECE = re.compile(r"^(?P<box>.+)p\d+$")
#: Label Studio prefixes uploaded files with 8 hex digits and a dash.
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(?P<name>.+)$")


class TaskError(ValueError):
    """A task that cannot be imported; the message says why (the task is skipped)."""


@dataclass
class LabelStudioObject:
    """One reviewed object: its class name, box (pixels) and mask (``None``: box only).

    Example:
        >>> LabelStudioObject("dog", np.array([1., 2., 30., 40.])).mask is None
        True
    """

    name: str
    xyxy: np.ndarray
    mask: np.ndarray | None = None


def task_label(task: Mapping[str, Any], index: int) -> str:
    """How the report names a task: ``task 12`` (its id) or ``task #3`` (its position)."""
    task_id = task.get("id") if isinstance(task, Mapping) else None
    return f"task {task_id}" if task_id is not None else f"task #{index + 1}"


def reviewed_annotation(task: Mapping[str, Any]) -> dict[str, Any] | None:
    """The task's latest submitted (not cancelled) annotation, or ``None`` when it has none.

    Raises:
        TaskError: ``annotations`` is not a list of objects.

    Example:
        >>> reviewed_annotation({"annotations": [{"id": 1, "was_cancelled": True, "result": []}]})
    """
    annotations = task.get("annotations", [])
    if not isinstance(annotations, list) or not all(isinstance(a, Mapping) for a in annotations):
        raise TaskError("its 'annotations' is not a list of annotation objects")
    submitted = [a for a in annotations if not a.get("was_cancelled")]
    if not submitted:
        return None
    latest = max(submitted, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""),
                                           _number(a.get("id"))))
    if not isinstance(latest.get("result"), list):
        raise TaskError(f"annotation {latest.get('id')} has no 'result' list")
    return dict(latest)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else -1.0


def image_reference(task: Mapping[str, Any], field: str = "image") -> str:
    """The image a task shows, as written in its ``data`` (a URL or path).

    Raises:
        TaskError: the task has no ``data.<field>`` string.
    """
    data = task.get("data")
    if not isinstance(data, Mapping) or not isinstance(data.get(field), str) or not data[field]:
        raise TaskError(f"it has no data.{field} naming its image")
    return str(data[field])


def reference_parts(reference: str) -> tuple[str, ...]:
    """The path components an image reference names, with Label Studio's wrappers removed.

    ``/data/local-files/?d=ds/images/a.jpg`` -> ``('ds', 'images', 'a.jpg')``;
    ``/data/upload/3/1a2b3c4d-a.jpg`` -> ``('a.jpg',)`` (uploads keep only the file name);
    ``https://host/ds/images/a%20b.jpg`` -> ``('ds', 'images', 'a b.jpg')``.

    Example:
        >>> reference_parts("/data/local-files/?d=ds/images/a.jpg")
        ('ds', 'images', 'a.jpg')
    """
    parsed = urlparse(reference)
    if "/data/local-files" in parsed.path:
        path = (parse_qs(parsed.query).get("d") or [""])[0]
    elif parsed.scheme in ("s3", "gs", "azure-blob") or parsed.netloc or parsed.scheme in ("http", "https"):
        path = unquote(parsed.path)
    else:
        path = unquote(reference.split("?", 1)[0])
    parts = tuple(p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("/", "", "."))
    if "/data/upload/" in reference and parts:
        match = _UPLOAD_PREFIX.match(parts[-1])
        return (match.group("name"),) if match else (parts[-1],)
    return parts


def region_names(result: Sequence[Any]) -> list[str]:
    """The class names a result's regions use, in order of first use (no geometry is read).

    Raises:
        TaskError: a region is not an object, or carries no label or several.
    """
    names: list[str] = []
    for region in result:
        kind = _kind(region)
        if kind in REGION_TYPES:
            name = _label(region, kind)
            if name not in names:
                names.append(name)
    return names


def task_objects(result: Sequence[Any], width: int, height: int,
                 ignored: dict[str, int] | None = None) -> tuple[list[LabelStudioObject], list[str]]:
    """The objects of one annotation's ``result`` on a ``width`` x ``height`` image.

    Args:
        result: the annotation's regions.
        width, height: the dataset image's size; regions giving another
            ``original_width``/``original_height`` are refused (the task shows another image).
        ignored: counts of regions not imported, by kind (other region types, empty regions).

    Returns:
        The objects in the order their first region comes, and notes (a mask piece whose
        label differs from its box's follows the box).

    Raises:
        TaskError: a malformed region (missing or non-numeric coordinates, no label or
            several, a brush mask that does not decode).

    Example:
        >>> objs, _ = task_objects([{"id": "a", "type": "rectanglelabels", "value": {
        ...     "x": 10, "y": 20, "width": 50, "height": 50, "rectanglelabels": ["dog"]}}], 200, 100)
        >>> objs[0].name, objs[0].xyxy.tolist()
        ('dog', [20.0, 20.0, 120.0, 70.0])
    """
    ignored = {} if ignored is None else ignored
    boxes: dict[str, tuple[str, np.ndarray]] = {}
    masks: dict[str, list[tuple[str, np.ndarray]]] = {}
    order: list[str] = []
    regions = [(str(r.get("id", f"#{k}")), _kind(r), r) for k, r in enumerate(result)]
    for rid, kind, region in regions:
        if kind not in REGION_TYPES:
            ignored[kind] = ignored.get(kind, 0) + 1
            continue
        _check_size(region, rid, width, height)
        name = _label(region, kind)
        if kind == RECTANGLE:
            box = _rectangle(region, rid, width, height)
            if box is None:
                ignored["empty"] = ignored.get("empty", 0) + 1
                continue
            boxes[rid] = (name, box)
            key = rid
        else:
            decode = _polygon if kind == POLYGON else _brush
            mask = decode(region, rid, width, height)
            piece = _PIECE.match(rid)
            key = piece.group("box") if piece else rid  # r3p0, r3p1: pieces of object r3
            masks.setdefault(key, []).append((name, mask))
        if key not in order:
            order.append(key)
    objects, notes = [], []
    for key in order:
        pieces = masks.get(key, [])
        mask = np.logical_or.reduce([m for _, m in pieces]) if pieces else None
        if key in boxes:
            name, box = boxes[key]
            differing = sorted({n for n, _ in pieces} - {name})
            if differing:
                notes.append(f"the outline of box {key} is labelled {', '.join(differing)}; "
                             f"it follows its box ({name})")
        else:
            names = sorted({n for n, _ in pieces})
            if len(names) > 1:
                raise TaskError(f"the pieces of region {key} carry different labels ({', '.join(names)})")
            name = names[0]
            if mask is None or not mask.any():
                ignored["empty"] = ignored.get("empty", 0) + 1
                continue
            box = _mask_box(mask)
        objects.append(LabelStudioObject(name, box, mask))
    return objects, notes


def _kind(region: Any) -> str:
    if not isinstance(region, Mapping):
        raise TaskError(f"a region is {type(region).__name__}, not an object")
    return str(region.get("type", "")).lower()


def _label(region: Mapping[str, Any], kind: str) -> str:
    value = region.get("value")
    labels = value.get(kind) if isinstance(value, Mapping) else None
    if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
        raise TaskError(f"region {region.get('id')} has labels {labels!r}; one label per region is "
                        "imported")
    name = " ".join(labels[0].split())
    if not name:
        raise TaskError(f"region {region.get('id')} has an empty label")
    return name


def _check_size(region: Mapping[str, Any], rid: str, width: int, height: int) -> None:
    size = (region.get("original_width"), region.get("original_height"))
    if size == (None, None):
        return
    if size != (width, height):
        raise TaskError(f"region {rid} was drawn on a {size[0]}x{size[1]} image, but the dataset's "
                        f"image is {width}x{height}: the task shows another image")


def _floats(value: Mapping[str, Any], keys: Iterable[str], rid: str) -> list[float]:
    out = []
    for key in keys:
        number = value.get(key)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise TaskError(f"region {rid} has {key}={number!r}, not a number")
        out.append(float(number))
    return out


def _rectangle(region: Mapping[str, Any], rid: str, width: int, height: int) -> np.ndarray | None:
    value = region["value"]
    x, y, w, h = _floats(value, ("x", "y", "width", "height"), rid)
    angle = math.radians(float(value.get("rotation") or 0.0))
    # Label Studio rotates a box clockwise (y points down) about its top-left corner
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64) / 100.0 * [width, height]
    cos, sin = math.cos(angle), math.sin(angle)
    turned = corners @ np.array([[cos, sin], [-sin, cos]]) + [x / 100.0 * width, y / 100.0 * height]
    x1, y1 = np.clip(turned.min(0), 0, [width, height])
    x2, y2 = np.clip(turned.max(0), 0, [width, height])
    if x2 <= x1 or y2 <= y1:
        return None
    return np.array([x1, y1, x2, y2], dtype=np.float64)


def _polygon(region: Mapping[str, Any], rid: str, width: int, height: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    points = region["value"].get("points")
    if not isinstance(points, list) or len(points) < 3:
        raise TaskError(f"region {rid} has no polygon of 3 or more points")
    pixels = []
    for point in points:
        if not isinstance(point, list) or len(point) != 2:
            raise TaskError(f"region {rid} has a point {point!r}, not [x, y]")
        px, py = _floats(dict(zip("xy", point)), "xy", rid)
        pixels.append((_snap(px / 100.0 * width), _snap(py / 100.0 * height)))
    canvas = Image.new("1", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(pixels, fill=1, outline=1)
    return np.array(canvas, dtype=bool)


def _snap(value: float) -> float:
    """``value``, or the whole pixel it is within 0.01 of: percentages rounded to 4 places
    (as exports write them) must give back the exact pixel corners of an outline."""
    nearest = round(value)
    return float(nearest) if abs(value - nearest) < 0.01 else value


def _brush(region: Mapping[str, Any], rid: str, width: int, height: int) -> np.ndarray:
    from ovperc.masks import brush_rle_to_mask

    value = region["value"]
    rle = value.get("rle", region.get("rle"))
    if str(value.get("format", "rle")).lower() != "rle" or not isinstance(rle, list):
        raise TaskError(f"region {rid} is a brush mask without an 'rle' list")
    if not all(isinstance(b, int) and 0 <= b < 256 for b in rle):
        raise TaskError(f"region {rid} has a brush 'rle' that is not a list of bytes")
    try:
        return brush_rle_to_mask(rle, width, height)
    except ValueError as error:
        raise TaskError(f"region {rid}: {error}") from None


def _mask_box(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)
