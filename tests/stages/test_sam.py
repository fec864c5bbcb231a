"""SamSegmenter: masks from boxes with a tiny SAM of the real architecture.

Random weights make arbitrary masks, so masks are checked against segment-anything's own
``SamPredictor`` on the same weights, and the contracts (shapes, order, fields, batching,
one embedding per image, downloads checked by sha256) are checked directly.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch

from ovperc.hub import ModelNotAvailableError, sha256_of
from ovperc.stages import SamSegmenter, Segmenter
from ovperc.stages import sam as sam_module
from ovperc.stages.sam import SAM_MODELS, SamArchitecture, SamCheckpoint, load_sam
from tests.tiny.sam import TINY_SAM, reference_sam


def _image(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    image[height // 4: height // 2, width // 5: width // 2] = (220, 40, 40)
    return image


def _boxes(height: int, width: int, count: int, seed: int) -> sv.Detections:
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0, width * 0.6, count)
    y0 = rng.uniform(0, height * 0.6, count)
    x1 = x0 + rng.uniform(8, width * 0.4, count)
    y1 = y0 + rng.uniform(8, height * 0.4, count)
    return sv.Detections(
        xyxy=np.stack([x0, y0, x1, y1], axis=1),
        confidence=rng.uniform(0.3, 0.9, count),
        class_id=np.arange(count) % 3,
        tracker_id=np.arange(count) + 100,
        data={"class_name": np.array([f"class{i % 3}" for i in range(count)])},
    )


def _reference_masks(
    sam: torch.nn.Module, image: np.ndarray, xyxy: np.ndarray, multimask: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """segment-anything's own answer: set_image, then all boxes in one predict_torch."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(sam)
    predictor.set_image(image)
    boxes = predictor.transform.apply_boxes_torch(
        torch.as_tensor(xyxy, dtype=torch.float), image.shape[:2]
    )
    masks, iou, _ = predictor.predict_torch(None, None, boxes=boxes, multimask_output=multimask)
    best = iou.argmax(dim=1)
    rows = torch.arange(len(best))
    return masks[rows, best].numpy(), iou[rows, best].numpy()


@pytest.fixture(scope="module")
def segmenter(tiny_sam: Path) -> SamSegmenter:
    return SamSegmenter(tiny_sam, device="cpu")


@pytest.fixture(scope="module")
def scenes() -> list[tuple[np.ndarray, sv.Detections]]:
    """A wide 480x640 and a tall 300x200 image, four boxes each."""
    return [
        (_image(480, 640, 1), _boxes(480, 640, 4, 1)),
        (_image(300, 200, 2), _boxes(300, 200, 4, 2)),
    ]


@pytest.fixture(scope="module")
def segmented(segmenter: SamSegmenter, scenes) -> list[sv.Detections]:
    return segmenter.segment([image for image, _ in scenes], [dets for _, dets in scenes])


def test_is_a_segmenter(segmenter: SamSegmenter) -> None:
    assert isinstance(segmenter, Segmenter)


def test_masks_are_bool_in_image_size(scenes, segmented) -> None:
    for (image, dets), out in zip(scenes, segmented):
        assert out.mask is not None
        assert out.mask.dtype == bool
        assert out.mask.shape == (len(dets), *image.shape[:2])
        assert out.data["mask_score"].shape == (len(dets),)


def test_matches_segment_anything_predictor(tiny_sam: Path, scenes, segmented) -> None:
    reference = reference_sam(tiny_sam)
    for (image, dets), out in zip(scenes, segmented):
        masks, scores = _reference_masks(reference, image, dets.xyxy)
        assert masks.any() and not masks.all()  # the comparison is not trivially true
        np.testing.assert_array_equal(out.mask, masks)
        np.testing.assert_allclose(out.data["mask_score"], scores, rtol=1e-4, atol=1e-5)


