"""The CLIP stages in the chain: tags -> classes, tag_merge, classification, shared model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import supervision as sv

from ovperc import Ontology, Pipeline
from ovperc.stages import ClipClassifier
from tests.fakes import FakeDetector, FakeSegmenter, FakeTagger

BOXES = {
    "dog": [(10, 10, 60, 60, 0.9)],
    "cat": [(100, 20, 150, 80, 0.8)],
    "mug": [(200, 30, 240, 70, 0.7)],
    "man": [(250, 90, 300, 150, 0.6)],
    "person": [(20, 90, 70, 150, 0.5)],
}


class FakeClassifier:
    """Relabels every box to the last class of its image's ontology; records what it saw."""

    def __init__(self) -> None:
        self.seen: list[list[Ontology]] = []

    def classify(self, images: Sequence[np.ndarray], detections: Sequence[sv.Detections],
                 ontologies: Sequence[Ontology]) -> list[sv.Detections]:
        self.seen.append(list(ontologies))
        out = []
        for det, onto in zip(detections, ontologies):
            det = det[:] if len(det) else det
            name = onto.classes[-1]
            det.data["clip_class"] = np.array([name] * len(det), dtype=object)
            det.data["clip_score"] = np.full(len(det), 0.5, dtype=np.float32)
            det.data["class_name"] = det.data["clip_class"].copy()
            out.append(det)
        return out


@pytest.fixture
def image() -> np.ndarray:
    return np.full((160, 320, 3), 127, dtype=np.uint8)


def test_without_classes_the_tags_are_the_detectors_classes(image):
    detector = FakeDetector(BOXES)
    pipe = Pipeline(tagger=FakeTagger([("dog", 0.9), ("cat", 0.4)]), detector=detector, nms="none")
    result = pipe(image)
    assert detector.calls == [[["dog", "cat"]]]
    assert result.ontology.classes == ["dog", "cat"]
    assert result.class_names == ["dog", "cat"]
    assert result.detections.class_id.tolist() == [0, 1]
    assert [t.name for t in result.tags] == ["dog", "cat"]


def test_with_classes_the_tags_are_reported_but_not_detected(image):
    detector = FakeDetector(BOXES)
    pipe = Pipeline(tagger=FakeTagger([("dog", 0.9)]), detector=detector, nms="none")
    result = pipe(image, classes=["mug"])
    assert detector.calls == [[["mug"]]]
    assert result.class_names == ["mug"] and result.ontology.classes == ["mug"]
    assert [t.name for t in result.tags] == ["dog"]


def test_tag_merge_detects_user_classes_and_tags_with_user_ids_first(image):
    detector = FakeDetector(BOXES)
    pipe = Pipeline(tagger=FakeTagger([("dog", 0.9), ("mug", 0.3)]), detector=detector,
                    nms="none")
    result = pipe(image, classes=["mug", "cat"], tag_merge=True)
    assert detector.calls == [[["mug", "cat", "dog"]]]
    assert result.ontology.classes == ["mug", "cat", "dog"]
    assert dict(zip(result.class_names, result.detections.class_id.tolist())) == {
        "mug": 0, "cat": 1, "dog": 2}


def test_tag_merge_keeps_the_users_class_for_a_tag_that_is_one_of_its_prompts(image):
    detector = FakeDetector(BOXES)
    pipe = Pipeline(tagger=FakeTagger([("man", 0.9), ("dog", 0.5)]), detector=detector,
                    nms="none")
    result = pipe(image, classes={"man": "person", "person": "person"}, tag_merge=True)
    assert result.ontology.classes == ["person", "dog"]
    assert sorted(result.class_names) == ["dog", "person", "person"]


def test_classifier_gets_each_images_own_vocabulary_and_ids_follow_new_labels(image):
    classifier = FakeClassifier()
    tagger = FakeTagger([[("dog", 0.9)], [("cat", 0.8), ("dog", 0.7)]])
    pipe = Pipeline(tagger=tagger, detector=FakeDetector(BOXES), classifier=classifier,
                    nms="none")
    first, second = pipe.map([image, image], batch_size=2)
    assert [o.classes for o in classifier.seen[0]] == [["dog"], ["cat", "dog"]]
    assert second.ontology.classes == ["dog", "cat"]
    assert second.class_names == ["dog", "dog"]  # relabelled by the classifier
    assert second.detections.class_id.tolist() == [0, 0]
    assert first.detections.data["clip_score"].tolist() == [0.5]


def test_tiny_clip_classifier_in_the_chain(tiny_clip, image):
    classifier = ClipClassifier(tiny_clip, device="cpu", mode="relabel")
    pipe = Pipeline(detector=FakeDetector(BOXES), segmenter=FakeSegmenter(),
                    classifier=classifier, nms="none")
    result = pipe(image, classes={"dog": "animal", "cat": "animal", "mug": "mug"})
    assert len(result.detections) == 3
    names = result.class_names
    assert set(names) <= {"animal", "mug"}
    assert result.detections.class_id.tolist() == [result.ontology.class_id(n) for n in names]
    assert result.detections.mask.shape == (3, 160, 320)
    assert "classify" in result.timings


def test_default_preset_shares_one_clip_model_and_runs_the_whole_chain(tiny_clip, image):
    pipe = Pipeline.from_preset(
        "default", device="cpu", tagger=tiny_clip, classifier=tiny_clip,
        detector=FakeDetector(BOXES), segmenter=FakeSegmenter(),
        options={"tagger": {"vocabulary": ["dog", "cat", "mug"], "threshold": 0.0, "top_k": 2},
                 "classifier": {"mode": "rescore"}},
        nms="none",
    )
    assert pipe.tagger.clip is pipe.classifier.clip
    result = pipe(image)
    assert len(result.tags) == 2
    assert result.ontology.classes == [t.name for t in result.tags]
    assert len(result.detections) == 2
    assert sorted(result.detections.data["detector_confidence"].tolist()) == pytest.approx([0.8, 0.9])
    assert np.all((result.detections.confidence >= 0) & (result.detections.confidence <= 1))
