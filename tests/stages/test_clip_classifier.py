"""ClipModel and ClipClassifier: a tiny real CLIP for contracts, a fake CLIP for the math."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv
import torch

from ovperc import ModelNotAvailableError, Ontology
from ovperc.stages import ClipClassifier, ClipModel
from ovperc.stages.clip_classifier import apply_mode, square_crop
from ovperc.stages.clip_model import parse_spec
from ovperc.stages.clip_pixels import split_transform
from ovperc.stages.templates import class_embeddings, resolve_templates


def boxes(*rows: tuple[float, float, float, float, float, str]) -> sv.Detections:
    det = sv.Detections(
        xyxy=np.array([r[:4] for r in rows], dtype=np.float32).reshape(-1, 4),
        confidence=np.array([r[4] for r in rows], dtype=np.float32),
        class_id=np.zeros(len(rows), dtype=int),
    )
    det.data["class_name"] = np.array([r[5] for r in rows], dtype=object)
    return det


class FakeClip(ClipModel):
    """Texts embed by keyword; crops embed as 'red' or 'blue' by their mean colour."""

    logit_scale = 100.0
    image_mean = (0.0, 0.0, 0.0)
    embed_dim = 4
    KEYWORDS = {"apple": 0, "ocean": 1, "background": 2, "ball": 3}

    def __init__(self) -> None:  # no model to load
        self.spec = "fake"
        self._cache_key = "fake"
        self.batch_size = 64
        self.text_calls: list[list[str]] = []
        self.image_calls: list[int] = []

    def encode_texts(self, texts, *, batch_size=None):
        self.text_calls.append(list(texts))
        rows = torch.zeros(len(texts), 4)
        for i, text in enumerate(texts):
            for word, axis in self.KEYWORDS.items():
                if word in text:
                    rows[i, axis] = 1.0
            rows[i] += 0.01 * len(text)  # templates change the vector a little
        return torch.nn.functional.normalize(rows, dim=-1)

    def encode_images(self, images, *, batch_size=None):
        self.image_calls.append(len(images))
        rows = torch.zeros(len(images), 4)
        for i, image in enumerate(images):
            r, _, b = np.asarray(image, dtype=float).reshape(-1, 3).mean(axis=0)
            rows[i, 0 if r > b else 1] = 1.0
        return rows


@pytest.fixture
def picture() -> np.ndarray:
    image = np.full((120, 160, 3), 128, dtype=np.uint8)
    image[10:60, 10:60] = (220, 20, 20)  # red square
    image[60:110, 90:150] = (20, 20, 220)  # blue square
    return image


RED, BLUE = (10, 10, 60, 60), (90, 60, 150, 110)


# ---------------------------------------------------------------- the decisions
def test_relabel_takes_clips_class_and_keeps_the_detectors():
    det = boxes((0, 0, 10, 10, 0.9, "ocean"))
    out = apply_mode(det, Ontology(["apple", "ocean"]), np.array([[0.8, 0.2]]), mode="relabel")
    assert out.data["class_name"].tolist() == ["apple"]
    assert out.data["detector_class"].tolist() == ["ocean"]
    assert out.class_id.tolist() == [0]
    assert out.data["clip_score"][0] == pytest.approx(0.8)


def test_rescore_is_the_weighted_geometric_mean_of_the_boxes_own_class():
    det = boxes((0, 0, 10, 10, 0.64, "ocean"), (0, 0, 10, 10, 0.5, "apple"))
    probs = np.array([[0.75, 0.25], [0.75, 0.25]])
    out = apply_mode(det, Ontology(["apple", "ocean"]), probs, mode="rescore")
    assert out.confidence.tolist() == pytest.approx([0.4, np.sqrt(0.5 * 0.75)])
    assert out.data["detector_confidence"].tolist() == pytest.approx([0.64, 0.5])
    assert out.data["class_name"].tolist() == ["ocean", "apple"]  # labels untouched
    weighted = apply_mode(det, Ontology(["apple", "ocean"]), probs, mode="rescore", clip_weight=1.0)
    assert weighted.confidence.tolist() == pytest.approx([0.25, 0.75])


def test_reject_drops_unsure_boxes_and_boxes_won_by_a_negative():
    det = boxes(*[(0, 0, 10, 10, 0.9, "apple")] * 3)
    probs = np.array([
        [0.70, 0.10, 0.20],  # kept
        [0.15, 0.14, 0.71],  # background wins
        [0.19, 0.18, 0.63],  # below threshold and background wins
    ])
    out = apply_mode(det, Ontology(["apple", "ocean"]), probs, mode="reject", reject_threshold=0.2)
    assert len(out) == 1 and out.data["clip_score"].tolist() == pytest.approx([0.7])
    unsure = apply_mode(det[:1], Ontology(["apple", "ocean", "ball"]),
                        np.array([[0.4, 0.3, 0.3]]), mode="reject", reject_threshold=0.5)
    assert len(unsure) == 0


def test_template_and_prompt_embeddings_are_averaged_per_class():
    clip = FakeClip()
    templates = ["a photo of a {}.", "art of the {}."]
    emb = class_embeddings(clip, [["apple"], ["ocean", "ball"]], templates)
    assert clip.text_calls == [[
        "a photo of a apple.", "art of the apple.",
        "a photo of a ocean.", "a photo of a ball.", "art of the ocean.", "art of the ball.",
    ]]
    sentences = clip.encode_texts(clip.text_calls[0])
    expected = torch.nn.functional.normalize(sentences[2:].mean(dim=0), dim=0)
    assert torch.allclose(emb[1], expected)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize(("templates", "expected", "error"), [
    (None, 7, None),
    ("openai", 80, None),
    ("photo", 3, None),
    (["This is a photo of a {}."], 1, None),
    ("This is a {}.", None, ValueError),
    (["no slot"], None, ValueError),
    ([], None, ValueError),
    ("nonsense", None, ValueError),
])
def test_templates(templates, expected, error):
    if error:
        with pytest.raises(error):
            resolve_templates(templates)
    else:
        assert len(resolve_templates(templates)) == expected


# ---------------------------------------------------------------- the stage, with a fake CLIP
def test_classify_uses_each_images_ontology_and_one_crop_pass(picture):
    clip = FakeClip()
    clf = ClipClassifier(clip, mode="relabel", templates=["a photo of a {}."])
    dets = [boxes((*RED, 0.9, "ocean"), (*BLUE, 0.8, "ocean")), boxes((*BLUE, 0.7, "apple"))]
    ontologies = [Ontology(["apple", "ocean"]), Ontology({"sea": "ocean", "apple": "apple"})]
    out = clf.classify([picture, picture], dets, ontologies)
    assert clip.image_calls == [3]  # all boxes of the batch in one pass
    assert out[0].data["clip_class"].tolist() == ["apple", "ocean"]
    assert out[0].data["class_name"].tolist() == ["apple", "ocean"]
    assert out[1].data["clip_class"].tolist() == ["ocean"]
    assert all(0.0 <= s <= 1.0 for d in out for s in d.data["clip_score"])
    assert len(dets[0]) == 2 and dets[0].data["class_name"][0] == "ocean"  # input untouched


def test_text_embeddings_are_computed_once_per_class(picture):
    clip = FakeClip()
    clf = ClipClassifier(clip, templates=["a photo of a {}.", "art of the {}."])
    onto = Ontology(["apple", "ocean"])
    clf.classify([picture], [boxes((*RED, 0.9, "apple"))], [onto])
    clf.classify([picture], [boxes((*BLUE, 0.9, "ocean"))], [onto])
    clf.classify_image(picture, onto)
    assert len(clip.text_calls) == 1 and len(clip.text_calls[0]) == 4
    clf.classify([picture], [boxes((*RED, 0.9, "apple"))], [onto.extend(["ball"])])
    assert clip.text_calls[1] == ["a photo of a ball.", "art of the ball."]  # only the new class


def test_negatives_reject_background_boxes(picture):
    clip = FakeClip()
    clip.KEYWORDS = {"apple": 0, "ball": 3, "background": 1}  # blue regions look like background
    clf = ClipClassifier(clip, mode="reject", negatives=["background"], templates="single")
    [out] = clf.classify([picture], [boxes((*RED, 0.9, "apple"), (*BLUE, 0.9, "apple"))],
                         Ontology(["apple", "ball"]))
    assert out.xyxy.tolist() == [list(map(float, RED))]
    assert out.data["clip_class"].tolist() == ["apple"]


def test_no_boxes_gives_empty_fields_without_running_clip(picture):
    clip = FakeClip()
    [out] = ClipClassifier(clip).classify([picture], [boxes()], [Ontology(["apple"])])
    assert len(out) == 0 and out.data["clip_class"].tolist() == []
    assert clip.image_calls == [] and clip.text_calls == []


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"mode": "vote"}, ValueError),
    ({"reject_threshold": 1.5}, ValueError),
    ({"clip_weight": -0.1}, ValueError),
    ({"padding": -1}, ValueError),
    ({"negatives": "background"}, TypeError),
    ({"model": 3}, TypeError),
])
def test_bad_options_are_clear_errors(kwargs, error):
    kwargs = {"model": FakeClip(), **kwargs}
    with pytest.raises(error):
        ClipClassifier(**kwargs)


def test_square_crop_adds_context_and_keeps_the_whole_box():
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[40:60, 50:150] = 255
    crop = square_crop(image, np.array([50, 40, 150, 60]), 0.1, (1, 2, 3))
    assert crop.shape == (120, 120, 3)  # 100 + 2*10 wide (20 + 2*2 tall), padded square
    assert (crop[:, :, 0] == 255).sum() == 100 * 20
    assert tuple(crop[0, 0]) == (1, 2, 3)
    edge = square_crop(image, np.array([190, 95, 260, 130]), 0.0, (0, 0, 0))
    assert edge.shape[:2] == (10, 10)  # clipped to the image


# ---------------------------------------------------------------- a tiny real CLIP
def test_tiny_clip_through_the_public_constructor(tiny_clip, picture):
    clf = ClipClassifier(tiny_clip, device="cpu", mode="rescore")
    det = boxes((*RED, 0.9, "apple"), (*BLUE, 0.5, "ocean"))
    [out] = clf.classify([picture], [det], [Ontology(["apple", "ocean", "ball"])])
    assert len(out) == 2
    assert set(out.data["clip_class"]) <= {"apple", "ocean", "ball"}
    assert np.all((out.confidence >= 0) & (out.confidence <= 1))
    ranked = clf.classify_image(picture, ["apple", "ocean"])
    assert [name for name, _ in ranked] in (["apple", "ocean"], ["ocean", "apple"])
    assert sum(p for _, p in ranked) == pytest.approx(1.0, abs=1e-5)
    assert ranked[0][1] >= ranked[1][1]


def test_tiny_clip_batched_equals_one_by_one_and_uses_one_image_pass(tiny_clip, picture):
    clf = ClipClassifier(tiny_clip, device="cpu", mode="relabel", batch_size=64)
    onto = Ontology(["apple", "ocean", "ball"])
    other = np.ascontiguousarray(picture[::-1])
    dets = [boxes((*RED, 0.9, "apple"), (*BLUE, 0.5, "ocean")), boxes((*BLUE, 0.7, "ball"))]
    calls = []
    visual = clf.clip.model.visual
    hook = visual.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    try:
        together = clf.classify([picture, other], dets, [onto, onto])
    finally:
        hook.remove()
    assert calls == [3]
    alone = [clf.classify([img], [d], [onto])[0] for img, d in zip([picture, other], dets)]
    for a, b in zip(together, alone):
        assert a.data["clip_class"].tolist() == b.data["clip_class"].tolist()
        assert np.allclose(a.data["clip_score"], b.data["clip_score"], atol=1e-5)


def test_batched_preprocessing_equals_open_clips_transform(tiny_clip, picture):
    """To-tensor and normalise run once per batch; the pixels must be open_clip's own."""
    from PIL import Image
    from torchvision.transforms import Compose, Lambda

    clip = ClipModel(tiny_clip, device="cpu").load()
    crops = [Image.fromarray(picture[y:y + h, x:x + w])
             for x, y, w, h in [(0, 0, 40, 30), (10, 5, 7, 50), (30, 20, 64, 64), (0, 0, 1, 1)]]
    assert split_transform(clip._preprocess) is not None  # the batched path is the one taken
    expected = torch.stack([clip._preprocess(crop) for crop in crops])
    assert torch.equal(clip._pixels(crops), expected)
    # Any other transform keeps running image by image, untouched.
    clip._preprocess = Compose([clip._preprocess, Lambda(lambda t: t * 2)])
    assert torch.equal(clip._pixels(crops), expected * 2)


