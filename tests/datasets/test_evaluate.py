"""``ovperc evaluate``: scores against hand-made ground truth."""

from __future__ import annotations

import json

import pytest

from ovperc.cli import main
from ovperc.datasets.io import detect_format, load_dataset
from ovperc.datasets.scoring import ClassMismatchError, evaluate, parse_class_map
from tests.datasets.helpers import write_coco_gt, write_predictions, write_yolo_gt

G1, G2 = [10, 10, 50, 50], [60, 60, 100, 100]
G3, G4 = [10, 60, 40, 100], [60, 10, 100, 40]
G5 = [20, 20, 70, 70]
EMPTY_AREA = [110, 70, 150, 110]  # overlaps no ground-truth box

GT = {
    "a.png": [(G1, "cat"), (G2, "dog")],
    "b.png": [(G3, "cat"), (G4, "dog")],
    "c.png": [(G5, "dog")],
}
# One missed box (b: G4 dog), one false positive (b: dog at an empty spot), one wrong class
# (c: G5 called cat). Every other box is exact.
PRED = {
    "a.png": ([(G1, "cat"), (G2, "dog")], [0.9, 0.8]),
    "b.png": ([(G3, "cat"), (EMPTY_AREA, "dog")], [0.7, 0.6]),
    "c.png": ([(G5, "cat")], [0.5]),
}


def identical_predictions() -> dict:
    return {name: (boxes, [1.0] * len(boxes)) for name, boxes in GT.items()}


@pytest.mark.parametrize("pred_format", ["yolo", "coco", "voc"])
def test_identical_datasets_score_one_across_formats(tmp_path, pred_format):
    gt = write_coco_gt(tmp_path / "gt", GT)
    pred = write_predictions(tmp_path / "pred", pred_format, identical_predictions())
    assert detect_format(pred) == pred_format

    result = evaluate(pred, gt)

    assert result.images == 3
    assert result.boxes.map50 == pytest.approx(1.0)
    assert result.boxes.map50_95 == pytest.approx(1.0)
    for c in result.boxes.per_class:
        assert (c.precision, c.recall, c.ap50) == (pytest.approx(1.0),) * 3
    assert result.masks is None


def test_yolo_ground_truth_against_itself(tmp_path):
    gt = write_yolo_gt(tmp_path / "gt", GT)
    result = evaluate(gt, gt)
    assert result.boxes.map50 == pytest.approx(1.0)
    assert result.boxes.map50_95 == pytest.approx(1.0)


def test_constructed_case_gives_hand_computed_numbers(tmp_path):
    # COCO predictions (with scores) against hand-written YOLO ground truth.
    gt = write_yolo_gt(tmp_path / "gt", GT)
    pred = write_predictions(tmp_path / "pred", "coco", PRED)

    result = evaluate(pred, gt)

    # cat: 2 GT (G1, G3). Predictions by score: G1 0.9 TP, G3 0.7 TP, G5 0.5 FP (wrong class).
    #   Precision stays 1.0 until recall 1.0, so AP = 1.0 at every IoU (boxes are exact).
    #   P = 2/3, R = 2/2.
    # dog: 3 GT (G2, G4, G5). Predictions: G2 0.8 TP, empty spot 0.6 FP.
    #   Recall reaches 1/3 at precision 1, never more. COCO's 101-point AP: the recall
    #   points 0.00..0.33 (34 of 101) have precision 1, the rest 0 -> AP = 34/101.
    #   P = 1/2, R = 1/3.
    # mAP = (1 + 34/101) / 2 at IoU 0.5 and, with exact boxes, at every IoU up to 0.95.
    # Overall (micro) P = 3 TP / 5 predictions, R = 3 TP / 5 GT.
    cat, dog = result.boxes.per_class
    assert (cat.name, cat.ground_truth, cat.predictions) == ("cat", 2, 3)
    assert cat.ap50 == pytest.approx(1.0)
    assert cat.precision == pytest.approx(2 / 3)
    assert cat.recall == pytest.approx(1.0)
    assert (dog.name, dog.ground_truth, dog.predictions) == ("dog", 3, 2)
    assert dog.ap50 == pytest.approx(34 / 101)
    assert dog.precision == pytest.approx(1 / 2)
    assert dog.recall == pytest.approx(1 / 3)
    assert result.boxes.map50 == pytest.approx((1 + 34 / 101) / 2)
    assert result.boxes.map50_95 == pytest.approx((1 + 34 / 101) / 2, abs=1e-3)
    assert result.boxes.precision == pytest.approx(3 / 5)
    assert result.boxes.recall == pytest.approx(3 / 5)


