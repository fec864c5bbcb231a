"""Every format round-trips through supervision's loaders: same boxes, classes and masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from ovperc.labeling.writers import ImageItem, make_writer
from ovperc.masks import decode_instance_png, mask_polygon

CLASSES = ["person", "car", "dog"]


def _image(tmp_path: Path, name: str, w: int, h: int) -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(path)
    return path


def _detections(w: int, h: int) -> sv.Detections:
    masks = np.zeros((3, h, w), bool)
    masks[0, 10:60, 8:40] = True
    masks[1, 40:80, 60:120] = True
    masks[1, 44:52, 70:80] = False  # a hole
    masks[2, 4:16, 100:116] = True
    masks[2, 70:90, 4:24] = True  # a second piece
    xyxy = sv.mask_to_xyxy(masks).astype(np.float32) + np.array([0, 0, 1, 1], np.float32)
    return sv.Detections(xyxy=xyxy, mask=masks, class_id=np.array([0, 1, 0]),
                         confidence=np.array([0.9, 0.8, 0.5], np.float32))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


def _write(tmp_path: Path, fmt: str, masks: bool) -> tuple[Path, dict[str, sv.Detections]]:
    out = tmp_path / "out"
    writer = make_writer(fmt, out, masks=masks, mask_png=masks)
    written = {}
    for stem, (w, h) in {"a": (128, 96), "b": (128, 96), "empty": (32, 32)}.items():
        det = _detections(w, h) if stem != "empty" else sv.Detections.empty()
        if stem == "empty":
            det.class_id = np.zeros(0, int)
        src = _image(tmp_path, f"{stem}.png", w, h)
        writer.write(ImageItem(src, stem, ".png", w, h), det, CLASSES)
        written[f"{stem}.png"] = det
    writer.finalize(CLASSES, ["a", "b", "empty"])
    return out, written


def _by_name(dataset: sv.DetectionDataset) -> dict[str, sv.Detections]:
    return {Path(path).name: det for path, _, det in dataset}


@pytest.mark.parametrize("masks", [False, True])
def test_yolo_round_trip(tmp_path: Path, masks: bool) -> None:
    out, written = _write(tmp_path, "yolo", masks)
    dataset = sv.DetectionDataset.from_yolo(
        images_directory_path=str(out / "images"),
        annotations_directory_path=str(out / "labels"),
        data_yaml_path=str(out / "data.yaml"),
    )
    assert dataset.classes == CLASSES
    loaded = _by_name(dataset)
    assert set(loaded) == set(written)
    for name, det in written.items():
        got = loaded[name]
        assert len(got) == len(det)  # one line per detection, even for masks in pieces
        np.testing.assert_array_equal(got.class_id, det.class_id)
        if not masks:
            np.testing.assert_allclose(got.xyxy, det.xyxy, atol=0.01)
        elif len(det):
            assert got.mask is not None
            for i in range(len(det)):
                assert _iou(got.mask[i], det.mask[i]) > 0.8, (name, i)


@pytest.mark.parametrize("masks", [False, True])
def test_coco_round_trip(tmp_path: Path, masks: bool) -> None:
    out, written = _write(tmp_path, "coco", masks)
    dataset = sv.DetectionDataset.from_coco(
        images_directory_path=str(out / "images"),
        annotations_path=str(out / "annotations.json"),
    )
    assert dataset.classes == CLASSES
    loaded = _by_name(dataset)
    for name, det in written.items():
        got = loaded[name]
        assert len(got) == len(det)
        np.testing.assert_array_equal(got.class_id, det.class_id)
        np.testing.assert_allclose(got.xyxy, det.xyxy, atol=0.01)
        if masks and len(det):
            np.testing.assert_array_equal(got.mask, det.mask)  # RLE is lossless
    coco = json.loads((out / "annotations.json").read_text())
    assert [img["id"] for img in coco["images"]] == [1, 2, 3]
    assert [a["id"] for a in coco["annotations"]] == list(range(1, 7))
    assert coco["annotations"][0]["score"] == 0.9


def test_coco_is_readable_by_pycocotools(tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    out, written = _write(tmp_path, "coco", True)
    coco = COCO(str(out / "annotations.json"))
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[1]
    np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), written["a.png"].mask[1])


@pytest.mark.parametrize("masks", [False, True])
def test_voc_round_trip(tmp_path: Path, masks: bool) -> None:
    out, written = _write(tmp_path, "voc", masks)
    dataset = sv.DetectionDataset.from_pascal_voc(
        images_directory_path=str(out / "images"),
        annotations_directory_path=str(out / "annotations"),
    )
    loaded = _by_name(dataset)
    assert (out / "labels.txt").read_text().split("\n")[:3] == CLASSES
    for name, det in written.items():
        got = loaded[name]
        assert len(got) == len(det)
        assert [dataset.classes[i] for i in got.class_id] == [CLASSES[i] for i in det.class_id]
        np.testing.assert_allclose(got.xyxy, det.xyxy, atol=1.0)
        png = out / "masks" / name
        assert png.exists() == masks
        if masks and len(det):
            instances = decode_instance_png(png)
            for i in range(len(det)):  # later masks are drawn on top of earlier ones
                visible = det.mask[i] & ~det.mask[i + 1 :].any(0)
                np.testing.assert_array_equal(instances[i], visible)


def test_mask_polygon_joins_pieces_and_holes() -> None:
    det = _detections(128, 96)
    for i in range(3):
        polygon = mask_polygon(det.mask[i], approximation=0.0)
        filled = sv.polygon_to_mask(polygon.round().astype(np.int32), (128, 96)).astype(bool)
        assert _iou(filled, det.mask[i]) > 0.85
    assert mask_polygon(np.zeros((5, 5), bool)) is None


def test_unknown_format_and_bad_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="yolo, coco, voc"):
        make_writer("kitti", tmp_path)
    writer = make_writer("yolo", tmp_path)
    src = _image(tmp_path, "x.png", 8, 8)
    det = sv.Detections(xyxy=np.array([[0, 0, 4, 4]], np.float32), class_id=np.array([5]))
    with pytest.raises(ValueError, match="class ids"):
        writer.write(ImageItem(src, "x", ".png", 8, 8), det, CLASSES)