def test_multimask_keeps_the_best_scored_candidate(tiny_sam: Path, scenes) -> None:
    image, dets = scenes[1]
    [out] = SamSegmenter(tiny_sam, device="cpu", multimask=True).segment([image], [dets])
    masks, scores = _reference_masks(reference_sam(tiny_sam), image, dets.xyxy, multimask=True)
    np.testing.assert_array_equal(out.mask, masks)
    np.testing.assert_allclose(out.data["mask_score"], scores, rtol=1e-4, atol=1e-5)


def test_detections_keep_order_and_fields(scenes, segmented) -> None:
    for (_, dets), out in zip(scenes, segmented):
        np.testing.assert_array_equal(out.xyxy, dets.xyxy)
        np.testing.assert_array_equal(out.confidence, dets.confidence)
        np.testing.assert_array_equal(out.class_id, dets.class_id)
        np.testing.assert_array_equal(out.tracker_id, dets.tracker_id)
        np.testing.assert_array_equal(out.data["class_name"], dets.data["class_name"])
        assert dets.mask is None  # the input is left as it was


def test_batched_embedding_equals_one_by_one(tiny_sam: Path, scenes, segmented) -> None:
    batched = SamSegmenter(tiny_sam, device="cpu", encoder_batch_size=2)
    together = batched.segment([image for image, _ in scenes], [dets for _, dets in scenes])
    for one, alone in zip(together, segmented):
        # Batched and single matmuls may round differently; masks must still agree.
        assert (one.mask == alone.mask).mean() > 0.999
        np.testing.assert_allclose(one.data["mask_score"], alone.data["mask_score"], atol=1e-4)


@pytest.mark.parametrize(("encoder_batch_size", "max_boxes", "encoder_calls", "decoder_calls"), [
    (2, 128, [2], [5, 5]),  # a GPU's default: every box of an image in one decode
    (1, 128, [1, 1], [5, 5]),
    (1, None, [1, 1], [4, 1, 4, 1]),  # the cpu's default: groups of 4 that stay in cache
])
def test_one_embedding_per_image_and_grouped_decodes(
    tiny_sam: Path, encoder_batch_size: int, max_boxes: int | None, encoder_calls: list[int],
    decoder_calls: list[int],
) -> None:
    images = [_image(120, 160, 3), _image(160, 120, 4)]
    dets = [_boxes(120, 160, 5, 3), _boxes(160, 120, 5, 4)]
    segmenter = SamSegmenter(tiny_sam, device="cpu", encoder_batch_size=encoder_batch_size,
                             max_boxes_per_call=max_boxes)
    encoder_inputs: list[int] = []  # images per encoder forward
    decoder_boxes: list[int] = []  # boxes per mask-decoder forward
    sam = segmenter.sam
    sam.image_encoder.register_forward_hook(
        lambda _m, args, _o: encoder_inputs.append(args[0].shape[0]))
    sam.mask_decoder.register_forward_hook(
        lambda _m, _a, kwargs, _o: decoder_boxes.append(
            kwargs["sparse_prompt_embeddings"].shape[0]),
        with_kwargs=True,
    )
    segmenter.segment(images, dets)
    assert encoder_inputs == encoder_calls
    assert decoder_boxes == decoder_calls


def test_max_boxes_per_call_splits_the_decode_without_changing_masks(
    tiny_sam: Path, scenes, segmented
) -> None:
    image, dets = scenes[0]
    for group in (1, 3, 128):
        [out] = SamSegmenter(tiny_sam, device="cpu", max_boxes_per_call=group).segment([image], [dets])
        np.testing.assert_array_equal(out.mask, segmented[0].mask)


def test_zero_boxes_give_an_empty_mask_array(segmenter: SamSegmenter, scenes) -> None:
    image, dets = scenes[0]
    empty = sv.Detections.empty()
    out_empty, out_full = segmenter.segment([image, image], [empty, dets[:1]])
    assert out_empty.mask.shape == (0, 480, 640) and out_empty.mask.dtype == bool
    assert len(out_empty) == 0
    assert out_full.mask.shape == (1, 480, 640)
    [only_empty] = segmenter.segment([_image(30, 40, 0)], [sv.Detections.empty()])
    assert only_empty.mask.shape == (0, 30, 40)


