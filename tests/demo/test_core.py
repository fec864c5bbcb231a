"""The demo's request logic: input checks, per-request pipeline views, tables and files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ovperc
from ovperc.demo.core import (
    TABLE_HEADERS,
    DemoInputError,
    DemoLimits,
    DemoRunner,
    RunOptions,
    detections_table,
    instance_mask,
    split_classes,
    tag_scores,
)
from tests.demo.conftest import SHAPES_CLASSES, make_pipeline
from tests.fakes import FakeTagger


@pytest.fixture
def runner(pipeline: ovperc.Pipeline, tmp_path: Path) -> DemoRunner:
    return DemoRunner(pipeline, workdir=tmp_path / "work")


@pytest.mark.parametrize(("text", "expected"), [
    ("", []),
    (None, []),
    ("cat", ["cat"]),
    (" cat ,dog,, cat", ["cat", "dog"]),
    ("red  car\nblue bus;tree", ["red car", "blue bus", "tree"]),
])
def test_split_classes(text: str | None, expected: list[str]) -> None:
    assert split_classes(text) == expected


def test_default_options_give_what_the_pipeline_gives(runner: DemoRunner, shapes_path: Path):
    result = runner.run(shapes_path, RunOptions(classes=SHAPES_CLASSES), name="shapes.png")
    direct = make_pipeline()(shapes_path, classes=SHAPES_CLASSES)
    got, want = result.perception.to_dict(), direct.to_dict()
    assert got["detections"] == want["detections"]
    assert got["tags"] == want["tags"]
    assert [d["class_name"] for d in got["detections"]] == [
        "red square", "blue circle", "yellow triangle"]
    assert result.note == ""


def test_files_hold_the_result(runner: DemoRunner, shapes_path: Path):
    result = runner.run(shapes_path, RunOptions(classes=SHAPES_CLASSES), name="my photo!.png")
    assert result.json_path.parent == runner.workdir
    assert result.json_path.name.startswith("my_photo-")
    saved = json.loads(result.json_path.read_text())
    assert saved == json.loads(json.dumps(result.perception.to_dict()))
    assert saved["source"] == "my photo!.png"
    mask = np.asarray(Image.open(result.mask_path))
    det = result.perception.detections
    assert mask.shape == (240, 320)
    assert sorted(np.unique(mask)) == [0, 1, 2, 3]
    # pixel value k is detection k (1-based); the later detection wins overlaps
    assert np.array_equal(mask == len(det), det.mask[-1])


def test_instance_mask_later_detection_wins_and_widens_past_255():
    import supervision as sv

    masks = np.zeros((300, 4, 5), dtype=bool)
    masks[:, 1:3, 1:4] = True
    masks[0, 0, 0] = True
    perception = ovperc.Perception(
        detections=sv.Detections(xyxy=np.zeros((300, 4), np.float32), mask=masks),
        tags=[], image_size=(5, 4))
    out = instance_mask(perception)
    assert out.dtype == np.uint16
    assert out[1, 1] == 300 and out[0, 0] == 1 and out[3, 4] == 0


def test_table_rows(runner: DemoRunner, shapes_path: Path):
    perception = runner.run(shapes_path, RunOptions(classes=SHAPES_CLASSES)).perception
    rows = detections_table(perception)
    assert len(rows) == 3 and all(len(r) == len(TABLE_HEADERS) for r in rows)
    number, name, score, clip_class, clip_score, *box = rows[0]
    det = perception.detections
    assert (number, name, clip_class) == (1, "red square", "red square")
    assert score == round(float(det.confidence[0]), 3)
    assert clip_score == "0.800"
    assert box == [24.0, 40.0, 125.0, 141.0]
    assert tag_scores(perception) == {"blue circle": 0.9, "green bar": 0.7, "sky": 0.2}


def test_switching_stages_off_for_one_request(runner: DemoRunner, shapes_path: Path):
    options = RunOptions(classes=SHAPES_CLASSES, tagging=False, segment=False, classify=False)
    perception = runner.run(shapes_path, options).perception
    assert perception.tags == []
    assert perception.detections.mask is None
    assert "clip_class" not in perception.detections.data
    assert runner.run(shapes_path, options).mask_path is None
    # the shared pipeline is untouched
    assert runner.pipeline.segmenter is not None and runner.pipeline.tagger is not None


def test_clip_mode_per_request_leaves_the_shared_classifier_alone(
        runner: DemoRunner, shapes_path: Path):
    shared = runner.pipeline.classifier
    rejected = runner.run(shapes_path, RunOptions(classes="red square, blue thing",
                                                  clip_mode="reject")).perception
    relabelled = runner.run(shapes_path, RunOptions(classes="red circle, blue square",
                                                    clip_mode="relabel")).perception
    assert shared.mode == "rescore"
    assert runner.pipeline.classifier is shared
    assert rejected.class_names == ["red square"]  # the blue region is a circle
    assert relabelled.class_names == ["blue square", "red circle"]
    rescored = runner.run(shapes_path, RunOptions(classes="red square, blue thing")).perception
    assert rescored.class_names == ["red square", "blue thing"]
    with pytest.raises(DemoInputError, match="Unknown CLIP mode 'vote'"):
        runner.run(shapes_path, RunOptions(classes="red", clip_mode="vote"))


def test_thresholds_filter_this_request_only(runner: DemoRunner, shapes_path: Path):
    # confidences 0.9, 0.85, 0.8 by prompt position; text score 0.6 (two words) or 0.4
    strict = runner.run(shapes_path, RunOptions(
        classes="red square, blue circle, yellow", classify=False, box_threshold=0.82))
    assert strict.perception.class_names == ["red square", "blue circle"]
    by_text = runner.run(shapes_path, RunOptions(
        classes="red square, blue, yellow triangle", classify=False, text_threshold=0.5))
    assert by_text.perception.class_names == ["red square", "yellow triangle"]
    assert runner.pipeline.detector.box_threshold == 0.3
    everything = runner.run(shapes_path, RunOptions(classes="red square, blue, yellow"))
    assert len(everything.perception.detections) == 3
    assert runner.box_threshold == 0.3 and runner.text_threshold == 0.25


def test_empty_prompt_uses_the_tags_and_says_so(runner: DemoRunner, shapes_path: Path):
    result = runner.run(shapes_path, RunOptions(classes=""))
    assert result.perception.class_names == ["blue circle", "green bar"]
    assert result.hint == ("No classes given, so the detector looked for what the tagger named: "
                           "blue circle, green bar, sky.")


@pytest.mark.parametrize("text", ["  ,  ", ",", " ;\n, ", "   "])
def test_classes_that_name_nothing_are_a_message_not_the_tagger(
        runner: DemoRunner, shapes_path: Path, text: str):
    with pytest.raises(DemoInputError, match="which names no class. Type class names separated by "
                                             "commas .* or clear the box to let the tagger choose"):
        runner.run(shapes_path, RunOptions(classes=text))


def test_detect_tags_adds_them_to_the_classes(runner: DemoRunner, shapes_path: Path):
    perception = runner.run(shapes_path, RunOptions(classes="red square",
                                                    detect_tags=True)).perception
    assert sorted(perception.class_names) == ["blue circle", "green bar", "red square"]


@pytest.mark.parametrize(("with_tagger", "options", "message"), [
    (False, RunOptions(classes=""), "this demo has no tagger"),
    (True, RunOptions(classes="", tagging=False), "switch tagging on"),
])
def test_empty_prompt_without_a_tagger_is_explained(
        tmp_path: Path, shapes_path: Path, with_tagger: bool, options: RunOptions, message: str):
    runner = DemoRunner(make_pipeline(tagger=with_tagger), workdir=tmp_path)
    with pytest.raises(DemoInputError, match=message):
        runner.run(shapes_path, options)


def test_a_thousand_classes_work_and_more_are_refused(runner: DemoRunner, shapes_path: Path):
    classes = ", ".join(["red square"] + [f"thing {i}" for i in range(999)])
    perception = runner.run(shapes_path, RunOptions(classes=classes)).perception
    assert len(perception.ontology) == 1000
    assert perception.class_names == ["red square"]
    with pytest.raises(DemoInputError, match="1,001 classes given; the demo takes at most 1,000"):
        runner.run(shapes_path, RunOptions(classes=classes + ", one more"))
    with pytest.raises(DemoInputError, match="limit is 200"):
        runner.run(shapes_path, RunOptions(classes="x" * 201))


@pytest.mark.parametrize(("content", "message"), [
    (b"hello, this is text", "not an image"),
    (b"", "empty file"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "cannot be used"),
])
def test_bad_uploads_are_explained(runner: DemoRunner, tmp_path: Path, content: bytes,
                                   message: str):
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    with pytest.raises(DemoInputError, match=message) as info:
        runner.run(str(path), RunOptions(classes="red"), name="upload.png")
    assert str(tmp_path) not in str(info.value)  # no server paths in the page
    with pytest.raises(DemoInputError, match="Upload an image"):
        runner.run(None, RunOptions(classes="red"))


def test_huge_image_is_refused_before_decoding(runner: DemoRunner, tmp_path: Path):
    path = tmp_path / "huge.png"
    Image.new("1", (9000, 5000)).save(path)  # 45 MP, a few KB on disk
    with pytest.raises(DemoInputError, match="over the limit of 40,000,000"):
        runner.run(str(path), RunOptions(classes="red"))


def test_large_image_is_downscaled_with_a_note(pipeline: ovperc.Pipeline, tmp_path: Path,
                                               shapes_path: Path):
    runner = DemoRunner(pipeline, workdir=tmp_path, limits=DemoLimits(max_side=160))
    result = runner.run(shapes_path, RunOptions(classes="red square"))
    assert result.perception.image_size == (160, 120)
    assert "(320x240) was downscaled to 160x120" in result.note
    box = result.perception.detections.xyxy[0]
    assert np.allclose(box, [12, 20, 62, 70], atol=1.5)
    # the JSON (page and download) says how to get back to the upload's pixels
    for record in (result.to_dict(), json.loads(result.json_path.read_text())):
        assert record["image_size"] == {"width": 160, "height": 120}
        assert record["original_image_size"] == {"width": 320, "height": 240}
        assert record["scale"] == 0.5
        original = np.array(record["detections"][0]["box"]) / record["scale"]
        assert np.allclose(original, [24, 40, 125, 141], atol=3)
    assert "original size and the scale (0.5)" in result.note


def test_json_of_an_image_kept_at_its_size_has_no_scale(runner: DemoRunner, shapes_path: Path):
    result = runner.run(shapes_path, RunOptions(classes="red square"))
    assert result.scale == 1.0 and result.original_size == (320, 240)
    assert "scale" not in result.to_dict() and "original_image_size" not in result.to_dict()


@pytest.mark.parametrize(("size", "accepted"), [
    ((1, 1), False), ((31, 200), False), ((200, 31), False), ((32, 32), True), ((40, 300), True),
])
def test_tiny_images_are_refused_not_given_boxes(runner: DemoRunner, tmp_path: Path,
                                                 size: tuple[int, int], accepted: bool):
    path = tmp_path / "tiny.png"
    Image.new("RGB", size, (214, 40, 40)).save(path)  # all red: the colour detector would box it
    if accepted:
        assert len(runner.run(str(path), RunOptions(classes="red square")).perception.detections) == 1
        return
    width, height = size
    with pytest.raises(DemoInputError, match=f"tiny.png is {width}x{height} pixels: too small to "
                                             f"find anything in. The demo needs at least 32 px"):
        runner.run(str(path), RunOptions(classes="red square"), name="tiny.png")


def test_a_strip_too_narrow_once_downscaled_is_refused(pipeline: ovperc.Pipeline, tmp_path: Path):
    runner = DemoRunner(pipeline, workdir=tmp_path, limits=DemoLimits(max_side=256))
    path = tmp_path / "strip.png"
    Image.new("RGB", (2000, 40)).save(path)
    with pytest.raises(DemoInputError, match="too narrow. Downscaled to 256 px on its longer side "
                                             "it would be 256x5, under the 32 px"):
        runner.run(str(path), RunOptions(classes="red"), name="strip.png")
    with pytest.raises(ValueError, match="min_side"):
        DemoLimits(min_side=64, max_side=32)


def test_nothing_found_says_what_to_try(runner: DemoRunner, shapes_path: Path):
    # no purple in the image: the colour detector finds nothing
    plain = runner.run(shapes_path, RunOptions(classes="purple cow")).hint
    assert plain == ("Nothing found. Try:\n"
                     "- a lower box threshold: it is at this demo's lowest (0.30); start the demo "
                     "with a lower `--box-threshold`\n"
                     "- other class names: short, concrete nouns for things in the picture "
                     "(e.g. `person, bicycle, traffic light`)")
    strict = runner.run(shapes_path, RunOptions(classes="red square", box_threshold=0.95,
                                                text_threshold=0.7, clip_mode="reject")).hint
    assert "- a lower box threshold (now 0.95; it goes down to 0.30)" in strict
    assert "- a lower text threshold (now 0.70; it goes down to 0.25)" in strict
    assert "- CLIP mode *rescore* or *relabel*: *reject* drops every box" in strict
    # something found: no advice
    assert runner.run(shapes_path, RunOptions(classes="red square")).hint == ""


def test_toy_models_name_the_classes_they_know(pipeline: ovperc.Pipeline, tmp_path: Path,
                                               shapes_path: Path):
    from ovperc.demo.guide import SHAPES_TINY

    runner = DemoRunner(pipeline, workdir=tmp_path, guide=SHAPES_TINY)
    four = "red circle, blue square, green triangle, yellow star"
    hint = runner.run(shapes_path, RunOptions(classes="house, tree, sun")).hint
    assert hint.startswith(f"“house”, “tree”, “sun” are not among the classes these toy models "
                           f"know: {four}.\n\nNothing found. Try:")
    assert hint.endswith(f"- the classes these toy models know: {four}")
    # found, but one class is not known: said, without the advice
    mixed = runner.run(shapes_path, RunOptions(classes="red circle, unicorn")).hint
    assert mixed == f"“unicorn” is not among the classes these toy models know: {four}."
    with pytest.raises(DemoInputError, match=f"e.g. `{four}`"):
        runner.run(shapes_path, RunOptions(classes=" , "))


def test_old_result_files_are_removed(runner: DemoRunner, shapes_path: Path):
    old = runner.workdir / "old.json"
    old.write_text("{}")
    stale = time.time() - 2 * runner.limits.keep_seconds
    os.utime(old, (stale, stale))
    runner.run(shapes_path, RunOptions(classes="red"))
    assert not old.exists()


def test_a_given_workdir_loses_only_the_demos_own_files(tmp_path: Path, shapes_path: Path):
    mine = tmp_path / "holiday.json"
    mine.write_text("{}")
    runner = DemoRunner(ovperc.Pipeline(tagger=FakeTagger([("sky", 0.5)])), workdir=tmp_path,
                        owns_workdir=False)
    first = runner.run(shapes_path, RunOptions(classes=""))
    stale = time.time() - 2 * runner.limits.keep_seconds
    for path in (mine, first.json_path):
        os.utime(path, (stale, stale))
    runner.run(shapes_path, RunOptions(classes=""))
    assert mine.read_text() == "{}" and not first.json_path.exists()


def test_tagger_only_pipeline_tags(tmp_path: Path, shapes_path: Path):
    runner = DemoRunner(ovperc.Pipeline(tagger=FakeTagger([("sky", 0.5)])), workdir=tmp_path)
    result = runner.run(shapes_path, RunOptions(classes=""))
    assert tag_scores(result.perception) == {"sky": 0.5}
    assert not runner.has_detector and not runner.has_segmenter and runner.clip_modes == ()
    with pytest.raises(DemoInputError, match="switch tagging on"):
        runner.run(shapes_path, RunOptions(tagging=False))
    silent = DemoRunner(ovperc.Pipeline(tagger=FakeTagger([])), workdir=tmp_path)
    assert silent.run(shapes_path, RunOptions()).hint == "The tagger named nothing in this image."


def test_runner_needs_a_detector_or_a_tagger(tmp_path: Path):
    from tests.fakes import FakeSegmenter

    with pytest.raises(ValueError, match="needs a pipeline with a detector or a tagger"):
        DemoRunner(ovperc.Pipeline(segmenter=FakeSegmenter()), workdir=tmp_path)
    with pytest.raises(TypeError, match="needs an ovperc.Pipeline"):
        DemoRunner("default", workdir=tmp_path)
    with pytest.raises(ValueError, match="max_classes must be > 0"):
        DemoLimits(max_classes=0)
