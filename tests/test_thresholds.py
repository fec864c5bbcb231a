"""Per-class thresholds: the file, its validation, and the pipeline applying them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from ovperc import ClassThresholds, Ontology, Pipeline, read_thresholds
from ovperc.cli import main
from ovperc.thresholds import HEADER, ThresholdsError, write_thresholds
from tests.fakes import FakeDetector, FakeSegmenter

BOXES = {
    "man": [(10, 10, 50, 90, 0.9)],
    "woman": [(100, 10, 140, 90, 0.45)],
    "dog": [(200, 100, 260, 150, 0.5), (20, 100, 60, 150, 0.3)],
    "cat": [(150, 100, 190, 150, 0.2)],
}


@pytest.fixture
def image() -> np.ndarray:
    return np.full((160, 320, 3), 127, dtype=np.uint8)


# ---------------------------------------------------------------------- the file
def test_written_file_reads_back(tmp_path: Path) -> None:
    thresholds = ClassThresholds({"dog": 0.35, "traffic light": 0.6}, default=0.42)
    path = tmp_path / "thresholds.yaml"

    write_thresholds(path, thresholds, comments=["tuned on hand/"])

    text = path.read_text()
    assert text.startswith(f"{HEADER}\n# tuned on hand/\n")
    assert read_thresholds(path) == thresholds


def test_hand_written_file_with_comments_and_spacing(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("# mine\nclasses:\n  traffic   light: .6   # busy street\n  dog: 1\n")
    assert read_thresholds(path) == ClassThresholds({"traffic light": 0.6, "dog": 1.0})
    assert read_thresholds(path).threshold("cat") is None


@pytest.mark.parametrize("text, line, message", [
    ("default: 0.4\nclasses:\n  dog: 1.3\n", 3, "threshold of 'dog' must be a number in [0, 1]"),
    ("default: 0.4\nclasses:\n  dog: 0.3\n  dog: 0.2\n", 4, "'dog' is given twice"),
    ("classes:\n  dog: 0.3\n  'dog ': 0.2\n", 3, "'dog' is given twice"),
    ("default: 0.4\nclass:\n  dog: 0.3\n", 2, "'class' is not a known key"),
    ("default: 0.4\ndefault: 0.5\n", 2, "'default' is repeated"),
    ("default: [0.4\n", 2, "not valid YAML"),
    ('default: "0.4"\n', 1, "default threshold must be a number"),
    ("default: true\n", 1, "default threshold must be a number"),
    ("default: .nan\n", 1, "default threshold must be a number"),
    ("classes:\n  - dog\n", 2, "'classes' must map class names to thresholds"),
    ("classes:\n  dog: [0.3]\n", 2, "threshold of 'dog' must be a number"),
    ("- 0.4\n", 1, "expected a mapping"),
])
def test_malformed_file_names_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ThresholdsError) as error:
        read_thresholds(path)
    assert str(error.value).startswith(f"{path}:{line}: ")
    assert message in str(error.value)


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_file_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ThresholdsError, match="empty"):
        read_thresholds(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ThresholdsError, match="cannot read"):
        read_thresholds(tmp_path / "nope.yaml")


@pytest.mark.parametrize("classes, default, message", [
    ({"dog": -0.1}, None, "threshold of 'dog'"),
    ({"dog": 0.5}, 2.0, "default threshold"),
    ({"": 0.5}, None, "class names"),
    ({"dog": 0.5, " dog": 0.4}, None, "given twice"),
])
def test_class_thresholds_validate(classes: dict, default: float | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassThresholds(classes, default=default)


def test_filter_keeps_boxes_at_or_above_their_class_threshold() -> None:
    det = sv.Detections(xyxy=np.zeros((4, 4)), confidence=np.array([0.35, 0.34, 0.9, 0.1], np.float32),
                        class_id=np.array([0, 0, 1, 2]))
    det.data["class_name"] = np.array(["dog", "dog", "cat", "bird"], dtype=object)

    kept = ClassThresholds({"dog": 0.35, "cat": 0.95}).filter(det)
    assert kept.data["class_name"].tolist() == ["dog", "bird"]  # float32 0.35 passes 0.35
    with_default = ClassThresholds({"dog": 0.35}, default=0.5).filter(det)
    assert with_default.data["class_name"].tolist() == ["dog", "cat"]


# ---------------------------------------------------------------------- the pipeline
def test_pipeline_drops_boxes_below_their_class_threshold_after_prompt_mapping(image) -> None:
    onto = Ontology({"man": "person", "woman": "person", "dog": "dog", "cat": "cat"})
    base = Pipeline(detector=FakeDetector(BOXES), nms="none")
    tuned = Pipeline(detector=FakeDetector(BOXES), nms="none",
                     class_thresholds={"person": 0.5, "dog": 0.4})

    everything = base(image, classes=onto).detections
    result = tuned(image, classes=onto).detections

    assert sorted(everything.confidence.tolist()) == pytest.approx([0.2, 0.3, 0.45, 0.5, 0.9])
    # person 0.5 drops the woman (0.45); dog 0.4 drops 0.3; cat has no threshold: kept
    assert result.data["class_name"].tolist() == ["person", "dog", "cat"]
    assert result.confidence.tolist() == pytest.approx([0.9, 0.5, 0.2])
    assert result.class_id.tolist() == [0, 1, 2]


def test_default_threshold_and_segmenting_only_kept_boxes(image) -> None:
    segmenter = FakeSegmenter()
    pipe = Pipeline(detector=FakeDetector(BOXES), segmenter=segmenter, nms="none",
                    class_thresholds=ClassThresholds({"dog": 0.25}, default=0.5))

    result = pipe(image, classes=["man", "dog", "cat"]).detections

    assert result.data["class_name"].tolist() == ["man", "dog", "dog"]
    assert result.mask.shape == (3, *image.shape[:2])


def test_thresholds_apply_to_the_classifier_s_final_class_and_score(image) -> None:
    class SwapClassifier:
        """Re-labels dog as cat and halves every score (as relabel/rescore modes may)."""

        def classify(self, images, detections, vocabularies):
            out = []
            for det in detections:
                det = det[:]
                det.data["class_name"] = np.array(["cat" if n == "dog" else n
                                                   for n in det.data["class_name"]], dtype=object)
                det.confidence = det.confidence / 2
                out.append(det)
            return out

    pipe = Pipeline(detector=FakeDetector(BOXES), classifier=SwapClassifier(), nms="none",
                    class_thresholds={"cat": 0.2, "dog": 0.0})

    result = pipe(image, classes=["dog", "cat"]).detections

    # detector: dog 0.5, dog 0.3, cat 0.2 -> classifier: cat 0.25, cat 0.15, cat 0.1
    assert result.data["class_name"].tolist() == ["cat"]
    assert result.confidence.tolist() == pytest.approx([0.25])


def test_unknown_threshold_class_fails_before_any_model_runs(image) -> None:
    detector = FakeDetector(BOXES)
    pipe = Pipeline(detector=detector, class_thresholds={"dgo": 0.4})

    with pytest.raises(ValueError, match=r"not detected: \['dgo'\]"):
        pipe(image, classes=["dog", "cat"])
    with pytest.raises(ValueError, match="not detected"):
        next(pipe.map([image], classes=["dog"]))
    assert detector.calls == []


def test_bad_thresholds_argument_is_refused() -> None:
    with pytest.raises(ValueError, match=r"threshold of 'dog' must be a number in \[0, 1\]"):
        Pipeline(detector=FakeDetector({}), class_thresholds={"dog": 1.5})
    with pytest.raises(TypeError, match="mapping or ClassThresholds"):
        Pipeline(detector=FakeDetector({}), class_thresholds=0.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the command line
@pytest.mark.parametrize("command", ["label", "run"])
def test_cli_refuses_a_malformed_file_before_the_first_image(tmp_path: Path, capsys, command) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    bad = tmp_path / "t.yaml"
    bad.write_text("classes:\n  dog: 2\n")
    out = tmp_path / "out"
    target = [str(tmp_path), "--out", str(out)] if command == "label" else [str(tmp_path / "a.png")]

    code = main([command, *target, "--classes", "dog", "--thresholds", str(bad), "--preset",
                 "shapes-tiny", "--device", "cpu"])

    assert code == 2
    assert f"{bad}:2: the threshold of 'dog'" in capsys.readouterr().err
    assert not out.exists()


def test_cli_label_refuses_thresholds_for_classes_not_asked_for(tmp_path: Path, capsys) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    thresholds = tmp_path / "t.yaml"
    write_thresholds(thresholds, ClassThresholds({"cat": 0.4}))
    out = tmp_path / "out"

    code = main(["label", str(tmp_path), "--out", str(out), "--classes", "dog", "--thresholds",
                 str(thresholds), "--preset", "shapes-tiny", "--device", "cpu"])

    assert code == 2
    assert "not detected: ['cat']" in capsys.readouterr().err
    assert not out.exists()


def test_thresholds_are_part_of_the_run_signature(tmp_path: Path) -> None:
    from ovperc.cli import build_parser
    from ovperc.cli.options import run_signature

    path = tmp_path / "t.yaml"
    write_thresholds(path, ClassThresholds({"dog": 0.4}, default=0.3))
    parser = build_parser()
    plain = parser.parse_args(["label", "src", "--out", "o"])
    tuned = parser.parse_args(["label", "src", "--out", "o", "--thresholds", str(path)])

    assert "class_thresholds" not in run_signature(plain, preset="detect")
    assert run_signature(tuned, preset="detect")["class_thresholds"] == {
        "default": 0.3, "classes": {"dog": 0.4}}


def test_tune_help_explains_every_option(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    text = capsys.readouterr().out
    for option in ("--out", "--precision", "--iou", "--min-support", "--class-map"):
        assert option in text


def test_import_ovperc_does_not_import_torch_for_thresholds() -> None:
    import subprocess
    import sys

    code = ("import sys, ovperc\n"
            "t = ovperc.ClassThresholds({'dog': 0.4})\n"
            "assert 'torch' not in sys.modules and 'supervision' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
