"""HfSamSegmenter: box-to-mask with tiny transformers SAM-family models of every architecture.

Random weights make arbitrary masks, so every architecture's masks are compared with
transformers' own path on the same folder (processor, one full forward, then
``post_process_masks``); the contracts (shapes, order, fields, one embedding per image,
grouped decodes, architecture from config.json, clear errors) are checked directly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch

from ovperc.hub import ModelNotAvailableError
from ovperc.stages import Segmenter
from ovperc.stages.hf_loading import Licence, model_type
from ovperc.stages.sam_hf import ARCHITECTURES, HfSamSegmenter
from tests.tiny.sam_hf import KINDS, build_tiny_sam_hf


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-sam-hf")
    return {kind: build_tiny_sam_hf(kind, root / kind) for kind in KINDS}


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
        data={"class_name": np.array([f"class{i % 3}" for i in range(count)])},
    )


SCENES = [(_image(120, 160, 1), _boxes(120, 160, 5, 1)), (_image(150, 100, 2), _boxes(150, 100, 5, 2))]


def _reference(
    folder: Path, image: np.ndarray, xyxy: np.ndarray, multimask: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """transformers' own answer: processor, one forward with every box, post_process_masks
    (with ``multimask``, the candidate of best predicted IoU per box)."""
    import transformers

    kind = json.loads((folder / "config.json").read_text())["model_type"]
    model = getattr(transformers, ARCHITECTURES[kind]).from_pretrained(folder).eval()
    processor = transformers.AutoProcessor.from_pretrained(folder)
    inputs = processor(images=image, input_boxes=[xyxy.tolist()], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, multimask_output=multimask)
    sizes = {k: inputs[k] for k in ("original_sizes", "reshaped_input_sizes") if k in inputs}
    [masks] = processor.post_process_masks(out.pred_masks, **sizes)
    best = out.iou_scores[0].argmax(dim=1)
    rows = torch.arange(len(best))
    return masks[rows, best].numpy(), out.iou_scores[0][rows, best].numpy()


@pytest.mark.parametrize("kind", KINDS)
def test_masks_match_transformers_post_processing(folders: dict[str, Path], kind: str) -> None:
    segmenter = HfSamSegmenter(folders[kind], device="cpu")
    assert isinstance(segmenter, Segmenter)
    outs = segmenter.segment([image for image, _ in SCENES], [dets for _, dets in SCENES])
    assert segmenter.architecture == kind
    for (image, dets), out in zip(SCENES, outs):
        masks, scores = _reference(folders[kind], image, dets.xyxy)
        assert masks.any() and not masks.all()  # the comparison is not trivially true
        assert out.mask.dtype == bool and out.mask.shape == (len(dets), *image.shape[:2])
        np.testing.assert_array_equal(out.mask, masks)
        np.testing.assert_allclose(out.data["mask_score"], scores, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(out.xyxy, dets.xyxy)
        np.testing.assert_array_equal(out.class_id, dets.class_id)
        np.testing.assert_array_equal(out.data["class_name"], dets.data["class_name"])
        assert dets.mask is None  # the input is left as it was


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_multimask_keeps_the_best_scored_candidate(folders: dict[str, Path], kind: str) -> None:
    image, dets = SCENES[1]
    [out] = HfSamSegmenter(folders[kind], device="cpu", multimask=True).segment([image], [dets])
    masks, scores = _reference(folders[kind], image, dets.xyxy, multimask=True)
    np.testing.assert_array_equal(out.mask, masks)
    np.testing.assert_allclose(out.data["mask_score"], scores, rtol=1e-4, atol=1e-5)


def test_architecture_comes_from_config_not_the_name(folders: dict[str, Path], tmp_path: Path) -> None:
    misleading = shutil.copytree(folders["sam2"], tmp_path / "sam-hq-vit-base")
    segmenter = HfSamSegmenter(misleading, device="cpu").load()
    assert segmenter.architecture == "sam2"
    assert type(segmenter.model).__name__ == "Sam2Model"


def test_one_embedding_per_image_and_grouped_decodes(folders: dict[str, Path]) -> None:
    segmenter = HfSamSegmenter(folders["sam2"], device="cpu", encoder_batch_size=2, max_boxes_per_call=2)
    encoder_images: list[int] = []
    decoder_boxes: list[int] = []
    model = segmenter.model
    model.vision_encoder.register_forward_hook(lambda _m, args, _o: encoder_images.append(args[0].shape[0]))
    model.prompt_encoder.register_forward_hook(
        lambda _m, _a, kwargs, _o: decoder_boxes.append(kwargs["input_boxes"].shape[1]), with_kwargs=True)
    images = [image for image, _ in SCENES] + [SCENES[0][0]]
    dets = [d for _, d in SCENES] + [sv.Detections.empty()]
    outs = segmenter.segment(images, dets)
    assert encoder_images == [2]  # both images with boxes in one forward; the empty one never
    assert decoder_boxes == [2, 2, 1, 2, 2, 1]
    one_by_one = HfSamSegmenter(folders["sam2"], device="cpu").segment(images, dets)
    assert outs[2].mask.shape == (0, *images[2].shape[:2])
    for together, alone in zip(outs[:2], one_by_one[:2]):
        assert (together.mask == alone.mask).mean() > 0.999
        np.testing.assert_allclose(together.data["mask_score"], alone.data["mask_score"], atol=1e-4)


def test_zero_boxes_give_an_empty_mask_array_without_loading(folders: dict[str, Path]) -> None:
    segmenter = HfSamSegmenter(folders["sam"], device="cpu")
    [out] = segmenter.segment([_image(30, 40, 0)], [sv.Detections.empty()])
    assert out.mask.shape == (0, 30, 40) and out.mask.dtype == bool
    assert segmenter._model is None  # nothing to decode: the model was not loaded


def test_boxes_outside_the_image_are_clipped(folders: dict[str, Path]) -> None:
    image = _image(120, 160, 5)
    inside = sv.Detections(xyxy=np.array([[0.0, 0.0, 160.0, 120.0]]))
    outside = sv.Detections(xyxy=np.array([[-50.0, -20.0, 400.0, 300.0]]))
    segmenter = HfSamSegmenter(folders["sam"], device="cpu")
    [a], [b] = segmenter.segment([image], [inside]), segmenter.segment([image], [outside])
    np.testing.assert_array_equal(a.mask, b.mask)


def test_not_a_sam_model_lists_the_supported_architectures(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"'bert' model.*sam2.*edgetam"):
        HfSamSegmenter(tmp_path, device="cpu").load()


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="max_boxes_per_call must be a positive int, got 0"):
        HfSamSegmenter("x", max_boxes_per_call=0)
    with pytest.raises(TypeError, match="hub id or a folder path"):
        HfSamSegmenter(None)  # type: ignore[arg-type]


def test_gated_repository_says_where_to_ask_and_the_licence(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx2
    import transformers.utils.hub as hf_hub
    from huggingface_hub.errors import GatedRepoError

    def refuse(repo_id: str, *_args, **_kwargs):
        request = httpx2.Request("GET", f"https://huggingface.co/{repo_id}/resolve/main/config.json")
        raise GatedRepoError("403 Forbidden: access to this model is restricted",
                             response=httpx2.Response(403, request=request))

    monkeypatch.setattr(hf_hub, "hf_hub_download", refuse)
    with pytest.raises(ModelNotAvailableError) as caught:
        model_type("facebook/sam3", licence=Licence("SAM License"))
    message = str(caught.value)
    assert "gated" in message
    assert "https://huggingface.co/facebook/sam3" in message
    assert "SAM License, not Apache-2.0" in message


@pytest.mark.parametrize("name", ["sam-hq-vit-b", "sam2.1-tiny", "sam2.1-large", "edgetam", "sam3-tracker"])
def test_registry_names_build_this_segmenter(name: str) -> None:
    from ovperc.registry import build_stage, get_model

    stage = build_stage("segmenter", name, device="cpu")
    assert isinstance(stage, HfSamSegmenter)
    assert stage.model_name == get_model(name).hub_id and stage._model is None  # lazy


@pytest.mark.parametrize("kind", KINDS)
def test_registry_picks_this_segmenter_from_a_folder_model_type(folders: dict[str, Path], kind: str) -> None:
    from ovperc.registry import build_stage

    stage = build_stage("segmenter", str(folders[kind]), device="cpu")
    assert isinstance(stage, HfSamSegmenter)
    image, dets = SCENES[0]
    [out] = stage.segment([image], [dets[:2]])
    assert stage.architecture == kind and out.mask.shape == (2, *image.shape[:2])


def test_cli_segment_takes_a_sam2_folder(folders: dict[str, Path], tmp_path: Path, capsys) -> None:
    """The issue's case: a SAM 2.1 folder given to ``ovperc segment`` (it used to fail with
    'unknown SAM model')."""
    from ovperc.cli import main
    from ovperc.datasets.io import load_dataset
    from tests.datasets.helpers import write_yolo_gt

    boxes = {"a.png": [([10, 10, 50, 50], "cat"), ([60, 60, 100, 100], "dog")], "b.png": []}
    src = write_yolo_gt(tmp_path / "in", boxes)
    code = main(["segment", str(src), "--out", str(tmp_path / "out"), "--segmenter", str(folders["sam2"]),
                 "--device", "cpu", "--no-progress"])
    assert code == 0
    assert "2 images" in capsys.readouterr().out
    written = load_dataset(tmp_path / "out").images()
    assert sorted(written) == ["a.png", "b.png"]
    masked = written["a.png"].detections
    assert masked.mask is not None and masked.mask.shape[0] == 2 and masked.mask.any()
