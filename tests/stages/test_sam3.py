"""Sam3Detector: many classes per image from a tiny SAM 3, one vision pass per image.

Every class's instances are compared with transformers' own single-phrase path on the same
folder (processor with one phrase, one full forward, ``post_process_instance_segmentation``),
so many classes at once must give what one run per class gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch

from ovperc import Pipeline
from ovperc.hub import ModelNotAvailableError
from ovperc.stages import Detector
from ovperc.stages.sam3 import MAX_PROMPT_TOKENS, Sam3Detector
from tests.tiny.sam3 import build_tiny_sam3

PHRASES = ["cat", "red car", "traffic light", "dog"]


@pytest.fixture(scope="module")
def tiny_sam3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sam3(tmp_path_factory.mktemp("tiny-sam3"))


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    wide = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    wide[20:70, 30:90] = (220, 40, 40)
    tall = (rng.random((130, 90, 3)) * 255).astype(np.uint8)
    return [wide, tall]


@pytest.fixture(scope="module")
def reference(tiny_sam3: Path):
    """transformers' answer for one image and one phrase, as (scores, boxes, masks)."""
    from transformers import Sam3Model, Sam3Processor

    model = Sam3Model.from_pretrained(tiny_sam3).eval()
    processor = Sam3Processor.from_pretrained(tiny_sam3)

    def run(image: np.ndarray, phrase: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        inputs = processor(images=image, text=phrase, return_tensors="pt")
        with torch.no_grad():
            outputs = model(**inputs)
        [result] = processor.post_process_instance_segmentation(
            outputs, threshold=0.3, mask_threshold=0.5, target_sizes=[image.shape[:2]])
        return result["scores"].numpy(), result["boxes"].numpy(), result["masks"].numpy().astype(bool)

    return run


def _by_score(scores: np.ndarray, *rest: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    return [scores[order], *(array[order] for array in rest)]


def test_many_classes_equal_one_run_per_class_with_one_vision_pass(
    tiny_sam3: Path, images, reference
) -> None:
    detector = Sam3Detector(tiny_sam3, device="cpu", prompts_per_call=3)
    assert isinstance(detector, Detector)
    vision_passes: list[int] = []
    text_passes: list[int] = []
    model = detector.model
    original = model.get_vision_features

    def counted(*args, **kwargs):
        vision_passes.append(1)
        return original(*args, **kwargs)

    model.get_vision_features = counted
    model.vision_encoder.register_forward_hook(lambda *_: vision_passes.append(0))
    model.text_encoder.register_forward_hook(
        lambda _m, _a, out: text_passes.append(len(out.last_hidden_state)))
    prompts = [PHRASES, PHRASES[::-1][:3]]
    outs = detector.detect(images, prompts)
    # get_vision_features once per image, and the encoder runs only inside it.
    assert vision_passes == [1, 0, 1, 0]
    assert text_passes == [len(PHRASES)]  # every distinct phrase of the batch, once
    kept = 0
    for image, image_prompts, out in zip(images, prompts, outs):
        height, width = image.shape[:2]
        assert out.mask.dtype == bool and out.mask.shape == (len(out), height, width)
        assert np.all(np.diff(out.confidence) <= 0)  # best first
        assert np.all(out.xyxy[:, 0::2] <= width) and np.all(out.xyxy[:, 1::2] <= height)
        for index, phrase in enumerate(image_prompts):
            mine = out.class_id == index
            assert np.all(out.data["class_name"][mine] == phrase)
            assert np.all(out.data["prompt"][mine] == phrase)
            scores, boxes, masks = _by_score(*reference(image, phrase))
            assert 0 < len(scores) < 12  # the threshold keeps some queries, not all
            got_scores, got_boxes, got_masks = _by_score(out.confidence[mine], out.xyxy[mine], out.mask[mine])
            np.testing.assert_allclose(got_scores, scores, atol=1e-5)
            np.testing.assert_allclose(got_boxes, boxes.clip(0, [width, height, width, height]), atol=1e-3)
            assert (got_masks == masks).mean() > 0.999
            assert masks.any() and not masks.all()
            kept += len(scores)
    assert kept == sum(len(out) for out in outs)


def test_prompts_per_call_does_not_change_results(tiny_sam3: Path, images) -> None:
    one = Sam3Detector(tiny_sam3, device="cpu", prompts_per_call=1).detect(images[:1], [PHRASES])[0]
    all_ = Sam3Detector(tiny_sam3, device="cpu", prompts_per_call=8).detect(images[:1], [PHRASES])[0]
    np.testing.assert_array_equal(one.class_id, all_.class_id)
    np.testing.assert_allclose(one.confidence, all_.confidence, atol=1e-5)
    assert (one.mask == all_.mask).mean() > 0.999


def test_long_prompt_is_refused_before_any_image_naming_the_class(tiny_sam3: Path) -> None:
    detector = Sam3Detector(tiny_sam3, device="cpu")
    long_class = " ".join(["traffic light"] * 12)
    detector.check_prompts(["person", "red car"])
    with pytest.raises(ValueError, match=rf"class 'traffic light traffic light.* tokens long.*at most "
                                         rf"{MAX_PROMPT_TOKENS} tokens"):
        detector.check_prompts(["person", long_class])
    with pytest.raises(ValueError, match="shorten it"):
        detector.detect([np.zeros((20, 30, 3), np.uint8)], [["dog", long_class]])
    assert detector._model is None  # refused before the model was loaded


def test_no_prompts_give_empty_masks_without_loading(tiny_sam3: Path) -> None:
    detector = Sam3Detector(tiny_sam3, device="cpu")
    [out] = detector.detect([np.zeros((20, 30, 3), np.uint8)], [[]])
    assert len(out) == 0 and out.mask.shape == (0, 20, 30)
    assert out.class_id.shape == (0,) and out.data["class_name"].shape == (0,)
    assert detector._processor is None and detector._model is None


def test_an_image_without_prompts_among_others(tiny_sam3: Path, images) -> None:
    detector = Sam3Detector(tiny_sam3, device="cpu")
    empty, full = detector.detect(images, [[], ["cat"]])
    assert len(empty) == 0 and empty.mask.shape == (0, *images[0].shape[:2])
    assert len(full) > 0 and set(full.data["class_name"]) == {"cat"}


def test_other_architectures_are_refused(tmp_path: Path) -> None:
    from tests.tiny.sam_hf import build_tiny_sam_hf

    folder = build_tiny_sam_hf("sam", tmp_path / "sam")
    with pytest.raises(ValueError, match=r"'sam' model, not SAM 3"):
        Sam3Detector(folder, device="cpu").load()


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"box_threshold": 1.5}, "box_threshold must be in"),
    ({"mask_threshold": -0.1}, "mask_threshold must be in"),
    ({"prompts_per_call": 0}, "prompts_per_call must be a positive int"),
])
def test_bad_options_are_clear(kwargs: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Sam3Detector("facebook/sam3", device="cpu", **kwargs)


def test_bad_inputs_are_clear(tiny_sam3: Path) -> None:
    detector = Sam3Detector(tiny_sam3, device="cpu")
    with pytest.raises(ValueError, match="2 images but 1 prompt lists"):
        detector.detect([np.zeros((4, 4, 3), np.uint8)] * 2, [["cat"]])
    with pytest.raises(TypeError, match="must be a list of strings"):
        detector.detect([np.zeros((4, 4, 3), np.uint8)], ["cat"])
    with pytest.raises(TypeError, match="uint8"):
        detector.detect([np.zeros((4, 4, 3), np.float32)], [["cat"]])


def test_gated_hub_model_says_where_to_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx2
    import transformers.utils.hub as hf_hub
    from huggingface_hub.errors import GatedRepoError

    def refuse(repo_id: str, *_args, **_kwargs):
        request = httpx2.Request("GET", f"https://huggingface.co/{repo_id}/resolve/main/config.json")
        raise GatedRepoError("403 Forbidden", response=httpx2.Response(403, request=request))

    monkeypatch.setattr(hf_hub, "hf_hub_download", refuse)
    with pytest.raises(ModelNotAvailableError,
                       match=r"gated.*https://huggingface.co/facebook/sam3.*SAM License, not Apache-2.0"):
        Sam3Detector("facebook/sam3", device="cpu").detect([np.zeros((4, 4, 3), np.uint8)], [["cat"]])


def test_detections_feed_supervision(tiny_sam3: Path, images) -> None:
    [out] = Sam3Detector(tiny_sam3, device="cpu").detect(images[:1], [["cat", "dog"]])
    assert isinstance(out, sv.Detections)
    merged = sv.Detections.merge([out, out])
    assert merged.mask.shape[0] == 2 * len(out)


def test_pipeline_keeps_sam3_masks_and_skips_the_segmenter(tiny_sam3: Path, images) -> None:
    from ovperc import Ontology, Pipeline
    from tests.fakes import FakeSegmenter

    segmenter = FakeSegmenter()
    pipe = Pipeline(detector=Sam3Detector(tiny_sam3, device="cpu"), segmenter=segmenter, nms="none")
    ontology = Ontology({"kitty": "cat", "cat": "cat", "red car": "car"})
    [result] = pipe.run_batch(images[:1], classes=ontology)
    [direct] = Sam3Detector(tiny_sam3, device="cpu").detect(images[:1], [ontology.prompts])
    assert segmenter.calls == 0
    dets = result.detections
    assert len(dets) == len(direct) > 0
    np.testing.assert_array_equal(dets.mask, direct.mask)  # SAM 3's own masks, not box fills
    assert set(dets.data["class_name"]) <= {"cat", "car"}
    assert set(dets.data["prompt"]) <= {"kitty", "cat", "red car"}


def test_pipeline_segments_only_the_images_whose_boxes_lack_masks(images) -> None:
    from ovperc import Pipeline
    from tests.fakes import FakeSegmenter

    class Recording(FakeSegmenter):
        def segment(self, images_, detections):
            self.sizes = [image.shape for image in images_]
            return super().segment(images_, detections)

    segmenter = Recording()
    height, width = images[0].shape[:2]
    own = np.zeros((1, height, width), dtype=bool)
    own[0, :5, :5] = True
    given = [
        sv.Detections(xyxy=np.array([[10.0, 10, 50, 50]]), mask=own, class_id=np.array([0]),
                      data={"class_name": np.array(["cat"], dtype=object)}),
        sv.Detections(xyxy=np.array([[10.0, 10, 50, 50]]), class_id=np.array([0]),
                      data={"class_name": np.array(["cat"], dtype=object)}),
    ]
    first, second = Pipeline(segmenter=segmenter).run_batch(images, detections=given)
    assert segmenter.sizes == [images[1].shape]  # only the image without masks
    np.testing.assert_array_equal(first.detections.mask, own)
    assert second.detections.mask[0, 10:50, 10:50].all()


def test_sam3_preset_builds_the_detector_alone(tiny_sam3: Path, images) -> None:
    from ovperc import Pipeline

    hub = Pipeline.from_preset("sam3", device="cpu")
    assert isinstance(hub.detector, Sam3Detector) and hub.detector.model_name == "facebook/sam3"
    assert hub.segmenter is None and hub.classifier is None and hub.tagger is None
    local = Pipeline.from_preset("sam3", detector=str(tiny_sam3), device="cpu")
    assert isinstance(local.detector, Sam3Detector)  # chosen by the folder's model_type
    result = local(images[0], classes=["cat", "dog"])
    assert result.detections.mask is not None
    assert result.detections.mask.shape[1:] == images[0].shape[:2]


def test_label_writes_sam3_masks_without_a_segmenter(tiny_sam3: Path, tmp_path: Path) -> None:
    """`ovperc label --detector <sam3 folder> --masks`: the detector's own masks, no SAM loaded."""
    import argparse

    from PIL import Image

    from ovperc.cli import main
    from ovperc.cli.options import choose_preset
    from ovperc.labeling.runner import label_folder

    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            src / f"im{i}.png")
    args = argparse.Namespace(preset=None, detector=str(tiny_sam3))
    assert choose_preset(args, masks=True, tags=False) == "detect"
    pipe = Pipeline(detector=Sam3Detector(tiny_sam3, device="cpu", box_threshold=0.0))
    report = label_folder(pipe, src, tmp_path / "api", classes="cat, dog", masks=True, format="coco",
                          progress=False)
    assert report.exit_code == 0 and report.images_done == 2
    annotations = json.loads((tmp_path / "api" / "annotations.json").read_text())["annotations"]
    assert annotations and all(a["segmentation"]["size"] == [48, 64] for a in annotations)
    code = main(["label", str(src), "--out", str(tmp_path / "cli"), "--classes", "cat", "--masks",
                 "--detector", str(tiny_sam3), "--device", "cpu", "--no-progress"])
    assert code == 0 and (tmp_path / "cli" / "labels" / "im0.txt").exists()
