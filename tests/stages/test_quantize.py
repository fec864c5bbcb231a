"""``quantize="int8"`` and ``image_size`` on the stages: what is quantized, how close it stays.

Tiny random models of the real architectures, loaded through the public constructors: the
int8 path must hold quantized linear layers where promised (and float ones where promised),
and give nearly the float path's boxes, masks and embeddings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch

from ovperc.stages.quantize import KEEP_FLOAT, check_quantize, quantize_linear


def _quantized(module: torch.nn.Module) -> list[str]:
    return [name for name, m in module.named_modules()
            if type(m).__module__.startswith("torch.ao.nn.quantized") and hasattr(m, "weight")]


def _float_linears(module: torch.nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if type(m) is torch.nn.Linear]


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


@pytest.mark.parametrize(("value", "kwargs", "expected"), [
    (None, {}, None),
    ("none", {}, None),
    ("int8", {}, "int8"),
    ("int8", {"device": "cpu", "dtype": "float32"}, "int8"),
    ("int4", {}, ValueError),
    ("int8", {"device": "cuda:0"}, ValueError),
    ("int8", {"dtype": "float16"}, ValueError),
    ("int8", {"dtype": torch.bfloat16}, ValueError),
])
def test_check_quantize(value, kwargs, expected) -> None:
    if expected is ValueError:
        with pytest.raises(ValueError, match="quantize"):
            check_quantize(value, **kwargs)
    else:
        assert check_quantize(value, **kwargs) == expected


def test_quantize_linear_keeps_named_layers_float_and_stays_close() -> None:
    torch.manual_seed(0)
    net = torch.nn.ModuleDict({
        "mlp": torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)),
        "sampling_offsets": torch.nn.Linear(64, 16),
    }).eval()
    x = torch.randn(32, 64)
    with torch.inference_mode():
        before = net["mlp"](x)
    assert quantize_linear(net, None) is net and not _quantized(net)
    assert quantize_linear(net, "int8") is net
    assert sorted(_quantized(net)) == ["mlp.0", "mlp.2"]
    assert _float_linears(net) == ["sampling_offsets"]
    with torch.inference_mode():
        after = net["mlp"](x)
    assert (after - before).abs().max() < 0.05 * before.abs().max()


def test_grounding_dino_int8_and_smaller_input(tiny_grounding_dino: Path, street_image) -> None:
    from ovperc.stages.grounding_dino import GroundingDinoDetector

    folder = str(tiny_grounding_dino)
    exact = GroundingDinoDetector(folder, device="cpu", box_threshold=0.0, text_threshold=0.0).load()
    fast = GroundingDinoDetector(folder, device="cpu", box_threshold=0.0, text_threshold=0.0,
                                 quantize="int8").load()
    assert _quantized(fast._model) and not _quantized(exact._model)
    kept = _float_linears(fast._model)
    assert kept and all(set(name.split(".")) & set(KEEP_FLOAT) for name in kept)
    prompts = [["red block", "blue block"]]
    [a] = exact.detect([street_image], prompts)
    [b] = fast.detect([street_image], prompts)
    assert len(a) == len(b) > 0
    matched = (_box_iou(a.xyxy, b.xyxy) >= 0.5).any(axis=1).mean()
    assert matched >= 0.9, matched

    small = GroundingDinoDetector(folder, device="cpu", image_size=(96, 160)).load()
    assert small._processor.image_processor.size == {"shortest_edge": 96, "longest_edge": 160}
    pixels, _ = small._pixels(0, street_image)
    assert tuple(pixels.shape[-2:]) == (96, 128)
    [c] = small.detect([street_image], prompts)
    assert (c.xyxy[:, 2] <= 640).all() and (c.xyxy[:, 3] <= 480).all()


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"quantize": "int4"}, ValueError),
    ({"quantize": "int8", "dtype": "float16"}, ValueError),
    ({"image_size": 10}, ValueError),
    ({"image_size": (480, 400)}, ValueError),
    ({"image_size": "480"}, TypeError),
])
def test_grounding_dino_bad_fast_options(kwargs, error) -> None:
    from ovperc.stages.grounding_dino import GroundingDinoDetector

    with pytest.raises(error):
        GroundingDinoDetector("./no-model", device="cpu", **kwargs)


def test_sam_int8_masks_close_to_float(tiny_sam: Path, street_image) -> None:
    from ovperc.stages.sam import SamSegmenter

    boxes = sv.Detections(xyxy=np.array([[50, 100, 200, 300], [350, 250, 600, 420],
                                         [0, 0, 640, 480], [300, 20, 420, 160]], dtype=np.float32))
    [a] = SamSegmenter(str(tiny_sam), device="cpu").segment([street_image], [boxes])
    fast = SamSegmenter(str(tiny_sam), device="cpu", quantize="int8", quantize_decoder=True)
    [b] = fast.segment([street_image], [boxes])
    assert _quantized(fast.sam.image_encoder) and _quantized(fast.sam.mask_decoder)
    inter = (a.mask & b.mask).sum(axis=(1, 2))
    union = (a.mask | b.mask).sum(axis=(1, 2))
    ious = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    assert ious.mean() >= 0.9, ious
    encoder_only = SamSegmenter(str(tiny_sam), device="cpu", quantize="int8")
    assert _quantized(encoder_only.sam.image_encoder) and not _quantized(encoder_only.sam.mask_decoder)


def test_clip_int8_quantizes_the_image_tower_only(tiny_clip: str, street_image) -> None:
    from ovperc.stages.clip_model import ClipModel, resolve_clip

    exact = ClipModel(tiny_clip, device="cpu").load()
    fast = ClipModel(tiny_clip, device="cpu", quantize="int8").load()
    assert _quantized(fast.model.visual) and not _quantized(fast.model.transformer)
    texts = ["a photo of a cat.", "a photo of a dog."]
    assert torch.equal(exact.encode_texts(texts), fast.encode_texts(texts))
    assert fast.cache_key == exact.cache_key  # text embeddings are unchanged: caches stay valid
    crops = [street_image, street_image[100:300, 50:200], street_image[250:420, 350:600]]
    cosine = (exact.encode_images(crops) * fast.encode_images(crops)).sum(-1)
    assert (cosine > 0.98).all(), cosine
    assert resolve_clip(fast, quantize="int8") is fast
    with pytest.raises(ValueError, match="quantize"):
        resolve_clip(exact, quantize="int8")


def test_omdet_int8_detects(tiny_omdet: Path, street_image) -> None:
    from ovperc.registry import build_stage

    detector = build_stage("detector", str(tiny_omdet), device="cpu", quantize="int8").load()
    assert _quantized(detector._model)
    [dets] = detector.detect([street_image], [["red block", "blue block"]])
    assert isinstance(dets, sv.Detections)
