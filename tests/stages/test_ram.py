"""RAM / RAM++ tagger: parity with the official code, loading, vocabularies, open-set tags.

The parity fixtures in ``../shared/fixtures/ram`` were made with the official
recognize-anything code on tiny random models (see their README); tests that need them
skip when that folder is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED

torch = pytest.importorskip("torch")

from ovperc.hub import ModelNotAvailableError  # noqa: E402
from ovperc.stages.ram import RamTagger, assets, preprocess  # noqa: E402
from ovperc.stages.ram.checkpoint import SLIM_FORMAT, load_tagging_weights  # noqa: E402
from ovperc.stages.ram.model import RamConfig, RamModel, build_model, init_buffers  # noqa: E402
from ovperc.stages.ram.remap import remap_key, remap_state_dict  # noqa: E402

FIXTURES = SHARED / "fixtures" / "ram"
VARIANTS = ["ram_plus", "ram"]
TOL = 1e-4


def _fixture_path(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"RAM parity fixture {path} is absent (it lives in ../shared, outside the repo)")
    return path


@pytest.fixture(scope="module", params=VARIANTS)
def fx(request: pytest.FixtureRequest) -> dict:
    data = torch.load(_fixture_path(f"{request.param}_tiny_parity.pt"), weights_only=True)
    data["variant"] = request.param
    return data


@pytest.fixture(scope="module")
def official_pth(fx: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's state dict saved as the official training scripts save it."""
    path = tmp_path_factory.mktemp(fx["variant"]) / f"{fx['variant']}_tiny.pth"
    torch.save({"model": fx["state_dict"], "epoch": 0}, path)
    return path


@pytest.fixture(scope="module")
def loaded(fx: dict, official_pth: Path) -> RamTagger:
    """A tagger on the official-format file, loaded once per variant."""
    return _tagger(fx, official_pth).load()


@pytest.fixture(scope="module")
def probs(fx: dict, loaded: RamTagger) -> np.ndarray:
    """Its scores on the fixture's raw images."""
    return loaded.probabilities(_raw_images(fx))


def _raw_images(fx: dict) -> list[np.ndarray]:
    return [image.numpy() for image in fx["inputs"]["raw_images"]]


def _tagger(fx: dict, path: Path, **kwargs) -> RamTagger:
    kwargs.setdefault("tag_list", list(fx["tag_list"]))
    kwargs.setdefault("thresholds", fx["class_threshold"].tolist())
    return RamTagger(path, variant=fx["variant"], device="cpu", **kwargs)


def _official_tag_string(names: list[str], fired: np.ndarray) -> str:
    return " | ".join(name for name, hit in zip(names, fired) if hit)


# ---------------------------------------------------------------- parity with the official code
def test_remapped_official_state_dict_reproduces_official_logits(fx: dict) -> None:
    state = remap_state_dict(fx["state_dict"])
    config = RamConfig.from_state_dict(state, num_classes=len(fx["tag_list"]))
    assert config.variant == fx["variant"]
    model = RamModel(config)
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.inference_mode():
        raw = model(fx["inputs"]["pixel_values"])
    assert (raw - fx["expected_raw_logits"]).abs().max().item() < TOL
    probs = raw.sigmoid()
    assert (probs - fx["expected_logits"]).abs().max().item() < TOL
    fired = (probs > fx["class_threshold"]).numpy()
    tags = [_official_tag_string(fx["tag_list"], row) for row in fired]
    assert tags == fx["expected_tags"]
    assert [np.flatnonzero(row).tolist() for row in fired] == fx["expected_tag_indices"]


def test_preprocess_matches_official_transform(fx: dict) -> None:
    pixels = preprocess(_raw_images(fx))
    np.testing.assert_allclose(pixels, fx["inputs"]["pixel_values"].numpy(), rtol=0, atol=1e-6)


def test_tagger_from_official_checkpoint_file(
    fx: dict, loaded: RamTagger, probs: np.ndarray
) -> None:
    np.testing.assert_allclose(probs, fx["expected_logits"].numpy(), rtol=0, atol=TOL)
    tags = loaded.tag(_raw_images(fx))
    for image_tags, expected, row in zip(tags, fx["expected_tags"], probs):
        assert sorted(t.name for t in image_tags) == sorted(expected.split(" | "))
        scores = [t.score for t in image_tags]
        assert scores == sorted(scores, reverse=True)
        assert scores == pytest.approx([row[fx["tag_list"].index(t.name)] for t in image_tags])


def test_legacy_vision_multi_prefix_loads_the_same(fx: dict) -> None:
    legacy = {
        k.replace("tagging_head.", "vision_multi.", 1): v for k, v in fx["state_dict"].items()
    }
    assert remap_state_dict(legacy).keys() == remap_state_dict(fx["state_dict"]).keys()


