"""``ovperc tune``: per-class thresholds against hand labels, on a case computed by hand."""

from __future__ import annotations

import pytest

from ovperc.cli import main
from ovperc.datasets.scoring import NoScoresError, evaluate
from ovperc.datasets.tuning import format_tuning, tune_thresholds
from ovperc.thresholds import HEADER, ClassThresholds, read_thresholds
from tests.datasets.helpers import write_coco_gt, write_predictions, write_yolo_gt
from tests.datasets.test_scores_sidecar import unscored_yolo

CLASSES = ["cat", "dog", "bird"]
G1, G2, G3 = [10, 10, 50, 50], [60, 60, 100, 100], [10, 60, 40, 100]
E1 = [110, 70, 150, 110]  # overlaps no hand box

HAND = {
    "a.png": [(G1, "cat"), (G2, "dog")],
    "b.png": [(G1, "cat"), (G2, "dog")],
    "c.png": [(G1, "cat"), (G2, "dog"), (G3, "bird")],
    "d.png": [(G1, "cat")],
}
# cat (4 hand boxes): TP 0.9, 0.8, 0.5; FP 0.7, 0.3.
# dog (3 hand boxes): TP 0.4, 0.35; FP 0.95. bird (1 hand box): TP 0.6.
AUTO = {
    "a.png": ([(G1, "cat"), (E1, "cat"), (G2, "dog")], [0.9, 0.7, 0.4]),
    "b.png": ([(G1, "cat"), (G2, "dog"), (E1, "dog")], [0.8, 0.35, 0.95]),
    "c.png": ([(G1, "cat"), (E1, "cat"), (G3, "bird")], [0.5, 0.3, 0.6]),
    "d.png": ([], []),
}


@pytest.fixture
def datasets(tmp_path):
    hand = write_yolo_gt(tmp_path / "hand", HAND, CLASSES)
    auto = write_predictions(tmp_path / "auto", "coco", AUTO, CLASSES)
    return auto, hand


def test_best_f1_per_class_and_default_by_hand(datasets):
    result = tune_thresholds(*datasets, min_support=2)

    cat, dog, bird = result.per_class
    # cat, kept boxes by threshold: 0.9 -> 1 TP; 0.8 -> 2 TP; 0.7 -> 2 TP 1 FP; 0.5 -> 3 TP 1 FP
    # (F1 = 2*3 / (4 + 4) = 0.75, the best); 0.3 -> 3 TP 2 FP (F1 6/9).
    assert (cat.threshold, cat.tuned, cat.support, cat.predictions) == (0.5, True, 4, 4)
    assert (cat.precision, cat.recall, cat.f1) == pytest.approx((0.75, 0.75, 0.75))
    # AP over all predictions: precision 1 up to recall 0.5, then 0.75 up to recall 0.75.
    assert cat.ap == pytest.approx((51 + 25 * 0.75) / 101)
    # dog: keeping every box (F1 4/6) beats 0.4 (2/5); the threshold is its lowest score.
    assert (dog.threshold, dog.tuned) == (0.35, True)
    assert dog.f1 == pytest.approx(2 / 3)
    assert "keeps every box" in dog.note
    # bird has 1 hand box < min_support 2: it keeps the default.
    # default over all classes: 0.35 keeps 6 TP of 8 boxes, 8 hand boxes -> F1 12/16, the best.
    assert (result.default.threshold, result.default.f1) == (0.35, pytest.approx(0.75))
    assert (bird.threshold, bird.tuned, bird.support) == (0.35, False, 1)
    assert "support 1 < 2" in bird.note
    assert result.thresholds() == ClassThresholds({"cat": 0.5, "dog": 0.35}, default=0.35)


def test_scores_at_the_threshold_match_evaluate_on_the_kept_boxes(datasets, tmp_path):
    auto, hand = datasets
    result = tune_thresholds(auto, hand, min_support=2)
    thresholds = result.thresholds()
    kept = {name: ([b for b, s in zip(boxes, scores) if s >= thresholds.threshold(b[1])],
                   [s for b, s in zip(boxes, scores) if s >= thresholds.threshold(b[1])])
            for name, (boxes, scores) in AUTO.items()}
    filtered = write_predictions(tmp_path / "kept", "coco", kept, CLASSES)

    scores = evaluate(filtered, hand).boxes.per_class

    for tuned, scored in zip(result.per_class, scores):
        assert (tuned.precision, tuned.recall) == pytest.approx((scored.precision, scored.recall))


