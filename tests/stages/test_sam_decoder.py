"""The shared-image-token SAM mask decoder against segment-anything's own ``MaskDecoder``.

A tiny random SAM of the real architecture; every box count and both ways of computing the
image side (projecting the shared image tokens once, or reordering the projection onto the
prompt tokens) must give segment-anything's masks and scores within float rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch

from ovperc.stages import SamSegmenter, sam_decoder
from ovperc.stages.sam_decoder import decode_boxes, share_image_tokens
from tests.tiny.sam import tiny_sam_module


@pytest.fixture(scope="module")
def sam() -> torch.nn.Module:
    return tiny_sam_module(seed=3)


def _prompts(sam: torch.nn.Module, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(count, 2, 2, generator=generator) * 1024
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)
    with torch.inference_mode():
        return sam.prompt_encoder(points=None, boxes=boxes, masks=None)


def _embedding(sam: torch.nn.Module) -> torch.Tensor:
    size = sam.prompt_encoder.image_embedding_size
    generator = torch.Generator().manual_seed(7)
    return torch.randn(1, sam.prompt_encoder.embed_dim, *size, generator=generator)


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0, b > 0
    union = (a | b).flatten(-2).sum(-1).clamp(min=1)
    return float(((a & b).flatten(-2).sum(-1) / union).min())


@pytest.mark.parametrize("boxes", [1, 2, 5])
@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("project", ["by cost", "always", "never"])
def test_decode_boxes_equals_mask_decoder(
    sam, boxes: int, multimask: bool, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if project != "by cost":  # force one way of computing the image side everywhere
        monkeypatch.setattr(sam_decoder, "_project_image_once",
                            lambda *_args: project == "always")
    sparse, dense = _prompts(sam, boxes)
    embedding, pe = _embedding(sam), sam.prompt_encoder.get_dense_pe()
    with torch.inference_mode():
        expected_masks, expected_iou = sam.mask_decoder(embedding, pe, sparse, dense, multimask)
        masks, iou = decode_boxes(sam.mask_decoder, embedding, pe, sparse, dense, multimask)
    assert masks.shape == expected_masks.shape == (boxes, 3 if multimask else 1, 256, 256)
    assert iou.shape == expected_iou.shape
    assert (expected_masks > 0).any() and (expected_masks <= 0).any()  # not trivially equal
    torch.testing.assert_close(masks, expected_masks, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(iou, expected_iou, atol=1e-5, rtol=1e-4)
    assert _mask_iou(masks, expected_masks) >= 0.999


def test_both_ways_of_computing_the_image_side_are_used(sam, monkeypatch) -> None:
    """With the tiny sizes, 1 box reorders everything; 5 boxes project the shared layer once."""
    calls: list[bool] = []
    choose = sam_decoder._project_image_once
    monkeypatch.setattr(sam_decoder, "_project_image_once",
                        lambda *args: calls.append(choose(*args)) or calls[-1])
    embedding, pe = _embedding(sam), sam.prompt_encoder.get_dense_pe()
    with torch.inference_mode():
        for count, expected in ((1, False), (5, True)):
            calls.clear()
            sparse, dense = _prompts(sam, count)
            decode_boxes(sam.mask_decoder, embedding, pe, sparse, dense, False)
            assert calls[0] is expected  # the first layer's token-to-image attention
            assert not any(calls[2:])  # later layers see per-box image tokens


def test_zero_boxes_give_empty_outputs(sam) -> None:
    sparse, dense = _prompts(sam, 0)
    with torch.inference_mode():
        masks, iou = decode_boxes(sam.mask_decoder, _embedding(sam),
                                  sam.prompt_encoder.get_dense_pe(), sparse, dense, True)
    assert masks.shape == (0, 3, 256, 256) and iou.shape == (0, 3)


def test_per_box_dense_prompts_are_refused_and_fall_back(sam) -> None:
    """Mask inputs make the dense prompt differ per box: decode_boxes refuses them, the
    patched decoder hands them to segment-anything's own forward."""
    from segment_anything.modeling.mask_decoder import MaskDecoder

    sparse, _ = _prompts(sam, 2)
    dense = torch.randn(2, *_embedding(sam).shape[1:])
    embedding, pe = _embedding(sam), sam.prompt_encoder.get_dense_pe()
    with pytest.raises(ValueError, match="dense prompt"):
        decode_boxes(sam.mask_decoder, embedding, pe, sparse, dense, False)
    patched = tiny_sam_module(seed=3)
    share_image_tokens(patched)
    with torch.inference_mode():
        expected = MaskDecoder.forward(sam.mask_decoder, embedding, pe, sparse, dense, False)
        got = patched.mask_decoder(embedding, pe, sparse, dense, False)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("count", [0, 1, 6])
def test_segmenter_masks_equal_with_and_without_the_shared_decoder(
    tiny_sam: Path, count: int
) -> None:
    rng = np.random.default_rng(count)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    corners = np.sort(rng.uniform(0, 1, (count, 2, 2)), axis=1) * [160, 120]
    boxes = sv.Detections(xyxy=corners.reshape(count, 4).astype(np.float32))
    plain = SamSegmenter(tiny_sam, device="cpu", shared_decoder=False)
    [expected] = plain.segment([image], [boxes])
    for group in (None, 128):  # the cpu's groups of 4, and all boxes in one call
        [got] = SamSegmenter(tiny_sam, device="cpu", max_boxes_per_call=group).segment(
            [image], [boxes])
        assert got.mask.shape == expected.mask.shape == (count, 120, 160)
        # random tiny weights leave logits near the threshold: allow a pixel in a thousand
        assert count == 0 or (got.mask != expected.mask).mean() <= 1e-3
        np.testing.assert_allclose(got.data["mask_score"], expected.data["mask_score"],
                                   atol=1e-5, rtol=1e-4)



def test_an_int8_decoder_keeps_segment_anythings_forward(tiny_sam: Path) -> None:
    """The shared decoder reads float weights: with an int8 decoder the stage still segments."""
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    boxes = sv.Detections(xyxy=np.array([[5, 5, 40, 40], [20, 10, 70, 60]], dtype=np.float32))
    segmenter = SamSegmenter(tiny_sam, device="cpu", quantize="int8", quantize_decoder=True)
    [got] = segmenter.segment([image], [boxes])
    assert got.mask.shape == (2, 64, 80)
    assert segmenter.sam.mask_decoder.forward.__func__ is type(segmenter.sam.mask_decoder).forward
