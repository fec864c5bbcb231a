"""The detect -> segment chain on tiny real-architecture models, through the public API."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from ovperc import Ontology, Pipeline
from ovperc.stages import GroundingDinoDetector, SamSegmenter


@pytest.fixture(scope="module")
def pipe(tiny_grounding_dino, tiny_sam) -> Pipeline:
    return Pipeline.from_preset(
        "detect+segment",
        device="cpu",
        detector=str(tiny_grounding_dino),
        segmenter=str(tiny_sam),
        options={"detector": {"box_threshold": 0.2, "text_threshold": 0.1}},
    )


ONTOLOGY = Ontology({"person": "person", "man": "person", "car": "car", "dog": "dog"})


def test_preset_builds_the_real_stages(pipe):
    assert isinstance(pipe.detector, GroundingDinoDetector)
    assert isinstance(pipe.segmenter, SamSegmenter)


def test_chain_contract_on_a_non_square_image(pipe, street_image):
    result = pipe(street_image, classes=ONTOLOGY)
    det = result.detections
    assert len(det) > 0, "the tiny model is built to give boxes at these thresholds"
    h, w = street_image.shape[:2]
    assert result.image_size == (w, h)
    assert np.all(det.xyxy[:, [0, 2]] >= 0) and np.all(det.xyxy[:, [0, 2]] <= w)
    assert np.all(det.xyxy[:, [1, 3]] >= 0) and np.all(det.xyxy[:, [1, 3]] <= h)
    assert set(result.class_names) <= set(ONTOLOGY.classes)
    assert [ONTOLOGY.classes[i] for i in det.class_id] == result.class_names
    assert det.mask.shape == (len(det), h, w) and det.mask.dtype == bool
    assert set(result.timings) == {"detect", "segment"}
    # NMS per class: no two boxes of one class overlap above the IoU threshold.
    for cid in np.unique(det.class_id):
        boxes = det.xyxy[det.class_id == cid]
        iou = sv.box_iou_batch(boxes, boxes)
        np.fill_diagonal(iou, 0)
        assert iou.max(initial=0) <= 0.5 + 1e-6


def test_each_mask_belongs_to_its_box(pipe, street_image):
    result = pipe(street_image, classes=ONTOLOGY)
    det = result.detections
    for i in range(min(len(det), 3)):
        alone = pipe(street_image, classes=ONTOLOGY, detections=det[i : i + 1])
        np.testing.assert_array_equal(alone.detections.mask[0], det.mask[i])


def test_batched_equals_one_by_one_and_is_deterministic(pipe, street_image):
    images = [street_image, street_image[:, ::-1].copy(), street_image[60:400, 100:].copy()]
    batched = list(pipe.map(images, classes=ONTOLOGY, batch_size=3))
    single = [pipe(image, classes=ONTOLOGY) for image in images]
    again = [pipe(image, classes=ONTOLOGY) for image in images]
    for a, b, c in zip(batched, single, again):
        assert a.class_names == b.class_names == c.class_names
        np.testing.assert_allclose(a.detections.xyxy, b.detections.xyxy, atol=1e-3)
        np.testing.assert_allclose(a.detections.confidence, b.detections.confidence, atol=1e-4)
        np.testing.assert_array_equal(b.detections.xyxy, c.detections.xyxy)
        np.testing.assert_array_equal(b.detections.mask, c.detections.mask)
