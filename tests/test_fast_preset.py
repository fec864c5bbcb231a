"""The ``fast`` preset: which stages it builds, with which options, shared CLIP, CPU-only int8."""

from __future__ import annotations

import pytest

from ovperc import presets
from ovperc.presets import FAST_DETECTOR, FAST_SEGMENTER, PRESETS, build_preset


def _build(**kwargs):
    return build_preset("fast", device="cpu", dtype="float32",
                        models=kwargs.pop("models", {}), options=kwargs.pop("options", {}))


def test_fast_preset_builds_all_four_roles_int8_without_loading() -> None:
    from ovperc.stages.clip_classifier import ClipClassifier
    from ovperc.stages.clip_tagger import ClipTagger
    from ovperc.stages.omdet_turbo import OmDetTurboDetector
    from ovperc.stages.sam_hf import HfSamSegmenter

    stages = _build()
    assert sorted(stages) == ["classifier", "detector", "segmenter", "tagger"]
    assert isinstance(stages["tagger"], ClipTagger) and isinstance(stages["classifier"], ClipClassifier)
    assert isinstance(stages["detector"], OmDetTurboDetector)
    assert isinstance(stages["segmenter"], HfSamSegmenter)
    assert stages["tagger"].clip is stages["classifier"].clip  # one CLIP, shared
    assert stages["tagger"].clip.quantize == "int8"
    assert stages["detector"].quantize == "int8"
    assert stages["segmenter"].quantize is None  # int8 did not pay for EdgeTAM (0.97x)
    assert not stages["tagger"].clip.loaded  # nothing loads until used
    assert PRESETS["fast"]["detector"] == FAST_DETECTOR and PRESETS["fast"]["segmenter"] == FAST_SEGMENTER


def test_caller_options_win_and_a_swapped_model_drops_the_preset_options(tiny_grounding_dino) -> None:
    stages = _build(options={"detector": {"quantize": None}})
    assert stages["detector"].quantize is None
    stages = _build(models={"detector": str(tiny_grounding_dino)})
    assert stages["detector"].quantize is None  # the preset's options are for its own model


def test_tagger_and_classifier_with_different_quantize_do_not_share() -> None:
    stages = _build(options={"classifier": {"quantize": None}})
    assert stages["tagger"].clip is not stages["classifier"].clip
    assert stages["tagger"].clip.quantize == "int8" and stages["classifier"].clip.quantize is None


def test_int8_is_left_out_off_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(presets, "_on_cpu", lambda device: False)
    stages = _build()
    assert stages["detector"].quantize is None and stages["tagger"].clip.quantize is None


def test_cli_knows_the_fast_preset() -> None:
    from ovperc.cli.options import chosen_models

    class Args:
        tagger = detector = segmenter = classifier = None

    assert chosen_models(Args(), "fast") == PRESETS["fast"]