def test_sweep_drops_low_confidence_predictions(tmp_path):
    gt = write_yolo_gt(tmp_path / "gt", GT)
    pred = write_predictions(tmp_path / "pred", "coco", PRED)

    result = evaluate(pred, gt, sweep=[0.55, 0.75])

    low, high = result.sweep
    # >= 0.55 drops only the wrong-class box: 3 TP of 4 predictions, 3 of 5 GT.
    assert (low.predictions, low.precision, low.recall) == (4, pytest.approx(3 / 4), pytest.approx(3 / 5))
    # >= 0.75 keeps G1 cat and G2 dog: cat AP = 51/101 (recall 0.5), dog AP = 34/101.
    assert (high.predictions, high.precision, high.recall) == (2, pytest.approx(1.0), pytest.approx(2 / 5))
    assert high.map50 == pytest.approx((51 / 101 + 34 / 101) / 2)


def test_masks_scored_when_both_sides_have_them(tmp_path):
    import numpy as np

    from ovperc.labeling.writers import ImageItem, make_writer
    from tests.datasets.helpers import SIZE, detections, make_image

    def write(root, fmt):
        writer = make_writer(fmt, root, masks=True)
        det = detections([(G1, "cat"), (G2, "dog")], [0.9, 0.8])
        det.mask = np.zeros((2, *SIZE), dtype=bool)
        det.mask[0, 15:45, 15:45] = True
        det.mask[1, 65:95, 62:98] = True
        src = make_image(tmp_path / "src" / "a.png")
        writer.write(ImageItem(src, "a", ".png", SIZE[1], SIZE[0]), det, ["cat", "dog"])
        writer.finalize(["cat", "dog"], ["a"])
        return root

    result = evaluate(write(tmp_path / "pred", "coco"), write(tmp_path / "gt", "voc"))

    assert result.masks is not None
    assert result.masks.map50 == pytest.approx(1.0)
    assert result.masks.map50_95 == pytest.approx(1.0)


def test_class_names_that_do_not_match_are_refused_then_mapped(tmp_path):
    gt = write_coco_gt(tmp_path / "gt", GT)
    renamed = {n: ([(b, "kitty" if c == "cat" else c) for b, c in boxes], s)
               for n, (boxes, s) in identical_predictions().items()}
    pred = write_predictions(tmp_path / "pred", "coco", renamed, classes=["kitty", "dog"])

    with pytest.raises(ClassMismatchError, match="kitty.*--class-map"):
        evaluate(pred, gt)
    result = evaluate(pred, gt, class_map=parse_class_map("kitty=cat"))
    assert result.boxes.map50 == pytest.approx(1.0)


def test_class_map_can_drop_a_class(tmp_path):
    gt = write_coco_gt(tmp_path / "gt", {"a.png": [(G1, "cat")]}, classes=["cat"])
    pred = write_predictions(tmp_path / "pred", "coco",
                             {"a.png": ([(G1, "cat"), (G2, "tree")], [0.9, 0.9])}, classes=["cat", "tree"])
    result = evaluate(pred, gt, class_map={"tree": ""})
    assert result.boxes.precision == pytest.approx(1.0)


def test_images_missing_on_either_side_are_reported(tmp_path):
    gt = write_coco_gt(tmp_path / "gt", GT)
    preds = identical_predictions()
    del preds["c.png"]
    preds["extra.png"] = ([], [])
    pred = write_predictions(tmp_path / "pred", "yolo", preds)

    result = evaluate(pred, gt)

    assert result.images == 2
    assert result.missing_in_predictions == ["c.png"]
    assert result.missing_in_ground_truth == ["extra.png"]


def test_splits_pair_by_split_and_path(tmp_path):
    gt = write_yolo_gt(tmp_path / "gt", GT, split="valid")
    ds = load_dataset(gt)
    assert sorted(ds.images()) == ["valid/a.png", "valid/b.png", "valid/c.png"]


def test_cli_prints_scores_and_writes_json(tmp_path, capsys):
    gt = write_yolo_gt(tmp_path / "gt", GT)
    pred = write_predictions(tmp_path / "pred", "coco", PRED)
    out = tmp_path / "scores.json"

    code = main(["evaluate", str(pred), str(gt), "--json", str(out), "--sweep", "0.5,0.75"])

    printed = capsys.readouterr().out
    assert code == 0
    assert "mAP@0.5" in printed and "dog" in printed and "best F1" in printed
    data = json.loads(out.read_text())
    assert data["boxes"]["map50"] == pytest.approx((1 + 34 / 101) / 2, abs=1e-6)
    assert [p["threshold"] for p in data["sweep"]] == [0.5, 0.75]


def test_cli_refuses_mismatched_classes_with_exit_code_2(tmp_path, capsys):
    gt = write_coco_gt(tmp_path / "gt", GT)
    pred = write_predictions(tmp_path / "pred", "coco", {"a.png": ([(G1, "cow")], [1.0])},
                             classes=["cow"])
    assert main(["evaluate", str(pred), str(gt)]) == 2
    assert "cow" in capsys.readouterr().err
