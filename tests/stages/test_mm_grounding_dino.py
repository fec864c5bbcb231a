"""MM Grounding DINO / LLMDet through GroundingDinoDetector: the class comes from config.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ovperc.stages import GroundingDinoDetector

CLASSES = ["person", "car", "traffic light"]


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def detector(tiny_mm_grounding_dino: Path) -> GroundingDinoDetector:
    return GroundingDinoDetector(str(tiny_mm_grounding_dino), device="cpu", box_threshold=0.3,
                                 text_threshold=0.0).load()


def test_loads_the_mm_class_from_config(detector: GroundingDinoDetector) -> None:
    assert type(detector._model).__name__ == "MMGroundingDinoForObjectDetection"


def test_parity_with_transformers_post_processing_score_bias_included(
    detector: GroundingDinoDetector, tiny_mm_grounding_dino: Path
) -> None:
    import torch
    from transformers import AutoProcessor, MMGroundingDinoForObjectDetection

    image = _image(300, 500)
    processor = AutoProcessor.from_pretrained(tiny_mm_grounding_dino)
    model = MMGroundingDinoForObjectDetection.from_pretrained(tiny_mm_grounding_dino).eval()
    assert float(model.class_embed[-1].bias.detach()) == pytest.approx(-0.5)  # the bias is really there
    inputs = processor(images=image, text="person. car. traffic light.", return_tensors="pt",
                       input_data_format="channels_last")
    with torch.inference_mode():
        outputs = model(**inputs)
    reference = processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.3, text_threshold=0.0, target_sizes=[(300, 500)],
    )[0]
    order = np.argsort(-reference["scores"].numpy(), kind="stable")
    ref_boxes = reference["boxes"].numpy()
    ref_boxes[:, 0::2] = ref_boxes[:, 0::2].clip(0, 500)
    ref_boxes[:, 1::2] = ref_boxes[:, 1::2].clip(0, 300)

    dets = detector.detect([image], [CLASSES])[0]
    assert len(dets) == len(order) > 0
    np.testing.assert_allclose(dets.confidence, reference["scores"].numpy()[order], atol=1e-5)
    np.testing.assert_allclose(dets.xyxy, ref_boxes[order], atol=1e-3)

    # class = the best token span, exactly as for Grounding DINO: [CLS] person . car . traffic light .
    probs = outputs.logits.sigmoid()[0]
    probs = probs[probs.max(-1).values > 0.3]
    spans = [(1, 2), (3, 4), (5, 7)]
    expected = torch.stack([probs[:, a:b].max(-1).values for a, b in spans], -1).argmax(-1)
    np.testing.assert_array_equal(dets.class_id, expected.numpy()[order])
    assert list(dets.data["class_name"]) == [CLASSES[i] for i in dets.class_id]


def test_plain_grounding_dino_class_would_drop_the_bias(
    detector: GroundingDinoDetector, tiny_mm_grounding_dino: Path
) -> None:
    """Guard on the bug this fixes: the plain class reads the folder but loses the bias."""
    import torch
    from transformers import GroundingDinoForObjectDetection

    image = _image(200, 260)
    wrong = GroundingDinoForObjectDetection.from_pretrained(tiny_mm_grounding_dino).eval()
    rows = detector._batches([image], [[_chunk()]])[0]
    with torch.inference_mode():
        tokens = detector._processor.tokenizer(["person. car. traffic light."], return_tensors="pt")
        right = detector._model(pixel_values=rows[0][2], **tokens).logits
        plain = wrong(pixel_values=rows[0][2], **tokens).logits
    assert not torch.allclose(right, plain, atol=1e-3)


def _chunk():
    from ovperc.stages.grounding_dino_prompt import PromptChunk

    return PromptChunk("person. car. traffic light.", (0, 1, 2), ((0, 6), (8, 11), (13, 26)))


def test_batched_equals_one_by_one(detector: GroundingDinoDetector) -> None:
    images = [_image(240, 320, 1), _image(240, 320, 2), _image(180, 200, 3)]
    prompts = [CLASSES, ["dog", "cat"], CLASSES[::-1]]
    together = detector.detect(images, prompts)
    for image, image_prompts, batched in zip(images, prompts, together):
        alone = detector.detect([image], [image_prompts])[0]
        np.testing.assert_allclose(batched.xyxy, alone.xyxy, atol=1e-3)
        np.testing.assert_allclose(batched.confidence, alone.confidence, atol=1e-5)
        np.testing.assert_array_equal(batched.class_id, alone.class_id)


def test_other_architectures_are_a_clear_error_naming_their_stage(tiny_owlv2: Path,
                                                                   tiny_omdet: Path) -> None:
    for folder, stage in ((tiny_owlv2, "OwlDetector"), (tiny_omdet, "OmDetTurboDetector")):
        with pytest.raises(ValueError, match=f"not Grounding DINO.*{stage}"):
            GroundingDinoDetector(str(folder), device="cpu").load()