def test_only_tagging_weights_are_kept(fx: dict, official_pth: Path) -> None:
    weights = load_tagging_weights(official_pth)
    assert weights.variant == fx["variant"]
    assert not any(k.startswith(("tag_encoder.", "text_decoder.")) for k in weights.state_dict)
    assert not any(k.endswith(("relative_position_index", "attn_mask")) for k in weights.state_dict)


# ---------------------------------------------------------------- full-size architecture
@pytest.mark.parametrize("variant", VARIANTS)
def test_full_size_model_matches_official_key_list(variant: str) -> None:
    official = json.loads(_fixture_path(f"{variant}_full_keys.json").read_text())
    expected = {}
    for key, shape, dtype in official:
        new = remap_key(key)
        if new is not None:
            expected[new] = (tuple(shape), dtype)
    with torch.device("meta"):
        model = RamModel(RamConfig(variant=variant))
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    assert ours == expected
    meta_state = model.state_dict()
    assert RamConfig.from_state_dict(meta_state, num_classes=assets.NUM_OFFICIAL_TAGS) == RamConfig(
        variant=variant
    )


# ---------------------------------------------------------------- checkpoints and conversion
def test_slim_safetensors_round_trip(
    fx: dict, official_pth: Path, probs: np.ndarray, tmp_path: Path
) -> None:
    from safetensors import safe_open

    out = RamTagger.convert(
        official_pth,
        tmp_path / "slim.safetensors",
        tag_list=list(fx["tag_list"]),
        thresholds=fx["class_threshold"].tolist(),
    )
    with safe_open(str(out), framework="pt") as handle:
        keys = set(handle.keys())
        metadata = handle.metadata()
    assert metadata["format"] == SLIM_FORMAT and metadata["variant"] == fx["variant"]
    assert keys == set(remap_state_dict(fx["state_dict"]))
    # The slim file carries its vocabulary: no tag list or thresholds needed (and none
    # downloadable here, since tests run offline).
    slim = RamTagger(out, variant=fx["variant"], device="cpu")
    assert slim.tag_names == list(fx["tag_list"])
    np.testing.assert_array_equal(slim.class_thresholds, fx["class_threshold"].numpy())
    np.testing.assert_array_equal(slim.probabilities(_raw_images(fx)), probs)


def test_half_precision_conversion_stays_close(fx: dict, official_pth: Path, tmp_path: Path) -> None:
    out = RamTagger.convert(
        official_pth,
        tmp_path / "half.safetensors",
        tag_list=list(fx["tag_list"]),
        thresholds=fx["class_threshold"].tolist(),
        dtype="float16",
    )
    assert out.stat().st_size < official_pth.stat().st_size
    probs = RamTagger(out, variant=fx["variant"], device="cpu").probabilities(_raw_images(fx))
    np.testing.assert_allclose(probs, fx["expected_logits"].numpy(), atol=2e-2)


def test_wrong_variant_is_refused(fx: dict, official_pth: Path) -> None:
    other = "ram" if fx["variant"] == "ram_plus" else "ram_plus"
    tagger = RamTagger(official_pth, variant=other, tag_list=list(fx["tag_list"]), device="cpu")
    with pytest.raises(ValueError, match=f"variant='{fx['variant']}'"):
        tagger.load()


def test_tag_list_that_does_not_fit_the_checkpoint(fx: dict, official_pth: Path) -> None:
    tagger = _tagger(fx, official_pth, tag_list=list(fx["tag_list"])[:-1], thresholds=None)
    with pytest.raises(ValueError, match="does not fit a tag list of 19 tags"):
        tagger.load()


def test_missing_local_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a file"):
        RamTagger(tmp_path / "nope.pth").load()


@pytest.mark.parametrize("variant", VARIANTS)
def test_release_download_offline_raises_clear_error(variant: str, tmp_path: Path) -> None:
    release = assets.CHECKPOINTS[variant]
    tagger = RamTagger(variant=variant, cache_dir=tmp_path, device="cpu")
    with pytest.raises(ModelNotAvailableError, match=release.filename):
        tagger.load()


def test_meta_build_then_assign_equals_plain_build(fx: dict) -> None:
    state = remap_state_dict(fx["state_dict"])
    config = RamConfig.from_state_dict(state, num_classes=len(fx["tag_list"]))
    lazy = build_model(config, empty=True)
    lazy.load_state_dict(state, strict=True, assign=True)
    init_buffers(lazy)
    plain = RamModel(config)
    plain.load_state_dict(state, strict=True)
    for (name, a), (_, b) in zip(lazy.named_buffers(), plain.named_buffers()):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------- thresholds and top-k
