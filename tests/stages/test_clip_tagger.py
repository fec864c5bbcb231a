"""ClipTagger: vocabulary, scores, and the on-disk cache of tag embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from ovperc import Tag
from ovperc.stages import ClipModel, ClipTagger
from ovperc.stages.clip_tagger import builtin_vocabulary, load_vocabulary

VOCAB = ["dog", "cat", "kitchen", "street", "car", "tree", "person", "sky"]


@pytest.fixture
def picture(street_image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(street_image[::4, ::4])


def test_builtin_vocabulary_is_large_clean_and_covers_coco():
    tags = builtin_vocabulary()
    assert len(tags) >= 1000
    assert len(set(tags)) == len(tags)
    assert all(t == t.strip().lower() and "  " not in t for t in tags)
    for name in ("person", "bicycle", "traffic light", "dining table", "kitchen", "beach"):
        assert name in tags


def test_user_vocabulary_file_one_tag_per_line(tmp_path):
    path = tmp_path / "tags.txt"
    path.write_text("# my tags\ndog\n\n  hot   dog \ncat  # pets\ndog\n", encoding="utf-8")
    assert load_vocabulary(path) == ["dog", "hot dog", "cat"]
    assert load_vocabulary(str(path)) == ["dog", "hot dog", "cat"]
    with pytest.raises(FileNotFoundError, match="one tag per line"):
        load_vocabulary(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="no tags"):
        load_vocabulary(["", "  "])
    with pytest.raises(TypeError):
        load_vocabulary(["dog", 3])


def test_tags_are_best_first_within_threshold_and_top_k(tiny_clip, picture):
    tagger = ClipTagger(tiny_clip, device="cpu", vocabulary=VOCAB, threshold=0.0, top_k=3)
    [tags] = tagger.tag([picture])
    assert len(tags) == 3 and all(isinstance(t, Tag) for t in tags)
    assert [t.score for t in tags] == sorted((t.score for t in tags), reverse=True)
    assert {t.name for t in tags} <= set(VOCAB)
    scores = tagger.scores([picture])[0]
    assert scores.sum() == pytest.approx(1.0, abs=1e-5)
    assert tags[0].score == pytest.approx(scores.max())
    cut = tags[1].score
    strict = ClipTagger(tagger.clip, vocabulary=VOCAB, threshold=cut, top_k=None)
    assert [t.name for t in strict.tag([picture])[0]] == [t.name for t in tags[:2]]


def test_batch_of_images_equals_one_by_one(tiny_clip, picture):
    tagger = ClipTagger(tiny_clip, device="cpu", vocabulary=VOCAB, threshold=0.0, top_k=4)
    other = np.ascontiguousarray(picture[::-1])
    together = tagger.tag([picture, other])
    alone = [tagger.tag([img])[0] for img in (picture, other)]
    for a, b in zip(together, alone):
        assert [t.name for t in a] == [t.name for t in b]
        assert np.allclose([t.score for t in a], [t.score for t in b], atol=1e-5)
    assert tagger.tag([]) == []


def test_second_start_reads_the_cache_and_skips_the_text_encoder(tiny_clip, picture, tmp_path,
                                                                monkeypatch):
    first = ClipTagger(tiny_clip, device="cpu", vocabulary=VOCAB, threshold=0.0,
                       cache_dir=tmp_path)
    expected = first.tag([picture])
    assert first.cache_path.is_file() and first.cache_path.parent == tmp_path
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]  # no temp files left

    def no_text_encoder(self, texts, **kwargs):
        raise AssertionError("the text encoder ran on a warm start")

    monkeypatch.setattr(ClipModel, "encode_texts", no_text_encoder)
    second = ClipTagger(ClipModel(tiny_clip, device="cpu"), vocabulary=VOCAB, threshold=0.0,
                        cache_dir=tmp_path)
    got = second.tag([picture])
    assert [t.name for t in got[0]] == [t.name for t in expected[0]]
    assert np.allclose([t.score for t in got[0]], [t.score for t in expected[0]], atol=1e-6)


def test_cache_key_depends_on_vocabulary_templates_and_model(tiny_clip, tmp_path):
    from tests.tiny.clip import build_tiny_clip

    base = ClipTagger(tiny_clip, vocabulary=VOCAB, cache_dir=tmp_path).cache_path
    assert ClipTagger(tiny_clip, vocabulary=VOCAB, cache_dir=tmp_path).cache_path == base
    assert ClipTagger(tiny_clip, vocabulary=VOCAB[:-1], cache_dir=tmp_path).cache_path != base
    assert ClipTagger(tiny_clip, vocabulary=VOCAB, templates="single",
                      cache_dir=tmp_path).cache_path != base
    other = build_tiny_clip(tmp_path / "other", seed=3)
    assert ClipTagger(other, vocabulary=VOCAB, cache_dir=tmp_path).cache_path != base


def test_default_cache_is_under_the_ovperc_cache(tiny_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("OVPERC_CACHE", str(tmp_path))
    tagger = ClipTagger(tiny_clip, vocabulary=VOCAB)
    assert tagger.cache_path.parent == tmp_path / "tags"


def test_a_damaged_cache_file_is_recomputed(tiny_clip, picture, tmp_path):
    tagger = ClipTagger(tiny_clip, device="cpu", vocabulary=VOCAB, cache_dir=tmp_path)
    tagger.cache_path.parent.mkdir(parents=True, exist_ok=True)
    tagger.cache_path.write_bytes(b"not an array")
    assert len(tagger.text_embeddings()) == len(VOCAB)
    assert np.load(tagger.cache_path).shape[0] == len(VOCAB)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"threshold": 2.0}, ValueError),
    ({"top_k": 0}, ValueError),
    ({"templates": ["no slot"]}, ValueError),
])
def test_bad_options_are_clear_errors(tiny_clip, kwargs, error):
    with pytest.raises(error):
        ClipTagger(tiny_clip, vocabulary=VOCAB, **kwargs)