def test_deterministic(tiny_sam: Path, scenes, segmented) -> None:
    image, dets = scenes[1]
    [again] = SamSegmenter(tiny_sam, device="cpu").segment([image], [dets])
    np.testing.assert_array_equal(again.mask, segmented[1].mask)


def test_half_precision_runs_encoder_and_decoder_in_that_dtype(
    tiny_sam: Path, scenes, segmented
) -> None:
    # float16/bfloat16 are GPU options; bfloat16 also runs on the cpu, which lets the cast
    # path (heavy parts cast, prompts encoded in float32 then cast) be checked here.
    image, dets = scenes[1]
    half = SamSegmenter(tiny_sam, device="cpu")
    half.dtype = torch.bfloat16
    [out] = half.segment([image], [dets])
    assert half.sam.image_encoder.patch_embed.proj.weight.dtype == torch.bfloat16
    assert half.sam.mask_decoder.iou_token.weight.dtype == torch.bfloat16
    assert out.mask.dtype == bool and out.data["mask_score"].dtype == np.float32
    assert (out.mask == segmented[1].mask).mean() > 0.98


def test_boxes_outside_the_image_are_clipped(segmenter: SamSegmenter, scenes) -> None:
    image, _ = scenes[1]  # 300x200
    inside_and_outside = sv.Detections(
        xyxy=np.array([[0.0, 10.0, 200.0, 300.0], [-50.0, 10.0, 260.0, 400.0]])
    )
    [out] = segmenter.segment([image], [inside_and_outside])
    np.testing.assert_array_equal(out.mask[0], out.mask[1])
    np.testing.assert_array_equal(out.xyxy, inside_and_outside.xyxy)  # boxes kept as given


@pytest.mark.parametrize(
    ("images", "detections", "error"),
    [
        ([np.zeros((8, 8, 3), np.uint8)], [], ValueError),
        ([np.zeros((8, 8), np.uint8)], [sv.Detections.empty()], ValueError),
        ([np.zeros((8, 8, 3), np.float32)], [sv.Detections.empty()], TypeError),
        ([np.zeros((8, 8, 3), np.uint8)], [np.zeros((1, 4))], TypeError),
    ],
)
def test_bad_inputs_are_refused(segmenter, images, detections, error) -> None:
    with pytest.raises(error):
        segmenter.segment(images, detections)


# --- loading -------------------------------------------------------------------------


def test_architecture_is_read_from_state_dict_shapes(tiny_sam: Path) -> None:
    from segment_anything import sam_model_registry

    state = sam_module.load_state_dict(tiny_sam)
    assert SamArchitecture.from_state_dict(state, decoder_num_heads=2) == (
        SamArchitecture.from_dict(TINY_SAM)
    )
    for name, entry in SAM_MODELS.items():
        with torch.device("meta"):
            official = sam_model_registry[name]().state_dict()
        assert SamArchitecture.from_state_dict(official) == entry.architecture


