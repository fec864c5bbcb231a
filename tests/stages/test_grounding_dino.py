"""GroundingDinoDetector on a tiny random Grounding DINO saved in the transformers format."""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import numpy as np
import pytest

from ovperc.hub import ModelNotAvailableError
from ovperc.stages import Detector, GroundingDinoDetector
from ovperc.stages.grounding_dino_prompt import build_chunks, class_text, token_spans

CLASSES = ["person", "car", "traffic light"]
COLORS = ["red", "green", "blue", "yellow", "orange", "purple", "black", "white", "gray", "brown"]
NOUNS = ["car", "dog", "cat", "bus", "truck", "bird", "horse", "chair", "cup", "bottle", "boat",
         "kite"]
#: 120 two-word classes: 3 tokens each with their ".", 362 tokens in one caption.
MANY = [f"{color} {noun}" for color in COLORS for noun in NOUNS]


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _with(detector: GroundingDinoDetector, **thresholds: float) -> GroundingDinoDetector:
    """The same loaded model with other thresholds."""
    other = copy.copy(detector)
    for name, value in thresholds.items():
        setattr(other, name, value)
    return other


@pytest.fixture(scope="module")
def detector(tiny_grounding_dino: Path) -> GroundingDinoDetector:
    return GroundingDinoDetector(str(tiny_grounding_dino), device="cpu").load()


@pytest.fixture(scope="module")
def tokenizer(detector: GroundingDinoDetector):
    return detector._processor.tokenizer


def _assert_valid(dets, prompts: list[str], height: int, width: int) -> None:
    n = len(dets)
    assert dets.xyxy.shape == (n, 4)
    assert dets.confidence.dtype == np.float32 and dets.confidence.shape == (n,)
    assert dets.class_id.shape == (n,)
    assert set(dets.data) >= {"prompt", "class_name"}
    if n:
        assert (dets.class_id >= 0).all() and (dets.class_id < len(prompts)).all()
        assert list(dets.data["prompt"]) == [prompts[i] for i in dets.class_id]
        assert list(dets.data["class_name"]) == list(dets.data["prompt"])
        assert (dets.xyxy[:, [0, 2]] >= 0).all() and (dets.xyxy[:, [0, 2]] <= width).all()
        assert (dets.xyxy[:, [1, 3]] >= 0).all() and (dets.xyxy[:, [1, 3]] <= height).all()
        assert (dets.xyxy[:, 2] >= dets.xyxy[:, 0]).all()
        assert (np.diff(dets.confidence) <= 0).all(), "sorted best first"


def test_is_a_detector_and_lazy(tmp_path: Path) -> None:
    detector = GroundingDinoDetector(str(tmp_path / "not-built-yet"))
    assert isinstance(detector, Detector)
    assert detector._model is None  # nothing loads before the first detect


def test_parity_with_transformers_post_processing(
    detector: GroundingDinoDetector, tiny_grounding_dino: Path
) -> None:
    import torch
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    image = _image(300, 500)  # not square: x and y scales differ
    processor = AutoProcessor.from_pretrained(tiny_grounding_dino)
    model = GroundingDinoForObjectDetection.from_pretrained(tiny_grounding_dino).eval()
    inputs = processor(images=image, text="person. car. traffic light.", return_tensors="pt",
                       input_data_format="channels_last")
    with torch.inference_mode():
        outputs = model(**inputs)
    reference = processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.5, text_threshold=0.25,
        target_sizes=[(300, 500)],
    )[0]
    ref_boxes = reference["boxes"].numpy()
    ref_boxes[:, 0::2] = ref_boxes[:, 0::2].clip(0, 500)
    ref_boxes[:, 1::2] = ref_boxes[:, 1::2].clip(0, 300)
    ref_order = np.argsort(-reference["scores"].numpy(), kind="stable")

    dets = _with(detector, box_threshold=0.5, text_threshold=0.0).detect([image], [CLASSES])[0]
    assert len(dets) == len(ref_order) > 0
    np.testing.assert_allclose(dets.confidence, reference["scores"].numpy()[ref_order], atol=1e-5)
    np.testing.assert_allclose(dets.xyxy, ref_boxes[ref_order], atol=1e-3)

    # class = the best token span: [CLS] person . car . traffic light . [SEP]
    probs = outputs.logits.sigmoid()[0][outputs.logits.sigmoid()[0].max(-1).values > 0.5]
    spans = [(1, 2), (3, 4), (5, 7)]
    expected = torch.stack([probs[:, a:b].max(-1).values for a, b in spans], -1).argmax(-1)
    np.testing.assert_array_equal(dets.class_id, expected.numpy()[ref_order])


def test_boxes_in_pixels_for_non_square_images(detector: GroundingDinoDetector) -> None:
    loose = _with(detector, box_threshold=0.0, text_threshold=0.0)
    for height, width in [(120, 400), (400, 90), (37, 53)]:
        dets = loose.detect([_image(height, width)], [CLASSES])[0]
        assert len(dets) == 30  # every query of the tiny model is kept at threshold 0
        _assert_valid(dets, CLASSES, height, width)
        # boxes spread over the whole image, not over a resized or square frame
        assert dets.xyxy[:, 2].max() > 0.5 * width and dets.xyxy[:, 3].max() > 0.5 * height


