"""The page suggests what the loaded models can do: examples, placeholder, known classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ovperc
from ovperc.demo.core import DemoInputError, DemoRunner, RunOptions
from ovperc.demo.examples import write_shapes_examples
from ovperc.demo.guide import OPEN_VOCABULARY, SHAPES_TINY, guide_for, packaged_model_set
from ovperc.shapes import CLASSES
from tests.demo.conftest import make_pipeline

REPO = Path(__file__).resolve().parents[2]
FOUR_CLASSES = "red circle, blue square, green triangle, yellow star"


@pytest.mark.parametrize(("preset", "models", "expected"), [
    ("shapes-tiny", {}, "shapes-tiny"),
    ("default", {}, "open-vocabulary"),
    # the detector decides what can be found: a real detector is open vocabulary
    ("shapes-tiny", {"detector": "IDEA-Research/grounding-dino-tiny"}, "open-vocabulary"),
    ("default", {"detector": "ovperc-data:shapes-tiny/grounding-dino"}, "shapes-tiny"),
])
def test_guide_follows_the_models_not_the_preset_name(preset: str, models: dict, expected: str):
    pipeline = ovperc.Pipeline.from_preset(preset, device="cpu", **models)  # builds, loads nothing
    assert guide_for(pipeline).name == expected


def test_a_tagger_only_pipeline_is_guided_by_its_tagger():
    preset = ovperc.Pipeline.from_preset("shapes-tiny", device="cpu")
    assert guide_for(ovperc.Pipeline(tagger=preset.tagger)) is SHAPES_TINY
    assert guide_for(make_pipeline()) is OPEN_VOCABULARY  # stages without a model name
    assert packaged_model_set(str(REPO / "ovperc" / "data" / "tags.txt")) is None
    assert packaged_model_set("../../etc/passwd") is None


def test_the_shapes_guide_names_the_four_classes():
    assert SHAPES_TINY.placeholder == FOUR_CLASSES
    assert SHAPES_TINY.note.startswith(f"These toy models know only: {FOUR_CLASSES}.")
    assert SHAPES_TINY.unknown(["Red  Circle", "house", "tree"]) == ["house", "tree"]
    assert OPEN_VOCABULARY.note == "" and OPEN_VOCABULARY.unknown(["house"]) == []
    assert OPEN_VOCABULARY.placeholder == "person, bicycle, traffic light"


def test_shapes_examples_are_the_scenes_of_examples_shapes(tmp_path: Path):
    pairs = write_shapes_examples(tmp_path)
    assert [p.name for p, _ in pairs] == [f"shapes_00{i}.png" for i in range(4)]
    assert {classes for _, classes in pairs} == {FOUR_CLASSES}
    for path, _ in pairs:  # the checkout's JPEGs of the same seed-8 scenes
        drawn = np.asarray(Image.open(path), dtype=float)
        shipped = np.asarray(Image.open(REPO / "examples" / "shapes" / path.name.replace(".png", ".jpg")),
                             dtype=float)
        assert drawn.shape == shipped.shape == (256, 256, 3)
        # JPEG quality 90 on textured backgrounds: 4-6 here; another scene differs by 28 or more
        assert np.abs(drawn - shipped).mean() < 8


@pytest.fixture(scope="module")
def shapes_runner(tmp_path_factory: pytest.TempPathFactory) -> DemoRunner:
    """The shipped shapes-tiny models, loaded once (about 10 s here)."""
    return DemoRunner(ovperc.Pipeline.from_preset("shapes-tiny", device="cpu"),
                      workdir=tmp_path_factory.mktemp("work"))


@pytest.mark.slow
def test_shapes_tiny_examples_find_their_shapes_and_other_classes_are_explained(
        shapes_runner: DemoRunner, tmp_path: Path):
    from ovperc.demo.examples import SHAPES_SEED
    from ovperc.shapes import generate_scenes

    assert shapes_runner.guide is SHAPES_TINY
    pairs = write_shapes_examples(tmp_path)
    scenes = generate_scenes(len(pairs), seed=SHAPES_SEED)
    found = set()
    for (path, classes), scene in zip(pairs, scenes):
        result = shapes_runner.run(path, RunOptions(classes=classes), name=path.name)
        assert set(result.perception.class_names) == set(scene.class_names), path.name
        assert result.hint == ""
        found |= set(result.perception.class_names)
    assert found == set(CLASSES)  # together the examples show every class

    # what the tester typed: the old examples' classes
    result = shapes_runner.run(pairs[0][0], RunOptions(classes="house, tree, sun"))
    assert len(result.perception.detections) == 0
    assert "“house”, “tree”, “sun” are not among the classes these toy models know: " \
           f"{FOUR_CLASSES}." in result.hint
    assert f"- the classes these toy models know: {FOUR_CLASSES}" in result.hint

    # an empty box: the toy tagger names the shapes, and the page says so
    tagged = shapes_runner.run(pairs[0][0], RunOptions(classes=""))
    assert tagged.hint.startswith("No classes given, so the detector looked for what the tagger "
                                  "named: ")
    with pytest.raises(DemoInputError, match="e.g. `red circle, blue square"):
        shapes_runner.run(pairs[0][0], RunOptions(classes=",,"))
