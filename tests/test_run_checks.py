"""A run's settings are checked before the first image: clear errors, exit code 2, no traceback."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovperc import Ontology, Pipeline
from ovperc.cli import main
from ovperc.labeling import label_folder
from ovperc.ontology_file import OntologyFileError
from ovperc.stages import GroundingDinoDetector

ROOT = Path(__file__).resolve().parents[1]
#: one class of 300 words: far past Grounding DINO's 256-token caption.
LONG = " ".join(["striped"] * 300)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(src / "a.png")
    return src


def _label(folder: Path, out: Path, *extra: str, detector: Path | None = None) -> list[str]:
    models = ["--detector", str(detector)] if detector is not None else []
    return ["label", str(folder), "--out", str(out), "--device", "cpu", "--no-progress",
            *models, *extra]


# ---------------------------------------------------------------- ontology files
@pytest.mark.parametrize(("name", "text", "message"), [
    ("o.yaml", "red circle:\nsquare: box\n", r"o\.yaml:1: prompt 'red circle' has no class"),
    ("o.yaml", "man: person\n  woman: person: x\n", r"o\.yaml:2: not valid YAML"),
    ("o.yaml", "man: person\nman: boy\n", r"o\.yaml:2: prompt 'man' is given again \(first on line 1\)"),
    ("o.yaml", "- cat\n- [dog, puppy]\n", r"o\.yaml:2: a list item is a list"),
    ("o.yaml", "man: [person]\n", r"o\.yaml:1: the class of prompt 'man' is a list"),
    ("o.yaml", "", r"o\.yaml: the file is empty"),
    ("o.yaml", "just a sentence\n", r"o\.yaml:1: expected a 'prompt: class' mapping"),
    ("o.json", '{"man": "person",\n "woman": }\n', r"o\.json:2: not valid JSON"),
    ("o.json", '{"man": null}', r"o\.json: prompt 'man' has no class name \(got null\)"),
    ("o.json", '{"man": "person", "man": "boy"}', r"o\.json: prompt 'man' is given again"),
    ("o.txt", "man: person\nred circle:\n", r"o\.txt:2: prompt 'red circle' has no class after ':'"),
    ("o.txt", "man: person\nman: boy\n", r"o\.txt:2: prompt 'man' is given again"),
    ("o.txt", ": person\n", r"o\.txt:1: class 'person' has no prompt"),
    ("o.txt", "# only a comment\n", r"o\.txt: the ontology is empty"),
])
def test_ontology_file_mistakes_name_the_file_and_line(tmp_path: Path, name: str, text: str,
                                                       message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        Ontology.from_file(path)


def test_ontology_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(OntologyFileError, match="not found"):
        Ontology.from_file(tmp_path / "missing.yaml")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(OntologyFileError, match="not UTF-8"):
        Ontology.from_file(tmp_path / "latin1.txt")


def test_ontology_file_forms_that_are_fine(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("classes:\n  man: person\n  woman: person\n")
    (tmp_path / "b.yaml").write_text("- car\n- man: person\n- yes\n")
    (tmp_path / "c.json").write_text('{"classes": ["car", {"man": "person"}]}')
    assert Ontology.from_file(tmp_path / "a.yaml").to_dict() == {"man": "person", "woman": "person"}
    # 'yes' stays the text a person wrote (YAML would read it as true)
    assert Ontology.from_file(tmp_path / "b.yaml").classes == ["car", "person", "yes"]
    assert Ontology.from_file(tmp_path / "c.json").to_dict() == {"car": "car", "man": "person"}


# ---------------------------------------------------------------- classes in the API
@pytest.mark.parametrize(("given", "error"), [
    ({"red circle": None}, TypeError), ({"red circle": ""}, ValueError), ({"": "cat"}, ValueError),
    (["cat", None], TypeError), (",,, ,", ValueError), ([], ValueError),
])
def test_empty_or_missing_class_names_are_refused(given, error) -> None:
    with pytest.raises(error, match="class|prompt|empty"):
        Ontology(given)


def test_classes_differing_in_case_or_spaces_are_merged_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ovperc.ontology"):
        onto = Ontology("Red Circle, red  circle, square")
    assert onto.classes == ["Red Circle", "square"]
    assert "differ only in case or spaces" in caplog.text and "'red circle'" in caplog.text
    mapped = Ontology({"man": "Person", "woman": "person"})
    assert mapped.classes == ["Person"] and mapped.class_ids == [0, 0]
    assert mapped.class_id("PERSON") == 0
    with pytest.raises(ValueError, match="maps to both"):
        Ontology({"Apple": "fruit", "apple": "company"})


def test_extending_with_tags_merges_quietly(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ovperc.ontology"):
        grown = Ontology(["Person"]).extend(["person", "dog"])
    assert grown.classes == ["Person", "dog"] and caplog.text == ""


# ---------------------------------------------------------------- token limit
def test_detector_checks_prompt_length_without_loading_weights(tiny_grounding_dino: Path) -> None:
    detector = GroundingDinoDetector(str(tiny_grounding_dino), device="cpu")
    detector.check_prompts(["cat", "traffic light"])
    with pytest.raises(ValueError, match=r"too long for Grounding DINO: 'striped striped.*at most 253"):
        detector.check_prompts(["cat", LONG])
    assert detector._model is None, "only the tokenizer and config were read"
    small = GroundingDinoDetector(str(tiny_grounding_dino), device="cpu", max_text_tokens=4)
    with pytest.raises(ValueError, match="'traffic light' is 2 tokens.*at most 1 tokens"):
        small.check_prompts(["cat", "traffic light"])
    with pytest.raises(TypeError, match="list of strings"):
        detector.check_prompts("cat")


def test_a_hub_model_not_available_here_is_checked_when_it_loads(caplog) -> None:
    """A Ray driver need not hold the model its workers load: the early check steps aside."""
    detector = GroundingDinoDetector("no-such-org/no-such-grounding-dino", device="cpu")
    with caplog.at_level(logging.INFO, logger="ovperc.stages.grounding_dino"):
        detector.check_prompts(["cat", LONG])
    assert "not checked before the run" in caplog.text


def test_pipeline_check_returns_the_ontology_or_names_the_problem(tiny_grounding_dino: Path) -> None:
    pipe = Pipeline(detector=GroundingDinoDetector(str(tiny_grounding_dino), device="cpu"))
    assert pipe.check("cat, dog") == Ontology(["cat", "dog"])
    with pytest.raises(ValueError, match="striped"):
        pipe.check(["cat", LONG])
    with pytest.raises(ValueError, match="no tagger"):
        pipe.check(None)
    with pytest.raises(ValueError, match="empty"):
        pipe.check(" , ")


def test_label_folder_refuses_a_long_class_before_any_image(tiny_grounding_dino: Path, folder: Path,
                                                            tmp_path: Path) -> None:
    pipe = Pipeline(detector=GroundingDinoDetector(str(tiny_grounding_dino), device="cpu"))
    with pytest.raises(ValueError, match="too long"):
        label_folder(pipe, folder, tmp_path / "out", classes=["cat", LONG], progress=False)
    assert not (tmp_path / "out").exists(), "nothing written"
    assert pipe.detector._model is None, "the model was never loaded"


# ---------------------------------------------------------------- the command line
@pytest.mark.parametrize(("extra", "message"), [
    (["--classes", " , ,"], "the ontology is empty"),
    (["--classes", f"cat, {LONG}"], "too long for Grounding DINO"),
    (["--ontology", "MISSING.yaml"], "ontology file not found"),
])
def test_label_refuses_bad_classes_with_exit_2(folder: Path, tmp_path: Path, tiny_grounding_dino: Path,
                                               capsys, extra: list[str], message: str) -> None:
    out = tmp_path / "out"
    assert main(_label(folder, out, *extra, detector=tiny_grounding_dino)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(("text", "message"), [
    ("red circle:\n", "o.yaml:1: prompt 'red circle' has no class"),
    ("a: b\n  c: d: e\n", "o.yaml:2: not valid YAML"),
])
def test_label_and_run_report_ontology_file_lines(folder: Path, tmp_path: Path, tiny_grounding_dino: Path,
                                                  capsys, text: str, message: str) -> None:
    ontology = tmp_path / "o.yaml"
    ontology.write_text(text)
    assert main(_label(folder, tmp_path / "out", "--ontology", str(ontology),
                       detector=tiny_grounding_dino)) == 2
    assert message in capsys.readouterr().err
    assert main(["run", str(folder / "a.png"), "--ontology", str(ontology), "--no-masks",
                 "--detector", str(tiny_grounding_dino), "--device", "cpu"]) == 2
    assert message in capsys.readouterr().err


def test_run_refuses_a_long_class_with_exit_2(folder: Path, tiny_grounding_dino: Path, capsys) -> None:
    assert main(["run", str(folder / "a.png"), "--classes", LONG, "--no-masks",
                 "--detector", str(tiny_grounding_dino), "--device", "cpu"]) == 2
    assert "too long for Grounding DINO" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [
    ["--box-threshold", "1.5"], ["--text-threshold", "-0.1"], ["--box-threshold", "nan"],
    ["--nms-iou", "0"], ["--nms-iou", "1.2"], ["--tag-threshold", "2"], ["--max-tags", "0"],
    ["--batch-size", "0"], ["--max-pixels", "-5"],
])
def test_label_refuses_out_of_range_settings(folder: Path, tmp_path: Path, capsys, extra) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(_label(folder, tmp_path / "out", "--classes", "cat", *extra))
    assert exit_info.value.code == 2
    assert extra[0] in capsys.readouterr().err


def test_label_warns_about_merged_classes_and_labels_once(folder: Path, tmp_path: Path,
                                                          tiny_grounding_dino: Path) -> None:
    """As a user runs it: a subprocess, with the warning on stderr."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "ovperc", *_label(folder, out, "--classes", "Red Circle, red circle",
                                                   "--box-threshold", "0.99",
                                                   detector=tiny_grounding_dino)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
             "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "'Red Circle' and 'red circle' differ only in case or spaces" in done.stderr
    assert (out / "data.yaml").read_text().count("Circle") == 1


def test_segment_refuses_a_missing_dataset_with_exit_2(tmp_path: Path, tiny_sam: Path, capsys) -> None:
    code = main(["segment", str(tmp_path / "nothere"), "--out", str(tmp_path / "out"),
                 "--segmenter", str(tiny_sam), "--device", "cpu", "--no-progress"])
    assert code == 2 and "nothere" in capsys.readouterr().err