def test_threshold_and_top_k(
    fx: dict, official_pth: Path, loaded: RamTagger, probs: np.ndarray
) -> None:
    image = _raw_images(fx)[0]
    best = _tagger(fx, official_pth, threshold=0.0, top_k=3).tag([image])[0]
    order = np.argsort(-probs[0], kind="stable")[:3]
    assert [t.name for t in best] == [fx["tag_list"][i] for i in order]
    assert [t.score for t in best] == pytest.approx(probs[0, order].tolist(), abs=1e-6)
    assert loaded.tag([]) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variant": "ram++"}, "variant must be one of"),
        ({"threshold": 1.5}, "threshold must be in"),
        ({"top_k": 0}, "top_k must be"),
        ({"open_set_mode": "replace", "open_set_tags": ["x"]}, "open_set_mode must be"),
        ({"open_set_mode": "only"}, "needs open_set_tags"),
        ({"open_set_tags": "cat, dog"}, "not a string"),
        ({"open_set_tags": ["cat", "cat"]}, "given twice"),
        ({"open_set_tags": {"cat": []}}, "descriptions must be non-empty"),
    ],
)
def test_invalid_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        RamTagger("unused.pth", **kwargs)


# ---------------------------------------------------------------- tag list and threshold files
@pytest.mark.parametrize(
    ("text", "expected", "error"),
    [
        ("cat\ndog\n", ["cat", "dog"], None),
        ("cat\r\n  dog  \n\n\n", ["cat", "dog"], None),
        ("3D CG rendering\nabacus", ["3D CG rendering", "abacus"], None),
        ("cat\n\ndog\n", None, "line 2 is blank"),
        ("\n\n", None, "no tags"),
    ],
)
def test_parse_tag_list(text: str, expected: list[str] | None, error: str | None) -> None:
    if error:
        with pytest.raises(ValueError, match=error):
            assets.parse_tag_list(text)
    else:
        assert assets.parse_tag_list(text) == expected


@pytest.mark.parametrize(
    ("text", "expected", "error"),
    [
        ("0.65\n0.8\n", [0.65, 0.8], None),
        ("0.65\n\n", [0.65], None),
        ("0.65\nhigh\n", None, "line 2: 'high' is not a number"),
        ("1.2\n", None, "outside"),
    ],
)
def test_parse_thresholds(text: str, expected: list[float] | None, error: str | None) -> None:
    if error:
        with pytest.raises(ValueError, match=error):
            assets.parse_thresholds(text)
    else:
        assert assets.parse_thresholds(text) == expected


def test_threshold_file_shorter_than_tag_list_pads_with_official_default(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.txt"
    path.write_text("0.5\n0.9\n", encoding="utf-8")
    assert assets.load_thresholds(path, 4, cache_dir=None) == [0.5, 0.9, 0.68, 0.68]
    with pytest.raises(ValueError, match="3 thresholds given for 2 tags"):
        assets.load_thresholds([0.1, 0.2, 0.3], 2, cache_dir=None)


def test_tag_list_file(tmp_path: Path) -> None:
    path = tmp_path / "tags.txt"
    path.write_text("cat\ndog\n", encoding="utf-8")
    assert assets.load_tag_list(path, cache_dir=None) == ["cat", "dog"]
    with pytest.raises(FileNotFoundError):
        assets.load_tag_list(tmp_path / "missing.txt", cache_dir=None)


def test_official_tag_files_are_pinned_and_offline_error(tmp_path: Path) -> None:
    for pinned in (assets.TAG_LIST, assets.TAG_THRESHOLDS, assets.TAG_LIST_CHINESE):
        assert f"/{assets.OFFICIAL_COMMIT}/" in pinned.url and len(assets.OFFICIAL_COMMIT) == 40
        assert len(pinned.sha256) == 64
    with pytest.raises(ModelNotAvailableError, match="HF_HUB_OFFLINE"):
        assets.load_tag_list(None, cache_dir=tmp_path)
    with pytest.raises(ModelNotAvailableError):
        assets.load_thresholds(None, 4585, cache_dir=tmp_path)


def test_cached_official_tag_list_is_used_offline(tmp_path: Path) -> None:
    folder = tmp_path / assets.OFFICIAL_COMMIT[:12]
    folder.mkdir()
    (folder / assets.TAG_LIST.filename).write_text("cat\ndog\n", encoding="utf-8")
    assert assets.load_tag_list(None, cache_dir=tmp_path) == ["cat", "dog"]


# ---------------------------------------------------------------- open-set tags
TINY_TEXT_TOWER = {
    "embed_dim": 512,  # the width of RAM's label embeddings (CLIP ViT-B/16 text)
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_text_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny open_clip model in a local folder, as ``"local-dir:..."`` (built with pretrained=None)."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny-text-encoder")
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**TINY_TEXT_TOWER)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_TEXT_TOWER}))
    return f"local-dir:{folder}"


