"""Grounding DINO's lean attention equals transformers' own.

The deformable attention summed level by level, and the image-text fusion attention with its
image-side projections moved to the caption's tokens.

A tiny random Grounding DINO of the real architecture, loaded twice: transformers' code path
and the one :class:`GroundingDinoDetector` uses by default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ovperc.stages import GroundingDinoDetector
from ovperc.stages.grounding_dino_attention import lean_deformable_attention, share_fusion_projections

CLASSES = ["person", "car", "traffic light"]


def _model(folder: Path) -> torch.nn.Module:
    from transformers import AutoConfig

    from ovperc.stages.grounding_dino import model_class_for

    model_class = model_class_for(AutoConfig.from_pretrained(folder).model_type)
    return model_class.from_pretrained(folder).eval()


@pytest.mark.parametrize("grad", [False, True])  # gathered under inference, level by level for autograd
@pytest.mark.parametrize("family", ["tiny_grounding_dino", "tiny_mm_grounding_dino"])
def test_model_outputs_equal_transformers(family: str, grad: bool, request: pytest.FixtureRequest) -> None:
    from transformers import AutoProcessor

    folder = request.getfixturevalue(family)
    processor = AutoProcessor.from_pretrained(folder)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)
    inputs = processor(images=image, text="person. car. traffic light.", return_tensors="pt",
                       input_data_format="channels_last")
    reference, lean = _model(folder), _model(folder)
    layers = lean.config.encoder_layers + lean.config.decoder_layers
    assert lean_deformable_attention(lean) == layers
    assert share_fusion_projections(lean) == lean.config.encoder_layers
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


@pytest.mark.parametrize("padded", [False, True])  # a shorter caption in a batch is padded
def test_fusion_attention_equals_transformers(tiny_grounding_dino: Path, padded: bool) -> None:
    reference = _model(tiny_grounding_dino).model.encoder.layers[0].fusion_layer.attn
    lean = _model(tiny_grounding_dino).model.encoder.layers[0].fusion_layer.attn
    torch.manual_seed(0)
    for parameter in list(reference.parameters()):  # spread the scores beyond the init's
        parameter.data.normal_(0, 0.2)
    lean.load_state_dict(reference.state_dict())
    assert share_fusion_projections(lean) == 1
    vision, text = torch.randn(2, 300, reference.vision_dim), torch.randn(2, 7, reference.text_dim)
    text_mask = torch.zeros(2, 7, dtype=torch.bool)
    vision_mask = torch.zeros(2, 300, dtype=torch.bool)
    if padded:
        text_mask[1, 5:] = True
        vision_mask[0, 280:] = True
    with torch.inference_mode():
        expected = reference(vision, text, vision_attention_mask=vision_mask, text_attention_mask=text_mask)
        got = lean(vision, text, vision_attention_mask=vision_mask, text_attention_mask=text_mask)
    for (got_out, got_probs), (want_out, want_probs) in zip(got, expected):
        torch.testing.assert_close(got_out, want_out, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got_probs, want_probs, atol=1e-5, rtol=1e-4)


def test_int8_fusion_keeps_transformers_code(tiny_grounding_dino: Path) -> None:
    from ovperc.stages.quantize import quantize_linear

    model = _model(tiny_grounding_dino)
    quantize_linear(model, "int8")
    assert share_fusion_projections(model) == 0


@pytest.mark.parametrize("batch", [1, 2])
def test_gathered_samples_equal_grid_sample(batch: int) -> None:
    """Points inside, on the edges, just outside and far outside every level, as transformers samples them."""
    from transformers.models.grounding_dino.modeling_grounding_dino import MultiScaleDeformableAttention

    from ovperc.stages.grounding_dino_attention import _gather

    torch.manual_seed(0)
    shapes = [(9, 13), (5, 7), (3, 4), (1, 2)]
    heads, dim, queries, points = 4, 8, 50, 3
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, dim)
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2) * 1.6 - 0.3
    locations[:, :5] = torch.tensor([0.0, 1.0, 0.5, -2.0, 3.0]).view(1, 5, 1, 1, 1, 1)  # edges, far out
    weights = torch.softmax(torch.randn(batch, queries, heads, len(shapes) * points), -1)
    weights = weights.view(batch, queries, heads, len(shapes), points)
    expected = MultiScaleDeformableAttention()(value, torch.tensor(shapes), shapes, None, locations,
                                               weights, 64)
    with torch.inference_mode():
        got = _gather(value, shapes, locations, weights)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
