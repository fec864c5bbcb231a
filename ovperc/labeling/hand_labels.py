"""The labels a person wrote, read and added to without changing a byte of theirs.

Readers of each format's own label files (YOLO lines, boxes or polygons; Pascal VOC XML; a
COCO file's categories), the overlap test of ``--existing merge`` and the writers that add
ovperc's labels to them: new YOLO lines and VOC objects go after the file's text as it is, a
COCO file keeps every image, annotation and category id and gets new ones after them.

Example:
    >>> yolo_boxes("0 0.5 0.5 0.5 0.5\\n", (40, 40))
    array([[10., 10., 30., 30.]])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

import numpy as np

if TYPE_CHECKING:
    import supervision as sv


def coco_classes(coco: Mapping[str, Any]) -> list[str]:
    """A COCO file's category names in order of their ids (a repeated name counts once).

    Example:
        >>> coco_classes({"categories": [{"id": 3, "name": "dog"}, {"id": 1, "name": "cat"}]})
        ['cat', 'dog']
    """
    ordered = sorted(coco["categories"], key=lambda c: (not isinstance(c.get("id"), int), c.get("id", 0)))
    return list(dict.fromkeys(str(c.get("name")) for c in ordered))


def coco_image_name(file_name: str) -> str:
    """A COCO ``file_name`` as a path under ``images/`` (a leading ``images/`` dropped).

    Example:
        >>> coco_image_name("images/cam/a.jpg"), coco_image_name("a.jpg")
        ('cam/a.jpg', 'a.jpg')
    """
    parts = PurePosixPath(file_name.replace("\\", "/")).parts
    return PurePosixPath(*parts[1:]).as_posix() if len(parts) > 1 and parts[0] == "images" else file_name


def yolo_boxes(text: str, image_hw: tuple[int, int], path: Path | str = "labels") -> np.ndarray:
    """The boxes of a YOLO label file's lines (boxes or polygons), ``xyxy`` pixels.

    Raises:
        ValueError: a line is not a YOLO box or polygon.

    Example:
        >>> yolo_boxes("0 0.5 0.5 0.5 0.5\\n", (40, 40))
        array([[10., 10., 30., 30.]])
    """
    height, width = image_hw
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        try:
            numbers = [float(v) for v in values[1:]]
            int(values[0])
        except ValueError:
            numbers = []
        if len(numbers) in (4, 5):
            cx, cy, w, h = numbers[:4]
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        elif len(numbers) >= 6:
            points = np.array(numbers[: len(numbers) // 2 * 2]).reshape(-1, 2)
            box = [*points.min(axis=0), *points.max(axis=0)]
        else:
            raise ValueError(f"{path} line {number} is not a YOLO box or polygon ({line.strip()[:60]!r}); "
                             "its labels are left as they are")
        boxes.append(box)
    scale = np.array([width, height, width, height], dtype=np.float64)
    return np.array(boxes, dtype=np.float64).reshape(-1, 4) * scale


def voc_boxes(text: str, path: Path | str = "annotation") -> np.ndarray:
    """The ``bndbox`` of every object of a Pascal VOC XML, ``xyxy`` pixels.

    Raises:
        ValueError: not XML, or an object without a numeric box.

    Example:
        >>> voc_boxes("<annotation><object><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax>"
        ...           "<ymax>4</ymax></bndbox></object></annotation>")
        array([[1., 2., 3., 4.]])
    """
    try:
        root = ElementTree.fromstring(text)
        boxes = [[float(str(o.findtext(f"bndbox/{k}"))) for k in ("xmin", "ymin", "xmax", "ymax")]
                 for o in root.iter("object")]
    except (ElementTree.ParseError, ValueError) as error:
        raise ValueError(f"{path} is not a Pascal VOC annotation ovperc can read ({error}); its labels "
                         "are left as they are") from None
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``xyxy`` boxes, ``(len(a), len(b))``.

    Example:
        >>> box_iou(np.array([[0., 0., 2., 2.]]), np.array([[1., 0., 3., 2.]]))
        array([[0.33333333]])
    """
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def voc_insert(text: str, detections: sv.Detections, classes: list[str],
               path: Path | str = "annotation") -> str:
    """A VOC XML's text with new objects inserted before its closing ``</annotation>``.

    Raises:
        ValueError: the text has no ``</annotation>``.

    Example:
        >>> voc_insert("<annotation>\\n</annotation>\\n", det, ["dog"])  # doctest: +SKIP
    """
    from supervision.dataset.formats.pascal_voc import object_to_pascal_voc

    end = text.rfind("</annotation>")
    if end < 0:
        raise ValueError(f"{path} has no </annotation>; its labels are left as they are")
    parts = []
    for i in range(len(detections)):
        obj = object_to_pascal_voc(np.asarray(detections.xyxy[i], dtype=np.float64),
                                   name=classes[int(detections.class_id[i])])
        if detections.confidence is not None:
            ElementTree.SubElement(obj, "confidence").text = f"{float(detections.confidence[i]):.4f}"
        ElementTree.indent(obj, space="  ", level=1)
        parts.append("  " + ElementTree.tostring(obj, encoding="unicode").strip() + "\n")
    if not parts:
        return text
    head = text[:end]
    if not head.endswith("\n"):
        head += "\n"
    return head + "".join(parts) + text[end:]


def extend_coco(base: Mapping[str, Any], classes: Sequence[str], parts: Sequence[Mapping[str, Any]]) -> dict:
    """A dataset's own COCO file with ovperc's images and annotations added.

    Everything in ``base`` stays as it is (its images, annotations and categories keep their
    ids); a class it lacks becomes a category after its highest id; an image it lists gets
    the part's annotations, another image is added after its highest image id.

    Args:
        base: the dataset's own ``annotations.json``.
        classes: the run's classes by ovperc id (a part's ``category_id`` is id + 1).
        parts: ovperc's per-image parts (``{"image", "annotations"}``), in dataset order.

    Example:
        >>> base = {"images": [], "annotations": [], "categories": [{"id": 7, "name": "cat"}]}
        >>> [c["id"] for c in extend_coco(base, ["cat", "dog"], [])["categories"]]
        [7, 8]
    """
    categories = [dict(c) for c in base["categories"]]
    category_of: dict[str, int] = {}
    for category in categories:
        category_of.setdefault(str(category.get("name")), category.get("id"))  # type: ignore[arg-type]
    next_category = _next_id(categories)
    for name in classes:
        if name not in category_of:
            categories.append({"id": next_category, "name": name, "supercategory": "common-objects"})
            category_of[name] = next_category
            next_category += 1
    images = [dict(i) for i in base["images"]]
    image_of = {coco_image_name(str(i.get("file_name", ""))): i.get("id") for i in images}
    next_image = _next_id(images)
    annotations = [dict(a) for a in base["annotations"]]
    next_annotation = _next_id(annotations)
    for part in parts:
        image = dict(part["image"])
        image_id = image_of.get(str(image["file_name"]))
        if image_id is None:
            image_id = next_image
            images.append({"id": image_id, **image})
            image_of[str(image["file_name"])] = image_id
            next_image += 1
        for annotation in part["annotations"]:
            category = category_of[classes[int(annotation["category_id"]) - 1]]
            annotations.append({"id": next_annotation, "image_id": image_id, **annotation,
                                "category_id": category})
            next_annotation += 1
    return {**base, "categories": categories, "images": images, "annotations": annotations}


def _next_id(records: Sequence[Mapping[str, Any]]) -> int:
    ids = [r.get("id") for r in records if isinstance(r.get("id"), int)]
    return max(ids, default=0) + 1