def test_deterministic(detector: GroundingDinoDetector) -> None:
    image = _image(240, 320)
    first = detector.detect([image], [CLASSES])[0]
    second = detector.detect([image], [CLASSES])[0]
    assert len(first) > 0
    np.testing.assert_array_equal(first.xyxy, second.xyxy)
    np.testing.assert_array_equal(first.confidence, second.confidence)
    np.testing.assert_array_equal(first.class_id, second.class_id)


def test_batched_equals_one_by_one(detector: GroundingDinoDetector) -> None:
    images = [_image(240, 320, 1), _image(240, 320, 2), _image(150, 100, 3), _image(300, 400, 4)]
    prompts = [CLASSES, ["dog"], ["cat", "red circle"], ["bicycle", "dog", "person", "car"]]
    loose = _with(detector, box_threshold=0.3, text_threshold=0.3)
    batched = loose.detect(images, prompts)
    single = [loose.detect([image], [p])[0] for image, p in zip(images, prompts)]
    for got, want, image, p in zip(batched, single, images, prompts):
        _assert_valid(got, p, *image.shape[:2])
        assert len(got) == len(want) > 0
        np.testing.assert_allclose(got.xyxy, want.xyxy, atol=1e-4)
        np.testing.assert_allclose(got.confidence, want.confidence, atol=1e-4)
        np.testing.assert_array_equal(got.class_id, want.class_id)


def test_text_threshold_drops_instead_of_falling_back(detector: GroundingDinoDetector) -> None:
    image = _image(240, 320)
    every = _with(detector, box_threshold=0.3, text_threshold=0.0).detect([image], [CLASSES])[0]
    strict = _with(detector, box_threshold=0.3, text_threshold=0.8).detect([image], [CLASSES])[0]
    keep = every.data["text_score"] >= 0.8
    assert 0 < keep.sum() < len(every)
    np.testing.assert_array_equal(strict.xyxy, every.xyxy[keep])
    np.testing.assert_array_equal(strict.class_id, every.class_id[keep])
    nothing = _with(detector, box_threshold=0.3, text_threshold=1.0).detect([image], [CLASSES])[0]
    assert len(nothing) == 0


def test_box_threshold_is_the_max_token_probability(detector: GroundingDinoDetector) -> None:
    image = _image(240, 320)
    dets = _with(detector, box_threshold=0.8, text_threshold=0.0).detect([image], [CLASSES])[0]
    assert len(dets) > 0 and (dets.confidence > 0.8).all()
    assert (dets.data["text_score"] <= dets.confidence + 1e-6).all()


def test_empty_prompts_give_empty_detections(detector: GroundingDinoDetector) -> None:
    results = detector.detect([_image(64, 64), _image(64, 64, 1)], [[], ["dog"]])
    empty = results[0]
    assert len(empty) == 0
    assert empty.class_id.shape == (0,) and empty.confidence.shape == (0,)
    assert {"prompt", "class_name"} <= set(empty.data)
    assert detector.detect([], []) == []


def test_duplicates_blanks_and_odd_whitespace(detector: GroundingDinoDetector) -> None:
    prompts = ["dog", " Dog ", "", "   ", "traffic   light", "cat.", "..."]
    dets = _with(detector, box_threshold=0.0, text_threshold=0.0).detect(
        [_image(100, 120)], [prompts]
    )[0]
    _assert_valid(dets, prompts, 100, 120)
    assert set(dets.class_id) <= {0, 4, 5}  # first occurrence of each distinct class
    assert len(dets) == 30


def test_tiny_and_one_pixel_images(detector: GroundingDinoDetector) -> None:
    loose = _with(detector, box_threshold=0.0, text_threshold=0.0)
    for height, width in [(1, 1), (1, 7), (5, 1)]:
        dets = loose.detect([_image(height, width)], [["dog"]])[0]
        _assert_valid(dets, ["dog"], height, width)


def test_more_than_256_tokens_are_chunked_not_dropped(
    detector: GroundingDinoDetector, tokenizer
) -> None:
    chunks = build_chunks(MANY, tokenizer, 256)
    assert len(chunks) == 2
    assert sorted(i for chunk in chunks for i in chunk.prompt_ids) == list(range(len(MANY)))
    for chunk in chunks:
        assert len(tokenizer(chunk.text)["input_ids"]) <= 256

    image = _image(120, 160)
    loose = _with(detector, box_threshold=0.0, text_threshold=0.0)
    dets = loose.detect([image], [MANY])[0]
    _assert_valid(dets, MANY, 120, 160)
    assert len(dets) == 2 * 30  # every query of both passes
    late = set(chunks[1].prompt_ids)
    assert late & set(dets.class_id.tolist()), "classes of the last caption are detected"

    # the last caption's boxes are exactly what a run on its classes alone gives
    alone_prompts = [MANY[i] for i in chunks[1].prompt_ids]
    alone = loose.detect([image], [alone_prompts])[0]
    from_late = np.isin(dets.class_id, list(late))
    assert from_late.sum() == len(alone) == 30
    np.testing.assert_allclose(dets.confidence[from_late], alone.confidence, atol=1e-4)
    np.testing.assert_allclose(dets.xyxy[from_late], alone.xyxy, atol=1e-3)
    assert list(dets.data["prompt"][from_late]) == list(alone.data["prompt"])


