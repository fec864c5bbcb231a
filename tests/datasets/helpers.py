"""Small datasets on disk for the dataset-tool tests: hand-written ground truth and
predictions written by ovperc's own dataset writers (as ``ovperc label`` writes them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import supervision as sv
from PIL import Image

SIZE = (120, 160)  # (height, width) of every test image
CLASSES = ["cat", "dog"]

Box = tuple[list[float], str]  # ([x1, y1, x2, y2], class name)


def make_image(path: Path, seed: int = 0) -> Path:
    """A small RGB PNG with a few flat rectangles (so SAM has edges to find)."""
    rng = np.random.default_rng(seed)
    image = (rng.random((*SIZE, 3)) * 40 + 100).astype(np.uint8)
    image[10:50, 10:50] = (200, 40, 40)
    image[60:100, 60:100] = (40, 40, 200)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def write_coco_gt(root: Path, images: dict[str, list[Box]], classes: list[str] = CLASSES) -> Path:
    """A hand-written COCO dataset: ``images/<name>`` and ``annotations.json``."""
    height, width = SIZE
    data: dict = {"images": [], "annotations": [],
                  "categories": [{"id": i + 1, "name": n} for i, n in enumerate(classes)]}
    for image_id, (name, boxes) in enumerate(sorted(images.items()), start=1):
        make_image(root / "images" / name, image_id)
        data["images"].append({"id": image_id, "file_name": name, "width": width, "height": height})
        for box, cls in boxes:
            x1, y1, x2, y2 = box
            data["annotations"].append({
                "id": len(data["annotations"]) + 1, "image_id": image_id,
                "category_id": classes.index(cls) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    (root / "annotations.json").write_text(json.dumps(data), encoding="utf-8")
    return root


def write_yolo_gt(root: Path, images: dict[str, list[Box]], classes: list[str] = CLASSES,
                  split: str = "") -> Path:
    """A hand-written YOLO dataset: ``[split/]images``, ``[split/]labels``, ``data.yaml``."""
    height, width = SIZE
    base = root / split if split else root
    for seed, (name, boxes) in enumerate(sorted(images.items()), start=1):
        make_image(base / "images" / name, seed)
        lines = []
        for (x1, y1, x2, y2), cls in boxes:
            lines.append(f"{classes.index(cls)} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                         f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
        label = base / "labels" / (Path(name).stem + ".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(classes))
    (root / "data.yaml").write_text(f"nc: {len(classes)}\nnames:\n{names}\n", encoding="utf-8")
    return root


def detections(boxes: list[Box], scores: list[float] | None = None,
               classes: list[str] = CLASSES) -> sv.Detections:
    det = sv.Detections(
        xyxy=np.array([b for b, _ in boxes], dtype=np.float64).reshape(-1, 4),
        class_id=np.array([classes.index(c) for _, c in boxes], dtype=int),
        confidence=None if scores is None else np.array(scores, dtype=np.float32),
    )
    det.data["class_name"] = np.array([c for _, c in boxes], dtype=object)
    return det


def write_predictions(root: Path, fmt: str, images: dict[str, tuple[list[Box], list[float]]],
                      classes: list[str] = CLASSES) -> Path:
    """Predictions written through ``ovperc.labeling.writers`` (what ``ovperc label`` writes)."""
    from ovperc.labeling.writers import ImageItem, make_writer

    height, width = SIZE
    writer = make_writer(fmt, root)
    stems = []
    for seed, (name, (boxes, scores)) in enumerate(sorted(images.items()), start=1):
        src = make_image(root.parent / f"{root.name}-src" / name, seed)
        item = ImageItem(src, Path(name).stem, Path(name).suffix, width, height)
        writer.write(item, detections(boxes, scores, classes), classes)
        stems.append(item.stem)
    writer.finalize(classes, stems)
    return root
