"""Export a dataset as Label Studio tasks with the labels as pre-annotations (predictions).

Each image becomes one task: ``data.image`` is the image's URL and ``predictions[0]``
holds one ``rectanglelabels`` region per box and, when the dataset has masks, one
``polygonlabels`` region per mask piece, all in percent of the image size with
``original_width``/``original_height``. :func:`labeling_config` writes the matching
labelling config; the schema the output follows is ``label_studio_schema.json`` next to
this module (written from Label Studio's import documentation).

Masks go out as polygons (supervision's ``mask_to_polygons``), which Label Studio imports
natively and a reviewer edits point by point.

The reviewed labels come back with :mod:`ovperc.datasets.label_studio_import`
(``ovperc import label-studio``): ``meta.key``, ``data.image`` and the region ids written
here (box ``r3``, its outline pieces ``r3p0``, ``r3p1``) are what it matches them by.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from xml.etree import ElementTree

import numpy as np

from ovperc.atomic import atomic_file
from ovperc.datasets.io import LabeledImage, load_dataset
from ovperc.masks import POLYGON_MAX_EXACT, mask_polygons  # noqa: F401  (POLYGON_MAX_EXACT: documented here)

if TYPE_CHECKING:
    import supervision as sv

logger = logging.getLogger(__name__)

#: names used in the labelling config; the tasks' regions refer to them.
IMAGE_NAME = "image"
BOX_NAME = "box"
POLYGON_NAME = "polygon"
SCHEMA_PATH = Path(__file__).with_name("label_studio_schema.json")
#: share of points removed (Ramer-Douglas-Peucker) from outlines longer than
#: :data:`POLYGON_MAX_EXACT` points, so reviewers get editable polygons.
POLYGON_APPROXIMATION = 0.5


def load_schema() -> dict[str, Any]:
    """The JSON Schema of the task files :func:`export_label_studio` writes.

    Example:
        >>> load_schema()["type"]
        'array'
    """
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file as displayed (EXIF rotation applied), header only.

    Example:
        >>> image_size("photo.jpg")  # doctest: +SKIP
        (640, 480)
    """
    from PIL import Image

    with Image.open(path) as img:
        width, height = img.size
        orientation = img.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _pct(value: float, total: int) -> float:
    return round(min(max(float(value) / total * 100.0, 0.0), 100.0), 4)


def regions(detections: sv.Detections, width: int, height: int, *, masks: bool = True) -> list[dict]:
    """Label Studio result regions for one image's detections.

    Every box is a ``rectanglelabels`` region; with ``masks`` and ``detections.mask`` set,
    each mask piece is a ``polygonlabels`` region too. ``score`` is the confidence.

    Example:
        >>> regions(det, 640, 480)[0]["value"]["rectanglelabels"]  # doctest: +SKIP
        ['dog']
    """
    names = detections.data.get("class_name")
    out: list[dict] = []
    for i in range(len(detections)):
        label = str(names[i]) if names is not None else str(int(detections.class_id[i]))
        x1, y1, x2, y2 = (float(v) for v in detections.xyxy[i])
        x, y = _pct(x1, width), _pct(y1, height)
        common: dict[str, Any] = {"original_width": int(width), "original_height": int(height),
                                  "image_rotation": 0}
        if detections.confidence is not None:
            common["score"] = round(float(detections.confidence[i]), 4)
        out.append({
            "id": f"r{i}", "from_name": BOX_NAME, "to_name": IMAGE_NAME, "type": "rectanglelabels",
            "value": {"x": x, "y": y, "width": round(min(_pct(x2, width) - x, 100.0 - x), 4),
                      "height": round(min(_pct(y2, height) - y, 100.0 - y), 4), "rotation": 0,
                      "rectanglelabels": [label]},
            **common,
        })
        if masks and detections.mask is not None:
            for k, polygon in enumerate(mask_polygons(detections.mask[i], POLYGON_APPROXIMATION)):
                points = [[_pct(px, width), _pct(py, height)] for px, py in polygon]
                out.append({
                    "id": f"r{i}p{k}", "from_name": POLYGON_NAME, "to_name": IMAGE_NAME,
                    "type": "polygonlabels",
                    "value": {"points": points, "closed": True, "polygonlabels": [label]},
                    **common,
                })
    return out


