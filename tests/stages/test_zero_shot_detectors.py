"""OWLv2 / OWL-ViT and OmDet-Turbo on tiny random models saved in the transformers format.

Each is loaded from its folder through the registry (architecture from config.json) and
checked against transformers' own post-processing on the same model and image.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from ovperc.pipeline import Pipeline
from ovperc.registry import build_stage
from ovperc.stages import Detector, OmDetTurboDetector, OwlDetector

CLASSES = ["person", "car", "traffic light"]


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _assert_valid(dets, prompts: list[str], height: int, width: int) -> None:
    n = len(dets)
    assert dets.xyxy.shape == (n, 4) and dets.xyxy.dtype == np.float32
    assert dets.confidence.dtype == np.float32 and dets.class_id.shape == (n,)
    assert list(dets.data["prompt"]) == [prompts[i] for i in dets.class_id]
    assert list(dets.data["class_name"]) == list(dets.data["prompt"])
    assert (dets.xyxy[:, [0, 2]] >= 0).all() and (dets.xyxy[:, [0, 2]] <= width).all()
    assert (dets.xyxy[:, [1, 3]] >= 0).all() and (dets.xyxy[:, [1, 3]] <= height).all()
    assert (np.diff(dets.confidence) <= 0).all(), "sorted best first"


def _clipped(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return boxes


@pytest.fixture(scope="module", params=["owlv2", "owlvit"])
def owl(request, tiny_owlv2: Path, tiny_owlvit: Path) -> tuple[OwlDetector, Path]:
    folder = tiny_owlv2 if request.param == "owlv2" else tiny_owlvit
    detector = build_stage("detector", str(folder), device="cpu", box_threshold=0.5)
    return detector.load(), folder


@pytest.fixture(scope="module")
def omdet(tiny_omdet: Path) -> OmDetTurboDetector:
    return build_stage("detector", str(tiny_omdet), device="cpu", box_threshold=0.0).load()


def test_folders_load_the_stage_their_config_names(owl, omdet) -> None:
    detector, _ = owl
    assert isinstance(detector, OwlDetector) and isinstance(detector, Detector)
    assert isinstance(omdet, OmDetTurboDetector) and isinstance(omdet, Detector)
    assert type(omdet._model).__name__ == "OmDetTurboForObjectDetection"


def test_owl_parity_with_transformers_post_processing(owl) -> None:
    import torch
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    detector, folder = owl
    image = _image(150, 260)  # not square: OWLv2 pads to a square, OWL-ViT does not
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(folder).eval()
    inputs = processor(text=[CLASSES], images=image, return_tensors="pt",
                       input_data_format="channels_last")
    with torch.inference_mode():
        outputs = model(**inputs)
    reference = processor.post_process_grounded_object_detection(
        outputs, threshold=0.5, target_sizes=[(150, 260)], text_labels=[CLASSES])[0]
    order = np.argsort(-reference["scores"].numpy(), kind="stable")

    dets = detector.detect([image], [CLASSES])[0]
    assert 0 < len(dets) == len(order) < outputs.logits.shape[1]  # the threshold bites
    np.testing.assert_allclose(dets.confidence, reference["scores"].numpy()[order], atol=1e-5)
    np.testing.assert_allclose(dets.xyxy, _clipped(reference["boxes"].numpy(), 150, 260)[order],
                               atol=1e-3)
    np.testing.assert_array_equal(dets.class_id, reference["labels"].numpy()[order])
    assert list(dets.data["class_name"]) == [reference["text_labels"][i] for i in order]
    _assert_valid(dets, CLASSES, 150, 260)


def test_omdet_parity_with_transformers_post_processing(omdet, tiny_omdet: Path) -> None:
    import torch
    from transformers import AutoProcessor, OmDetTurboForObjectDetection

    image = _image(150, 260)
    # the detector's decoder gathers its deformable attention samples: parity covers that path
    assert any("forward" in vars(m) for m in omdet._model.modules()
               if type(m).__name__ == "MultiScaleDeformableAttention")
    processor = AutoProcessor.from_pretrained(tiny_omdet)
    model = OmDetTurboForObjectDetection.from_pretrained(tiny_omdet).eval()
    inputs = processor(images=image, text=CLASSES, return_tensors="pt",
                       input_data_format="channels_last")
    with torch.inference_mode():
        outputs = model(**inputs)
    # random weights put the scores anywhere: cut at the median of the top-k candidates
    candidates = outputs.decoder_class_logits[0].sigmoid().flatten().topk(20).values
    threshold = float(candidates.median())
    reference = processor.post_process_grounded_object_detection(
        outputs, text_labels=CLASSES, threshold=threshold, nms_threshold=0.5,
        target_sizes=[(150, 260)])[0]
    order = np.argsort(-reference["scores"].numpy(), kind="stable")

    dets = _with_threshold(omdet, threshold).detect([image], [CLASSES])[0]
    assert len(dets) == len(order) > 0
    np.testing.assert_allclose(dets.confidence, reference["scores"].numpy()[order], atol=1e-5)
    np.testing.assert_allclose(dets.xyxy, reference["boxes"].numpy()[order], atol=1e-3)
    np.testing.assert_array_equal(dets.class_id, reference["labels"].numpy()[order])
    _assert_valid(dets, CLASSES, 150, 260)


def _with_threshold(detector, box_threshold: float):
    """The same loaded model with another box threshold."""
    other = copy.copy(detector)
    other.box_threshold = box_threshold
    return other


def _detectors(owl, omdet):
    return [owl[0], omdet]


def test_batched_equals_one_by_one(owl, omdet) -> None:
    images = [_image(120, 200, 1), _image(200, 120, 2), _image(90, 90, 3), _image(120, 200, 4)]
    prompts = [CLASSES, ["dog", "cat"], CLASSES[::-1], ["dog", "cat"]]
    for detector in _detectors(owl, omdet):
        together = detector.detect(images, prompts)
        for image, image_prompts, batched in zip(images, prompts, together):
            alone = detector.detect([image], [image_prompts])[0]
            _assert_valid(batched, image_prompts, *image.shape[:2])
            np.testing.assert_allclose(batched.xyxy, alone.xyxy, atol=1e-3)
            np.testing.assert_allclose(batched.confidence, alone.confidence, atol=1e-5)
            np.testing.assert_array_equal(batched.class_id, alone.class_id)


def test_one_forward_for_all_classes(owl, omdet, monkeypatch) -> None:
    for detector in _detectors(owl, omdet):
        calls: list[int] = []
        forward = detector._model.forward
        monkeypatch.setattr(detector._model, "forward",
                            lambda *a, _f=forward, _c=calls, **k: _c.append(1) or _f(*a, **k))
        detector.detect([_image(100, 140)], [[f"class {i}" for i in range(20)]])
        assert len(calls) == 1, type(detector).__name__


def test_blank_and_missing_prompts(owl, omdet) -> None:
    for detector in _detectors(owl, omdet):
        dets = _with_threshold(detector, 0.0).detect([_image(100, 100), _image(100, 100)],
                                                     [["dog", "  ", "cat"], []])
        assert len(dets[0]) > 0 and 1 not in dets[0].class_id  # the blank prompt finds nothing
        assert len(dets[1]) == 0 and set(dets[1].data) >= {"prompt", "class_name"}


def test_wrong_architecture_and_bad_input_are_clear_errors(tiny_grounding_dino: Path,
                                                           owl) -> None:
    with pytest.raises(ValueError, match="model_type 'grounding-dino', not OWLv2.*GroundingDinoDetector"):
        OwlDetector(str(tiny_grounding_dino), device="cpu").load()
    with pytest.raises(ValueError, match="1 images but 2 prompt lists"):
        owl[0].detect([_image(10, 10)], [["a"], ["b"]])
    with pytest.raises(TypeError, match="list of strings"):
        owl[0].detect([_image(10, 10)], ["dog"])
    with pytest.raises(ValueError, match="nms_threshold"):
        OmDetTurboDetector("x", nms_threshold=2.0)


def test_nothing_loads_before_the_first_detect(tmp_path: Path) -> None:
    detector = OwlDetector(str(tmp_path / "not-built"))
    assert detector.detect([_image(10, 10)], [[]])[0].xyxy.shape == (0, 4)
    assert detector._model is None


def test_registry_names_and_from_preset(tiny_owlv2: Path, tiny_omdet: Path) -> None:
    pipe = Pipeline.from_preset("detect", device="cpu", detector="owlv2-base")
    assert isinstance(pipe.detector, OwlDetector)
    assert pipe.detector.model_name == "google/owlv2-base-patch16-ensemble"
    pipe = Pipeline.from_preset("detect", device="cpu", detector="omdet-turbo",
                                options={"detector": {"box_threshold": 0.2, "text_threshold": 0.1}})
    assert isinstance(pipe.detector, OmDetTurboDetector) and pipe.detector.box_threshold == 0.2
    # a local folder runs end to end through the pipeline, classes mapped as for Grounding DINO
    pipe = Pipeline.from_preset("detect", device="cpu", detector=str(tiny_omdet),
                                options={"detector": {"box_threshold": 0.0}})
    result = pipe(_image(120, 160), classes=CLASSES)
    assert len(result.detections) > 0
    assert set(result.class_names) <= set(CLASSES)