def _per_tag_logits(tagger: RamTagger, images: list[np.ndarray], embeds: list[torch.Tensor]) -> np.ndarray:
    """Each open-set tag scored alone, with no padding, as the reference."""
    model = tagger._ready().model
    pixels = torch.from_numpy(preprocess(images))
    with torch.inference_mode():
        image_embeds = model.encode_image(pixels)
        cols = [model.tag_logits(image_embeds, e.unsqueeze(0)).sigmoid() for e in embeds]
    return torch.cat(cols, dim=1).numpy()


def test_open_set_tags_with_open_clip_text_encoder(
    fx: dict, official_pth: Path, probs: np.ndarray, tiny_text_encoder: str
) -> None:
    from ovperc.stages.ram.openset import OpenClipTextEncoder, describe

    open_set = {"zebra": ["a horse with black and white stripes", "a striped animal"], "unicorn": None}
    tagger = _tagger(fx, official_pth, open_set_tags=open_set, open_set_encoder=tiny_text_encoder)
    images = _raw_images(fx)
    scores = tagger.probabilities(images)
    assert tagger.tag_names == [*fx["tag_list"], "zebra", "unicorn"]
    np.testing.assert_array_equal(tagger.class_thresholds[-2:], [0.5, 0.5])
    # The built-in tags are unaffected by the added ones.
    np.testing.assert_allclose(scores[:, :20], probs, rtol=0, atol=1e-6)
    # The added tags score as if each were alone (padding to the longest is masked out).
    encoder = OpenClipTextEncoder.from_spec(tiny_text_encoder)
    texts = describe(open_set)
    assert len(texts["unicorn"]) == 80 and "unicorn" in texts["unicorn"][0]
    embeds = [encoder(t) for t in texts.values()]
    if fx["variant"] == "ram":
        embeds = [torch.nn.functional.normalize(e.mean(0), dim=-1)[None] for e in embeds]
    np.testing.assert_allclose(scores[:, 20:], _per_tag_logits(tagger, images, embeds), atol=1e-5)

    only = _tagger(fx, official_pth, open_set_tags=open_set, open_set_encoder=tiny_text_encoder,
                   open_set_mode="only")
    assert only.tag_names == ["zebra", "unicorn"]
    np.testing.assert_allclose(only.probabilities(images), scores[:, 20:], atol=1e-6)


def test_open_set_tag_replaces_builtin_of_same_name(
    fx: dict, official_pth: Path, probs: np.ndarray
) -> None:
    def encoder(texts):  # any callable returning (N, 512) embeddings
        generator = torch.Generator().manual_seed(len(texts))
        return torch.randn(len(texts), 512, generator=generator)

    name = fx["tag_list"][2]
    tagger = _tagger(fx, official_pth, open_set_tags={name: "a counting frame"}, open_set_encoder=encoder)
    assert tagger.tag_names.count(name) == 1 and tagger.tag_names[-1] == name
    scores = tagger.probabilities(_raw_images(fx))
    np.testing.assert_allclose(scores[:, :-1], np.delete(probs, 2, axis=1), rtol=0, atol=1e-6)


def test_open_set_encoder_of_wrong_width(fx: dict, official_pth: Path) -> None:
    tagger = _tagger(fx, official_pth, open_set_tags=["kite"],
                     open_set_encoder=lambda texts: torch.zeros(len(texts), 64))
    with pytest.raises(ValueError, match="CLIP ViT-B/16 text width"):
        tagger.load()


def test_default_open_set_encoder_offline() -> None:
    from ovperc.stages.ram.openset import OpenClipTextEncoder

    with pytest.raises(ModelNotAvailableError, match="ViT-B-16:openai"):
        OpenClipTextEncoder.from_spec("ViT-B-16:openai")


# ---------------------------------------------------------------- in the chain
def test_plugs_into_the_pipeline_as_tagger(
    fx: dict, loaded: RamTagger, probs: np.ndarray
) -> None:
    from ovperc import Pipeline
    from ovperc.stages import Tagger

    assert isinstance(loaded, Tagger)
    result = Pipeline(tagger=loaded)(_raw_images(fx)[1])
    assert {t.name for t in result.tags} == set(fx["expected_tags"][1].split(" | "))
    assert [t.score for t in result.tags] == pytest.approx(
        [probs[1, fx["tag_list"].index(t.name)] for t in result.tags]
    )
