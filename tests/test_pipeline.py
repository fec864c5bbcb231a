"""Chain logic with deterministic fake stages: ontology mapping, NMS, batching, results."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import supervision as sv

import ovperc
from ovperc import Ontology, Perception, Pipeline
from tests.fakes import FakeDetector, FakeSegmenter, FakeTagger

BOXES = {
    "man": [(10, 10, 50, 90, 0.9)],
    "woman": [(12, 11, 52, 91, 0.8), (100, 10, 140, 90, 0.7)],
    "car": [(11, 12, 51, 88, 0.6)],
    "dog": [(200, 100, 260, 150, 0.5)],
}


@pytest.fixture
def image() -> np.ndarray:
    return np.full((160, 320, 3), 127, dtype=np.uint8)


def test_prompts_map_to_ontology_classes(image):
    pipe = Pipeline(detector=FakeDetector(BOXES), nms="none")
    onto = Ontology({"man": "person", "woman": "person", "car": "car"})
    result = pipe(image, classes=onto)
    assert result.class_names == ["person", "person", "person", "car"]
    assert result.detections.class_id.tolist() == [0, 0, 0, 1]
    assert result.detections.data["prompt"].tolist() == ["man", "woman", "woman", "car"]


def test_class_aware_nms_removes_duplicates_from_synonym_prompts(image):
    pipe = Pipeline(detector=FakeDetector(BOXES))
    onto = Ontology({"man": "person", "woman": "person", "car": "car"})
    result = pipe(image, classes=onto)
    # man (0.9) and woman (0.8) overlap and name one class: one survives; car is kept.
    assert sorted(result.class_names) == ["car", "person", "person"]
    assert 0.8 not in result.detections.confidence.round(2).tolist()


def test_class_agnostic_nms_suppresses_across_classes(image):
    pipe = Pipeline(detector=FakeDetector(BOXES), nms="agnostic")
    result = pipe(image, classes=Ontology({"man": "person", "car": "car"}))
    assert result.class_names == ["person"]


@pytest.mark.parametrize(
    ("nms", "nms_iou", "error"), [("bogus", 0.5, "nms must be"), ("class", 0.0, "nms_iou")]
)
def test_bad_pipeline_options_are_clear_errors(nms, nms_iou, error):
    with pytest.raises(ValueError, match=error):
        Pipeline(detector=FakeDetector({}), nms=nms, nms_iou=nms_iou)


def test_no_stage_is_an_error():
    with pytest.raises(ValueError, match="at least one stage"):
        Pipeline()


def test_no_classes_and_no_tagger_is_a_clear_error(image):
    with pytest.raises(ValueError, match="no classes given"):
        Pipeline(detector=FakeDetector(BOXES))(image)


def test_zero_detections_give_an_empty_result_with_all_fields(image):
    pipe = Pipeline(detector=FakeDetector({}), segmenter=FakeSegmenter())
    result = pipe(image, classes=["unicorn"])
    assert len(result.detections) == 0
    assert result.to_dict()["detections"] == []
    assert result.annotate().shape == image.shape


def test_segmenter_gets_every_box_and_masks_are_image_sized(image):
    segmenter = FakeSegmenter()
    pipe = Pipeline(detector=FakeDetector(BOXES), segmenter=segmenter, nms="none")
    result = pipe(image, classes=["man", "dog"])
    assert result.detections.mask.shape == (2, 160, 320)
    assert segmenter.calls == 1
    assert set(result.timings) == {"detect", "segment"}


def test_given_detections_skip_the_detector(image):
    detector = FakeDetector(BOXES)
    pipe = Pipeline(detector=detector, segmenter=FakeSegmenter())
    boxes = sv.Detections(xyxy=np.array([[0, 0, 10, 10]], dtype=float), class_id=np.array([1]))
    result = pipe(image, classes=["cat", "dog"], detections=boxes)
    assert detector.calls == []
    assert result.class_names == ["dog"]
    assert result.detections.mask.shape == (1, 160, 320)


def test_map_batches_and_equals_one_by_one(image):
    images = [image, image[:, ::-1].copy(), image[:100].copy()]
    pipe = Pipeline(detector=FakeDetector(BOXES), segmenter=FakeSegmenter())
    onto = Ontology(["man", "dog"])
    batched = list(pipe.map(images, classes=onto, batch_size=2))
    single = [pipe(img, classes=onto) for img in images]
    assert len(batched) == 3
    for a, b in zip(batched, single):
        assert a.image_size == b.image_size
        np.testing.assert_array_equal(a.detections.xyxy, b.detections.xyxy)
        np.testing.assert_array_equal(a.detections.mask, b.detections.mask)
        assert a.class_names == b.class_names


def test_map_skips_or_raises_on_bad_images(image, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    pipe = Pipeline(detector=FakeDetector(BOXES))
    from ovperc import ImageError

    with pytest.raises(ImageError, match="bad.jpg"):
        list(pipe.map([image, bad], classes=["man"]))
    results = list(pipe.map([image, bad, image], classes=["man"], skip_errors=True))
    assert len(results) == 2


def test_tags_become_classes_with_ids_stable_across_a_run(image):
    tagger = FakeTagger([[("dog", 0.9)], [("man", 0.8), ("dog", 0.7)]])
    pipe = Pipeline(tagger=tagger, detector=FakeDetector(BOXES), nms="none")
    first, second = pipe.map([image, image], batch_size=1)
    assert first.ontology.classes == ["dog"]
    assert second.ontology.classes == ["dog", "man"]
    assert first.detections.class_id.tolist() == [0]
    assert dict(zip(second.class_names, second.detections.class_id.tolist())) == {"man": 1, "dog": 0}
    assert first.tags[0].name == "dog"


def test_to_dict_is_json_and_masks_round_trip_as_rle(image):
    pipe = Pipeline(detector=FakeDetector(BOXES), segmenter=FakeSegmenter(), nms="none")
    result = pipe(image, classes=["man", "dog"])
    data = json.loads(json.dumps(result.to_dict()))
    assert data["image_size"] == {"width": 320, "height": 160}
    assert [d["class_name"] for d in data["detections"]] == ["man", "dog"]
    for det, mask in zip(data["detections"], result.detections.mask):
        decoded = sv.rle_to_mask(det["mask"]["counts"], resolution_wh=(320, 160))
        np.testing.assert_array_equal(decoded, mask)


def test_annotate_draws_on_a_copy(image):
    pipe = Pipeline(detector=FakeDetector(BOXES), segmenter=FakeSegmenter())
    result = pipe(image, classes=["man"])
    drawn = result.annotate()
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert not np.array_equal(drawn, image)
    assert np.all(result.image == image)


def test_annotate_needs_an_image_when_none_kept(image):
    pipe = Pipeline(detector=FakeDetector(BOXES), keep_images=False)
    result = pipe(image, classes=["man"])
    assert result.image is None
    with pytest.raises(ValueError, match="pass the image"):
        result.annotate()
    assert result.annotate(image).shape == image.shape


def test_perception_is_exported():
    assert Perception.__name__ == "Perception"


def test_import_is_cheap():
    code = (
        "import ovperc, sys; ovperc.Ontology; ovperc.Pipeline; ovperc.stages.Detector; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_names_are_the_documented_objects():
    """Every exported name is its object, also once its module was imported directly."""
    code = (
        "import importlib, inspect, ovperc, ovperc.datasets.scoring, ovperc.labeling.runner\n"
        "for package in ('ovperc', 'ovperc.stages', 'ovperc.labeling', 'ovperc.datasets'):\n"
        "    module = importlib.import_module(package)\n"
        "    for name in module.__all__:\n"
        "        value = getattr(module, name)\n"
        "        assert name == 'stages' or not inspect.ismodule(value), (package, name)\n"
        "from ovperc.datasets import evaluate\n"
        "assert callable(evaluate)\n"
        "assert dir(ovperc) == sorted(ovperc.__all__)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        ovperc.nope  # noqa: B018


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="detect\\+segment"):
        Pipeline.from_preset("nope")


def test_given_boxes_may_name_classes_outside_the_given_ones(image):
    pipe = Pipeline(segmenter=FakeSegmenter())
    boxes = sv.Detections(xyxy=np.array([[0, 0, 10, 10], [5, 5, 40, 40]], dtype=float))
    boxes.data["class_name"] = np.array(["cat", "fox"], dtype=object)
    result = pipe(image, classes=["dog", "cat"], detections=boxes)
    assert result.class_names == ["cat", "fox"]
    assert result.ontology.classes == ["dog", "cat", "fox"]
    assert result.detections.class_id.tolist() == [1, 2]


def test_default_preset_shares_one_clip_model_between_tagger_and_classifier():
    pipe = Pipeline.from_preset("default", device="cpu")
    assert pipe.tagger.clip is pipe.classifier.clip
    assert pipe.detector is not None and pipe.segmenter is not None


def test_ram_names_select_the_native_ram_tagger():
    from ovperc.stages import RamTagger

    pipe = Pipeline.from_preset("tag+detect", device="cpu", tagger="ram")
    assert isinstance(pipe.tagger, RamTagger)
