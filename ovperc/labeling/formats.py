"""One image's annotations as each dataset format writes them: YOLO lines, COCO annotation
dicts, a Pascal VOC XML. Per-object encoding is supervision's (``object_to_yolo``,
``detections_to_coco_annotations``, ``object_to_pascal_voc``); masks go through
:mod:`ovperc.masks`."""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.etree import ElementTree

import numpy as np

from ovperc.masks import mask_polygon, mask_to_coco_rle

if TYPE_CHECKING:
    import supervision as sv

    from ovperc.labeling.writers import ImageItem


def yolo_lines(detections: sv.Detections, image_hw: tuple[int, int], *, masks: bool) -> list[str]:
    """One YOLO line per detection: a box, or with ``masks`` the mask's polygon.

    Example:
        >>> det = sv.Detections(xyxy=np.array([[0., 0., 10., 20.]]), class_id=np.array([1]))  # doctest: +SKIP
        >>> yolo_lines(det, (40, 40), masks=False)  # doctest: +SKIP
        ['1 0.12500 0.25000 0.25000 0.50000']
    """
    from supervision.dataset.formats.yolo import object_to_yolo

    lines = []
    for i in range(len(detections)):
        xyxy = np.asarray(detections.xyxy[i], dtype=np.float64)
        class_id = int(detections.class_id[i])
        polygon = None
        if masks and detections.mask is not None:
            polygon = mask_polygon(detections.mask[i])
        if polygon is None:
            lines.append(object_to_yolo(xyxy, class_id, image_hw))
        else:
            lines.append(object_to_yolo(xyxy, class_id, image_hw, polygon=polygon))
    return lines


def coco_annotations(detections: sv.Detections, *, masks: bool) -> list[dict]:
    """COCO annotation dicts (without ``id``/``image_id``) for one image's detections.

    Boxes come from supervision's ``detections_to_coco_annotations`` (``category_id`` is
    ``class_id + 1``); masks are compressed RLE from ``pycocotools``.

    Example:
        >>> coco_annotations(det, masks=True)[0]["segmentation"]["size"]  # doctest: +SKIP
        [480, 640]
    """
    import supervision as sv
    from supervision.dataset.formats.coco import detections_to_coco_annotations

    if len(detections) == 0:
        return []
    boxes = sv.Detections(xyxy=np.asarray(detections.xyxy, dtype=np.float64),
                          class_id=np.asarray(detections.class_id, dtype=int))
    records, _ = detections_to_coco_annotations(boxes, image_id=0, annotation_id=0)
    out = []
    for i, record in enumerate(records):
        annotation = {
            "category_id": int(record["category_id"]),
            "bbox": [round(float(v), 2) for v in record["bbox"]],
            "area": round(float(record["area"]), 2),
            "iscrowd": 0,
        }
        if masks and detections.mask is not None:
            annotation["segmentation"] = mask_to_coco_rle(detections.mask[i])
            annotation["area"] = float(int(detections.mask[i].sum()))
        else:
            annotation["segmentation"] = []
        if detections.confidence is not None:
            annotation["score"] = round(float(detections.confidence[i]), 4)
        out.append(annotation)
    return out


def voc_xml(item: ImageItem, detections: sv.Detections, classes: list[str]) -> str:
    """The Pascal VOC XML text of one image (objects from supervision's ``object_to_pascal_voc``).

    Example:
        >>> print(voc_xml(item, det, ["dog"]))  # doctest: +SKIP
    """
    from supervision.dataset.formats.pascal_voc import object_to_pascal_voc

    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "folder").text = "images"
    ElementTree.SubElement(root, "filename").text = item.file_name
    size = ElementTree.SubElement(root, "size")
    ElementTree.SubElement(size, "width").text = str(item.width)
    ElementTree.SubElement(size, "height").text = str(item.height)
    ElementTree.SubElement(size, "depth").text = "3"
    ElementTree.SubElement(root, "segmented").text = "0"
    for i in range(len(detections)):
        xyxy = np.asarray(detections.xyxy[i], dtype=np.float64)
        obj = object_to_pascal_voc(xyxy, name=classes[int(detections.class_id[i])])
        if detections.confidence is not None:
            ElementTree.SubElement(obj, "confidence").text = f"{float(detections.confidence[i]):.4f}"
        root.append(obj)
    ElementTree.indent(root, space="  ")
    return ElementTree.tostring(root, encoding="unicode") + "\n"