def test_trimmed_text_encoding_equals_open_clip(tiny_clip):
    clip = ClipModel(tiny_clip, device="cpu", batch_size=2)
    texts = ["a photo of a dog.", "cat", "a long sentence about a red fire truck near a house"]
    ours = clip.encode_texts(texts)
    with torch.inference_mode():
        ref = clip.model.encode_text(clip._tokenizer(texts))
    assert torch.allclose(ours, torch.nn.functional.normalize(ref, dim=-1), atol=1e-5)


def test_model_spec_forms(tiny_clip, tmp_path):
    assert parse_spec("ViT-B-32:laion2b_s34b_b79k").kind == "pretrained"
    assert parse_spec("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K").kind == "hub"
    assert parse_spec(tiny_clip).kind == "folder"
    assert parse_spec("local-dir:" + tiny_clip).kind == "folder"
    ckpt = tmp_path / "weights.safetensors"
    ckpt.write_bytes(b"x")
    source = parse_spec(f"ViT-B-32:{ckpt}")
    assert (source.kind, source.name, source.pretrained) == ("checkpoint", "ViT-B-32", str(ckpt))
    for bad in ("ViT-B-32", "", str(ckpt), str(tmp_path), "hf-hub:"):
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_unknown_names_and_offline_downloads_are_clear_errors():
    with pytest.raises(ValueError, match="list_models"):
        ClipModel("ViT-Nope:laion2b", device="cpu").load()
    with pytest.raises(ValueError, match="laion2b_s34b_b79k"):
        ClipModel("ViT-B-32:no-such-tag", device="cpu").load()
    with pytest.raises(ModelNotAvailableError, match="ViT-B-32:laion2b_s34b_b79k.*hf download"):
        ClipModel("ViT-B-32:laion2b_s34b_b79k", device="cpu").load()


def test_cache_key_follows_the_weights(tiny_clip, tmp_path):
    from tests.tiny.clip import build_tiny_clip

    spec = build_tiny_clip(tmp_path / "copy")
    before = ClipModel(spec).cache_key
    assert ClipModel(spec).cache_key == before
    build_tiny_clip(tmp_path / "copy", seed=1)
    assert ClipModel(spec).cache_key != before
    assert ClipModel("ViT-B-32:openai").cache_key != ClipModel("ViT-B-32:laion2b_s34b_b79k").cache_key