def test_wrapped_checkpoint_without_sidecar_loads_with_a_variant(
    tiny_sam: Path, tmp_path: Path
) -> None:
    state = torch.load(tiny_sam, map_location="cpu", weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": state}, wrapped)
    sam = load_sam(wrapped, variant=SamArchitecture.from_dict(TINY_SAM))
    assert sam.mask_decoder.transformer.layers[0].self_attn.num_heads == 2
    for key, value in sam.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_weights_that_do_not_fit_the_variant_are_refused(tiny_sam: Path) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        SamSegmenter(tiny_sam, device="cpu", variant="vit_b").load()


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weights": torch.zeros(1), "payload": SamCheckpoint("u", "s", None)}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_sam(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "vit_x"}, "unknown SAM model 'vit_x'"),
        ({"model": "missing/sam.pth"}, "unknown SAM model"),
        ({"model": "vit_b", "variant": "vit_s"}, "unknown SAM variant 'vit_s'"),
        ({"model": "vit_b", "encoder_batch_size": 0}, "encoder_batch_size"),
        ({"model": "vit_b", "dtype": "float16"}, "float16 needs a GPU"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        SamSegmenter(**{"device": "cpu", **kwargs})


def test_unknown_sidecar_field_is_refused(tiny_sam: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_sam, tmp_path / "m.pth")
    (tmp_path / "m.json").write_text(json.dumps({**TINY_SAM, "depth": 3}))
    with pytest.raises(ValueError, match="unknown SAM architecture fields"):
        load_sam(tmp_path / "m.pth")


def test_official_model_offline_without_cache_says_how_to_get_it() -> None:
    segmenter = SamSegmenter("vit_b", device="cpu")
    with pytest.raises(ModelNotAvailableError) as info:
        segmenter.segment([_image(20, 30, 0)], [_boxes(20, 30, 1, 0)])
    assert "'vit_b'" in str(info.value)
    assert SAM_MODELS["vit_b"].url in str(info.value)


@pytest.fixture()
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads allowed; the URLs used below are local file:// URLs, never the network."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def test_download_is_checked_cached_and_reused(
    tiny_sam: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, online
) -> None:
    source = tmp_path / "served" / "sam_tiny_000000.pth"
    source.parent.mkdir()
    shutil.copy(tiny_sam, source)
    entry = SamCheckpoint(source.as_uri(), sha256_of(source), SamArchitecture.from_dict(TINY_SAM))
    monkeypatch.setitem(SAM_MODELS, "tiny", entry)
    cache = tmp_path / "cache"

    first = SamSegmenter("tiny", device="cpu", cache_dir=cache).load()
    assert (cache / source.name).is_file()
    source.unlink()  # the second load must come from the cache
    second = SamSegmenter("tiny", device="cpu", cache_dir=cache).load()
    for (key, a), b in zip(first.sam.state_dict().items(), second.sam.state_dict().values()):
        assert torch.equal(a, b), key


def test_corrupted_download_is_rejected_and_discarded(
    tiny_sam: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, online
) -> None:
    source = tmp_path / "sam_tiny_000000.pth"
    data = bytearray(tiny_sam.read_bytes())
    data[len(data) // 2] ^= 0xFF
    source.write_bytes(bytes(data))
    entry = SamCheckpoint(source.as_uri(), sha256_of(tiny_sam), SamArchitecture.from_dict(TINY_SAM))
    monkeypatch.setitem(SAM_MODELS, "tiny", entry)
    cache = tmp_path / "cache"

    with pytest.raises(ValueError, match="sha256"):
        SamSegmenter("tiny", device="cpu", cache_dir=cache).load()
    assert not cache.exists() or not any(cache.iterdir())


def test_fused_attention_gives_the_reference_embedding_and_masks(tiny_sam: Path) -> None:
    """The fused image-encoder attention equals segment-anything's own code within float
    tolerance, and the masks match."""
    import torch

    from ovperc.stages.sam_attention import fuse_attention
    from ovperc.stages.sam_model import load_sam

    reference, fused = load_sam(tiny_sam), load_sam(tiny_sam)
    assert fuse_attention(fused) == len(fused.image_encoder.blocks)
    x = torch.randn(2, 3, reference.image_encoder.img_size, reference.image_encoder.img_size)
    with torch.inference_mode():
        a, b = reference.image_encoder(x), fused.image_encoder(x)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    boxes = sv.Detections(xyxy=np.array([[4, 4, 40, 30], [20, 10, 60, 44]], dtype=np.float32))
    plain = SamSegmenter(tiny_sam, device="cpu", fused_attention=False).segment([image], [boxes])[0]
    quick = SamSegmenter(tiny_sam, device="cpu").segment([image], [boxes])[0]
    # random tiny weights leave logits near the threshold: allow a pixel in a thousand
    assert (plain.mask != quick.mask).mean() <= 1e-3