def test_precision_target_takes_the_lowest_threshold_reaching_it(datasets):
    result = tune_thresholds(*datasets, precision=0.9, min_support=2)

    cat, dog, _ = result.per_class
    assert (cat.threshold, cat.precision, cat.recall) == (0.8, 1.0, 0.5)  # 0.7 has 2/3
    # dog's 0.95 box is a false positive: precision never reaches 0.9; the best is 2/3.
    assert dog.threshold == 0.35 and dog.precision == pytest.approx(2 / 3)
    assert "not reached" in dog.note


def test_iou_must_be_a_coco_threshold(datasets):
    with pytest.raises(ValueError, match="iou must be one of"):
        tune_thresholds(*datasets, iou=0.62)


def test_strict_iou_turns_loose_boxes_into_false_positives(tmp_path):
    hand = write_yolo_gt(tmp_path / "hand", {"a.png": [(G1, "cat")]}, CLASSES)
    loose = [10, 10, 50, 62]  # IoU 40*40 / (40*52) = 0.77 with G1
    auto = write_predictions(tmp_path / "auto", "coco", {"a.png": ([(loose, "cat")], [0.9])}, CLASSES)

    assert tune_thresholds(auto, hand, min_support=1).per_class[0].recall == 1.0
    assert tune_thresholds(auto, hand, min_support=1, iou=0.8).per_class[0].recall == 0.0


def test_predictions_without_scores_are_refused(tmp_path):
    hand = write_coco_gt(tmp_path / "hand", HAND, CLASSES)
    auto = unscored_yolo(tmp_path / "auto", AUTO, CLASSES)
    with pytest.raises(NoScoresError, match="no predicted box carries a confidence"):
        tune_thresholds(auto, hand)


def test_cli_prints_the_table_and_writes_the_file(datasets, tmp_path, capsys):
    auto, hand = datasets
    out = tmp_path / "thresholds.yaml"

    assert main(["tune", str(auto), str(hand), "--out", str(out), "--min-support", "2"]) == 0

    printed = capsys.readouterr().out
    assert "class" in printed and "support" in printed and "AP" in printed
    assert "support 1 < 2: default" in printed
    assert out.read_text().startswith(HEADER + "\n")
    assert read_thresholds(out) == ClassThresholds({"cat": 0.5, "dog": 0.35}, default=0.35)
    assert format_tuning(tune_thresholds(auto, hand, min_support=2)) in printed


def test_cli_replaces_only_its_own_file(datasets, tmp_path, capsys):
    auto, hand = datasets
    out = tmp_path / "thresholds.yaml"
    out.write_text("default: 0.1\n")  # a file ovperc did not write

    assert main(["tune", str(auto), str(hand), "--out", str(out)]) == 2
    assert "not written by ovperc tune" in capsys.readouterr().err
    assert out.read_text() == "default: 0.1\n"

    out.unlink()
    assert main(["tune", str(auto), str(hand), "--out", str(out)]) == 0
    assert main(["tune", str(auto), str(hand), "--out", str(out), "--precision", "0.9"]) == 0
    assert "precision >= 0.9" in out.read_text()


def test_cli_refuses_unscored_predictions_and_bad_options(tmp_path, capsys):
    hand = write_coco_gt(tmp_path / "hand", HAND, CLASSES)
    auto = unscored_yolo(tmp_path / "auto", AUTO, CLASSES)
    out = tmp_path / "t.yaml"

    assert main(["tune", str(auto), str(hand), "--out", str(out)]) == 2
    assert "no predicted box carries a confidence" in capsys.readouterr().err
    assert not out.exists()
    for bad in (["--iou", "0.62"], ["--iou", "0.42"], ["--iou", "x"], ["--precision", "0"],
                ["--min-support", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["tune", str(auto), str(hand), "--out", str(out), *bad])
        assert exit_info.value.code == 2