def test_small_text_limit_chunks_and_rejects_overlong_class(
    tiny_grounding_dino: Path, detector: GroundingDinoDetector
) -> None:
    small = copy.copy(detector)
    small.max_text_tokens = 6  # [CLS] + two one-word classes with "." + [SEP]
    prompts = ["person", "car", "dog", "cat", "bicycle"]
    assert len(build_chunks(prompts, small._processor.tokenizer, 6)) == 3
    dets = _with(small, box_threshold=0.0, text_threshold=0.0).detect([_image(64, 80)], [prompts])[0]
    assert len(dets) == 3 * 30 and set(dets.class_id) <= set(range(5))
    assert 4 in set(dets.class_id.tolist())
    with pytest.raises(ValueError, match="tokens"):
        small.detect([_image(64, 80)], [["big red traffic light"]])


def test_token_spans_follow_the_offsets(tokenizer) -> None:
    chunk = build_chunks(["Person", "traffic light", "zebras"], tokenizer, 256)[0]
    assert chunk.text == "person. traffic light. zebras."
    encoded = tokenizer(chunk.text, return_offsets_mapping=True)
    spans = token_spans(encoded["offset_mapping"], chunk.char_spans)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert [tokens[a:b] for a, b in spans] == [["person"], ["traffic", "light"], ["zebra", "##s"]]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Dog", "dog"), ("  traffic\tLight ", "traffic light"), ("st. bernard", "st bernard"),
     ("what?", "what"), ("...", "")],
)
def test_class_text(raw: str, expected: str) -> None:
    assert class_text(raw) == expected


@pytest.mark.parametrize(
    ("images", "prompts", "error"),
    [
        ([np.zeros((8, 8, 3), np.uint8)], [], ValueError),
        ([np.zeros((8, 8), np.uint8)], [["dog"]], ValueError),
        ([np.zeros((8, 8, 4), np.uint8)], [["dog"]], ValueError),
        ([np.zeros((8, 8, 3), np.float32)], [["dog"]], TypeError),
        (["image.jpg"], [["dog"]], TypeError),
        ([np.zeros((8, 8, 3), np.uint8)], ["dog, cat"], TypeError),
        ([np.zeros((8, 8, 3), np.uint8)], [["dog", 3]], TypeError),
    ],
)
def test_bad_inputs(detector: GroundingDinoDetector, images, prompts, error) -> None:
    with pytest.raises(error):
        detector.detect(images, prompts)


@pytest.mark.parametrize(
    "kwargs",
    [{"box_threshold": 1.5}, {"text_threshold": -0.1}, {"max_text_tokens": 2}, {"batch_size": 0}],
)
def test_bad_options(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        GroundingDinoDetector("x", **kwargs)


def test_half_precision_on_cpu_is_refused(tiny_grounding_dino: Path) -> None:
    detector = GroundingDinoDetector(str(tiny_grounding_dino), device="cpu", dtype="float16")
    with pytest.raises(ValueError, match="float16"):
        detector.detect([_image(32, 32)], [["dog"]])


def test_half_precision_on_cuda(tiny_grounding_dino: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    image = _image(240, 320)
    full = GroundingDinoDetector(str(tiny_grounding_dino), device="cuda", box_threshold=0.5,
                                 text_threshold=0.0).detect([image], [CLASSES])[0]
    half = GroundingDinoDetector(str(tiny_grounding_dino), device="cuda", dtype="float16",
                                 box_threshold=0.5, text_threshold=0.0).detect([image], [CLASSES])[0]
    assert half.confidence.dtype == np.float32
    assert abs(len(half) - len(full)) <= 3
    _assert_valid(half, CLASSES, 240, 320)


def test_offline_hub_id_not_in_cache(tmp_path: Path) -> None:
    detector = GroundingDinoDetector("ovperc-tests/no-such-grounding-dino", cache_dir=str(tmp_path))
    with pytest.raises(ModelNotAvailableError, match="no-such-grounding-dino"):
        detector.detect([_image(32, 32)], [["dog"]])


def test_loads_once_across_threads(tiny_grounding_dino: Path, monkeypatch) -> None:
    import transformers

    calls = []
    original = transformers.GroundingDinoForObjectDetection.from_pretrained

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.GroundingDinoForObjectDetection, "from_pretrained", counting)
    detector = GroundingDinoDetector(str(tiny_grounding_dino), device="cpu")
    image = _image(64, 64)
    results: list = [None] * 3

    def run(slot: int) -> None:
        results[slot] = detector.detect([image], [CLASSES])[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    for other in results[1:]:
        np.testing.assert_array_equal(other.xyxy, results[0].xyxy)