def image_url(item: LabeledImage, dataset_root: Path, image_root_url: str | None) -> str:
    """Where Label Studio fetches an image from.

    With ``image_root_url``, the image's path relative to the dataset folder is appended
    to it (``https://host/data`` -> ``https://host/data/images/a.jpg``). Without it, the
    image is served by Label Studio's local-files storage,
    ``/data/local-files/?d=<dataset folder name>/<path>``: start Label Studio with
    ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
    ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` set to the dataset's parent folder.

    Example:
        >>> image_url(item, Path("dataset"), "http://localhost:8000")  # doctest: +SKIP
        'http://localhost:8000/images/a.jpg'
    """
    rel = Path(os.path.relpath(item.path, dataset_root)).as_posix()
    if image_root_url:
        return f"{image_root_url.rstrip('/')}/{quote(rel)}"
    return f"/data/local-files/?d={quote(f'{dataset_root.resolve().name}/{rel}')}"


def tasks(
    dataset: str | os.PathLike,
    *,
    fmt: str = "auto",
    image_root_url: str | None = None,
    model_version: str = "ovperc",
    masks: bool = True,
) -> Iterator[dict]:
    """Yield one Label Studio task per image of a dataset, with its labels as predictions.

    The prediction's ``score`` is the mean box confidence, so sorting tasks by it in
    Label Studio brings the least certain images first.

    Example:
        >>> next(tasks("dataset/"))["predictions"][0]["result"][0]["type"]  # doctest: +SKIP
        'rectanglelabels'
    """
    ds = load_dataset(dataset, fmt)
    root = Path(dataset)
    for index, item in enumerate(ds, start=1):
        width, height = image_size(item.path)
        det = item.detections
        prediction: dict[str, Any] = {"model_version": model_version,
                                      "result": regions(det, width, height, masks=masks)}
        if len(det) and det.confidence is not None:
            prediction["score"] = round(float(np.mean(det.confidence)), 4)
        yield {"id": index, "data": {"image": image_url(item, root, image_root_url)},
               "meta": {"key": item.key}, "predictions": [prediction]}


def labeling_config(classes: Iterable[str], *, polygons: bool = False) -> str:
    """The Label Studio labelling config (XML) matching the exported tasks.

    Example:
        >>> print(labeling_config(["cat", "dog"]))  # doctest: +NORMALIZE_WHITESPACE
        <View>
          <Image name="image" value="$image" zoom="true" />
          <RectangleLabels name="box" toName="image">
            <Label value="cat" />
            <Label value="dog" />
          </RectangleLabels>
        </View>
    """
    classes = list(classes)
    view = ElementTree.Element("View")
    ElementTree.SubElement(view, "Image", {"name": IMAGE_NAME, "value": f"${IMAGE_NAME}", "zoom": "true"})
    controls = [("RectangleLabels", BOX_NAME)] + ([("PolygonLabels", POLYGON_NAME)] if polygons else [])
    for tag, name in controls:
        control = ElementTree.SubElement(view, tag, {"name": name, "toName": IMAGE_NAME})
        for cls in classes:
            ElementTree.SubElement(control, "Label", {"value": cls})
    ElementTree.indent(view, space="  ")
    return ElementTree.tostring(view, encoding="unicode") + "\n"


def export_label_studio(
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fmt: str = "auto",
    config_out: str | os.PathLike | None = None,
    image_root_url: str | None = None,
    model_version: str = "ovperc",
) -> dict[str, int]:
    """Write a Label Studio import file (and optionally its labelling config).

    The tasks are streamed to a temporary file that replaces ``out`` when complete.

    Args:
        dataset: a YOLO, COCO or Pascal VOC dataset folder (e.g. from ``ovperc label``).
        out: the tasks JSON file to write.
        fmt: the dataset format, ``auto`` to detect it.
        config_out: where to write the labelling config XML (``None``: not written).
        image_root_url: base URL the images are served from (see :func:`image_url`).
        model_version: the ``model_version`` shown on the predictions.

    Returns:
        Counts: ``tasks``, ``rectangles``, ``polygons``.

    Example:
        >>> export_label_studio("dataset/", "tasks.json", config_out="config.xml")  # doctest: +SKIP
        {'tasks': 120, 'rectangles': 431, 'polygons': 0}
    """
    out = Path(out)
    counts = {"tasks": 0, "rectangles": 0, "polygons": 0}
    with atomic_file(out, "w") as handle:
        handle.write("[")
        for task in tasks(dataset, fmt=fmt, image_root_url=image_root_url,
                          model_version=model_version):
            handle.write(("\n" if counts["tasks"] == 0 else ",\n")
                         + json.dumps(task, ensure_ascii=False))
            counts["tasks"] += 1
            for region in task["predictions"][0]["result"]:
                key = "rectangles" if region["type"] == "rectanglelabels" else "polygons"
                counts[key] += 1
        handle.write("\n]\n")
    if config_out is not None:
        classes = load_dataset(dataset, fmt).classes
        config = Path(config_out)
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(labeling_config(classes, polygons=counts["polygons"] > 0), encoding="utf-8")
    return counts
