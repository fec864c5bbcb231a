"""``ovperc segment``: the same dataset with a mask for every box; resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ovperc.datasets.io import load_dataset
from ovperc.datasets.segment import segment_dataset
from tests.datasets.helpers import write_coco_gt, write_predictions, write_yolo_gt

BOXES = {
    "a.png": [([10, 10, 50, 50], "cat"), ([60, 60, 100, 100], "dog")],
    "b.png": [([20, 30, 90, 80], "dog")],
    "c.png": [],
}


class BoxFiller:
    """A deterministic segmenter: each mask is its box's inner half (in x), so masks are
    known exactly and differ from the boxes."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.calls = 0
        self.images = 0
        self.stop_after = stop_after

    def segment(self, images, detections):
        self.calls += 1
        out = []
        for image, det in zip(images, detections):
            if self.stop_after is not None and self.images >= self.stop_after:
                raise KeyboardInterrupt
            self.images += 1
            det = det[:]
            det.mask = np.zeros((len(det), *image.shape[:2]), dtype=bool)
            for i, (x1, y1, x2, y2) in enumerate(det.xyxy.astype(int)):
                det.mask[i, y1:y2, x1:(x1 + x2) // 2] = True
            out.append(det)
        return out


def boxes_by_key(root: Path) -> dict[str, list]:
    return {item.key: sorted(zip(np.round(item.detections.xyxy).astype(int).tolist(),
                                 item.detections.data["class_name"].tolist()))
            for item in load_dataset(root)}


def assert_aligned(root: Path) -> None:
    """Every box has a mask, and every mask lies inside its box."""
    for item in load_dataset(root):
        det = item.detections
        if len(det) == 0:
            continue
        assert det.mask is not None and det.mask.shape[0] == len(det)
        for mask, (x1, y1, x2, y2) in zip(det.mask, det.xyxy):
            ys, xs = np.nonzero(mask)
            if len(xs):
                assert xs.min() >= np.floor(x1) - 1 and xs.max() <= np.ceil(x2)
                assert ys.min() >= np.floor(y1) - 1 and ys.max() <= np.ceil(y2)


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_boxes_classes_and_images_kept_masks_added(tmp_path, fmt):
    scores = {name: (boxes, [1.0] * len(boxes)) for name, boxes in BOXES.items()}
    src = (write_coco_gt(tmp_path / "in", BOXES) if fmt == "coco"
           else write_predictions(tmp_path / "in", "voc", scores))

    report = segment_dataset(BoxFiller(), src, tmp_path / "out", progress=False)

    assert report.exit_code == 0 and report.images_done == 3
    before, after = load_dataset(src), load_dataset(tmp_path / "out")
    assert after.format == fmt and after.classes == before.classes
    assert boxes_by_key(tmp_path / "out") == boxes_by_key(src)
    for name in BOXES:
        assert (tmp_path / "out" / "images" / name).read_bytes() == (src / "images" / name).read_bytes()
    item = after.images()["a.png"]
    x1, y1, x2, y2 = 10, 10, 50, 50
    expected = np.zeros(item.detections.mask.shape[1:], dtype=bool)
    expected[y1:y2, x1:(x1 + x2) // 2] = True
    cat = list(item.detections.data["class_name"]).index("cat")
    assert np.array_equal(item.detections.mask[cat], expected)
    assert report.detections_per_class == {"cat": 1, "dog": 2}


def test_yolo_splits_and_data_yaml_kept_polygons_inside_boxes(tmp_path):
    src = write_yolo_gt(tmp_path / "in", BOXES, split="train")
    write_yolo_gt(tmp_path / "in", {"v.png": [([5, 5, 40, 40], "dog")]}, split="valid")

    segment_dataset(BoxFiller(), src, tmp_path / "out", progress=False)

    out = tmp_path / "out"
    assert (out / "data.yaml").read_text() == (src / "data.yaml").read_text()
    assert sorted(load_dataset(out).images()) == ["train/a.png", "train/b.png", "train/c.png",
                                                  "valid/v.png"]
    lines = (out / "train" / "labels" / "a.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1"]
    assert all(len(line.split()) > 5 for line in lines)  # polygons, not boxes
    assert_aligned(out)
    # YOLO-seg boxes are the polygons' extents: inside the original boxes, same classes
    original = boxes_by_key(src)
    for key, boxes in boxes_by_key(out).items():
        assert [c for _, c in boxes] == [c for _, c in original[key]]


def test_tiny_sam_masks_every_box(tmp_path, tiny_sam):
    from ovperc.stages.sam import SamSegmenter

    src = write_coco_gt(tmp_path / "in", BOXES)
    report = segment_dataset(SamSegmenter(tiny_sam, device="cpu"), src, tmp_path / "out",
                             batch_size=2, progress=False)

    assert report.exit_code == 0
    data = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert len(data["annotations"]) == 3
    assert all(isinstance(a["segmentation"], dict) and "counts" in a["segmentation"]
               for a in data["annotations"])
    assert boxes_by_key(tmp_path / "out") == boxes_by_key(src)
    assert_aligned(tmp_path / "out")


def test_interrupted_run_resumes_to_the_clean_result(tmp_path):
    src = write_coco_gt(tmp_path / "in", BOXES)
    clean = segment_dataset(BoxFiller(), src, tmp_path / "clean", batch_size=1, progress=False)
    assert clean.exit_code == 0

    first = segment_dataset(BoxFiller(stop_after=1), src, tmp_path / "out", batch_size=1,
                            progress=False)
    assert first.interrupted and first.images_done == 1
    second_segmenter = BoxFiller()
    second = segment_dataset(second_segmenter, src, tmp_path / "out", batch_size=1, progress=False)

    assert second.exit_code == 0 and second.already_done == 1
    assert second_segmenter.images == 1  # b.png only: a.png was done, c.png has no box
    for name in ("annotations.json", "images/a.png", "images/b.png", "images/c.png"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()


def test_changed_settings_are_refused_unless_overwrite(tmp_path):
    from ovperc.labeling.manifest import ManifestMismatchError

    src = write_coco_gt(tmp_path / "in", BOXES)
    segment_dataset(BoxFiller(), src, tmp_path / "out", signature={"segmenter": "a"}, progress=False)
    with pytest.raises(ManifestMismatchError):
        segment_dataset(BoxFiller(), src, tmp_path / "out", signature={"segmenter": "b"},
                        progress=False)
    report = segment_dataset(BoxFiller(), src, tmp_path / "out", signature={"segmenter": "b"},
                             overwrite=True, progress=False)
    assert report.images_done == 3 and report.already_done == 0


def test_bad_image_is_skipped_with_a_reason(tmp_path):
    src = write_coco_gt(tmp_path / "in", BOXES)
    (src / "images" / "b.png").write_bytes(b"not a png at all")

    report = segment_dataset(BoxFiller(), src, tmp_path / "out", progress=False)

    assert report.exit_code == 1
    assert [s["path"] for s in report.skipped] == ["b.png"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["skipped"][0]["path"] == "b.png"
    assert sorted(load_dataset(tmp_path / "out").images()) == ["a.png", "c.png"]


def test_output_inside_the_dataset_is_refused(tmp_path):
    src = write_coco_gt(tmp_path / "in", BOXES)
    with pytest.raises(ValueError, match="must not be"):
        segment_dataset(BoxFiller(), src, src / "masks-out", progress=False)


def test_cli_segment_with_tiny_sam(tmp_path, tiny_sam, capsys):
    from ovperc.cli import main

    src = write_yolo_gt(tmp_path / "in", BOXES)
    code = main(["segment", str(src), "--out", str(tmp_path / "out"), "--segmenter", str(tiny_sam),
                 "--device", "cpu", "--no-progress"])
    assert code == 0
    assert "3 images" in capsys.readouterr().out
    assert sorted(load_dataset(tmp_path / "out").images()) == ["a.png", "b.png", "c.png"]


def test_segmenter_failure_on_one_image_skips_only_that_image(tmp_path):
    class FailsOnOneBox(BoxFiller):
        def segment(self, images, detections):
            if any(len(d) == 1 for d in detections):
                raise RuntimeError("boom")
            return super().segment(images, detections)

    src = write_coco_gt(tmp_path / "in", BOXES)
    report = segment_dataset(FailsOnOneBox(), src, tmp_path / "out", batch_size=3, progress=False)

    assert report.exit_code == 1
    skipped = [(s["path"], s["reason"].split(" (")[0]) for s in report.skipped]
    assert skipped == [("b.png", "segmenter failed")]
    assert sorted(load_dataset(tmp_path / "out").images()) == ["a.png", "c.png"]
