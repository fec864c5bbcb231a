"""Grounding DINO's deformable attention summed level by level equals transformers' own.

A tiny random Grounding DINO of the real architecture, loaded twice: transformers' code path
and the one :class:`GroundingDinoDetector` uses by default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ovperc.stages import GroundingDinoDetector
from ovperc.stages.grounding_dino_attention import sum_levels_in_place

CLASSES = ["person", "car", "traffic light"]


def _model(folder: Path) -> torch.nn.Module:
    from transformers import GroundingDinoForObjectDetection

    return GroundingDinoForObjectDetection.from_pretrained(folder).eval()


@pytest.mark.parametrize("grad", [False, True])  # in place under inference, out of place for autograd
def test_model_outputs_equal_transformers(tiny_grounding_dino: Path, grad: bool) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_grounding_dino)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)
    inputs = processor(images=image, text="person. car. traffic light.", return_tensors="pt",
                       input_data_format="channels_last")
    reference, lean = _model(tiny_grounding_dino), _model(tiny_grounding_dino)
    layers = lean.config.encoder_layers + lean.config.decoder_layers
    assert sum_levels_in_place(lean) == layers
    context = torch.enable_grad() if grad else torch.inference_mode()
    with context:
        expected, got = reference(**inputs), lean(**inputs)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got.pred_boxes, expected.pred_boxes, atol=1e-5, rtol=1e-4)
    if grad:  # autograd still works through the patched modules
        got.pred_boxes.sum().backward()


def test_detector_gives_the_same_detections_with_and_without(tiny_grounding_dino: Path) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    results = [
        GroundingDinoDetector(str(tiny_grounding_dino), device="cpu", box_threshold=0.3,
                              text_threshold=0.0, lean_attention=lean).detect([image], [CLASSES])[0]
        for lean in (False, True)
    ]
    plain, lean = results
    assert len(plain) == len(lean) > 0
    np.testing.assert_allclose(lean.xyxy, plain.xyxy, atol=0.01)  # pixels
    np.testing.assert_allclose(lean.confidence, plain.confidence, atol=1e-5)
    np.testing.assert_array_equal(lean.class_id, plain.class_id)
