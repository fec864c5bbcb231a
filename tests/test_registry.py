"""The model registry: short names, hub ids and folders to stage classes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import ovperc
from ovperc import registry
from ovperc.pipeline import Pipeline
from ovperc.registry import ModelEntry, resolve


class ThirdPartyDetector:
    """A detector a user's package might ship (constructed like ovperc's stages)."""

    def __init__(self, model: str | None, *, device: str = "auto", dtype: str = "float32",
                 **options: object) -> None:
        self.model, self.device, self.dtype, self.options = model, device, dtype, options

    def detect(self, images, prompts):  # pragma: no cover - never run here
        raise NotImplementedError


@pytest.fixture
def clean_registry():
    """Registrations made by a test are undone after it."""
    state = registry._registry()
    entries, types = dict(state.entries), dict(state.by_type)
    yield
    state.entries.clear(), state.entries.update(entries)
    state.by_type.clear(), state.by_type.update(types)


def _folder(tmp_path: Path, name: str, model_type: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


def test_models_is_the_function_and_lists_every_role() -> None:
    assert callable(ovperc.models)
    names = {m.name for m in ovperc.models()}
    assert {"gdino-tiny", "gdino-base", "llmdet-tiny", "owlv2-base", "omdet-turbo", "vit_b",
            "vit_h", "sam-hq-vit-b", "sam2.1-tiny", "sam2.1-large", "edgetam", "sam3",
            "sam3-tracker", "clip-vit-b-32", "ram_plus"} <= names
    detectors = ovperc.models("detector")
    assert detectors[0].name == "gdino-tiny" and all("detector" in m.roles for m in detectors)
    sam3 = registry.get_model("sam3")
    assert sam3.gated and sam3.licence == "SAM License" and sam3.hub_id == "facebook/sam3"
    for entry in ovperc.models():
        assert entry.licence and entry.input_size, entry.name


def test_short_names_resolve_to_their_stage_and_model() -> None:
    from ovperc.stages import GroundingDinoDetector, SamSegmenter

    found = resolve("detector", "llmdet-tiny")
    assert found.stage is GroundingDinoDetector and found.model == "iSEE-Laboratory/llmdet_tiny"
    assert resolve("segmenter", "vit_l").stage is SamSegmenter
    assert resolve("detector", "iSEE-Laboratory/llmdet_base").entry.name == "llmdet-base"
    # existing specs keep their meaning
    assert resolve("classifier", "ViT-B-32:laion2b_s34b_b79k").model == "ViT-B-32:laion2b_s34b_b79k"
    assert resolve("segmenter", "missing/sam_vit_b.pth").stage is SamSegmenter


@pytest.mark.parametrize("role", ["detector", "segmenter", "classifier", "tagger"])
def test_unknown_short_name_lists_the_valid_ones(role: str) -> None:
    with pytest.raises(ValueError, match=f"unknown {role} model 'nope'.*") as error:
        resolve(role, "nope")
    for entry in ovperc.models(role):
        assert entry.name in str(error.value)


def test_a_model_of_another_role_is_refused() -> None:
    with pytest.raises(ValueError, match="'vit_b' is a segmenter model, not a detector"):
        resolve("detector", "vit_b")


def test_folder_architecture_comes_from_config_not_name(tmp_path: Path) -> None:
    from ovperc.stages import GroundingDinoDetector, OmDetTurboDetector, OwlDetector

    # named like an OWL model, but config.json says Grounding DINO (and the reverse)
    gd = _folder(tmp_path, "owlv2-base-patch16", "mm-grounding-dino")
    assert resolve("detector", str(gd)).stage is GroundingDinoDetector
    assert resolve("detector", str(gd)).model_type == "mm-grounding-dino"
    owl = _folder(tmp_path, "grounding-dino-tiny", "owlv2")
    assert resolve("detector", str(owl)).stage is OwlDetector
    assert resolve("detector", str(_folder(tmp_path, "owl-v1", "owlvit"))).stage is OwlDetector
    omdet = _folder(tmp_path, "gdino", "omdet-turbo")
    assert resolve("detector", str(omdet)).stage is OmDetTurboDetector


def test_unserved_model_type_is_an_error_listing_the_served_ones(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "detr", "detr")
    with pytest.raises(ValueError, match="model_type 'detr'.*grounding-dino.*owlv2.*omdet-turbo"):
        resolve("detector", str(folder))


def test_third_party_stage_for_a_model_type_and_a_short_name(tmp_path: Path, clean_registry) -> None:
    ovperc.register_stage("my-arch", f"{__name__}:ThirdPartyDetector")
    folder = _folder(tmp_path, "anything", "my-arch")
    assert resolve("detector", str(folder)).stage is ThirdPartyDetector

    ovperc.register_model(ModelEntry("my-det", ("detector",), ThirdPartyDetector,
                                     hub_id="me/my-det", options={"box_threshold": 0.2}))
    assert "my-det" in [m.name for m in ovperc.models("detector")]
    pipe = Pipeline.from_preset("detect", device="cpu", detector="my-det",
                                options={"detector": {"extra": 1}})
    assert isinstance(pipe.detector, ThirdPartyDetector)
    assert pipe.detector.model == "me/my-det"
    assert pipe.detector.options == {"box_threshold": 0.2, "extra": 1}
    with pytest.raises(ValueError, match="already registered"):
        ovperc.register_model(ModelEntry("my-det", ("detector",), ThirdPartyDetector))
    with pytest.raises(ValueError, match="already served"):
        ovperc.register_stage("owlv2", ThirdPartyDetector)


def test_a_stage_path_that_does_not_exist_is_a_clear_error(clean_registry) -> None:
    ovperc.register_model(ModelEntry("ghost", ("segmenter",), "ovperc.stages.nope:Ghost"))
    with pytest.raises(ImportError, match="model 'ghost' needs the stage class ovperc.stages.nope:Ghost"):
        resolve("segmenter", "ghost")


def test_from_preset_takes_short_names_and_folders(tiny_grounding_dino: Path) -> None:
    from ovperc.stages import GroundingDinoDetector, SamSegmenter

    pipe = Pipeline.from_preset("detect+segment", device="cpu", detector="llmdet-tiny",
                                segmenter="vit_l")
    assert isinstance(pipe.detector, GroundingDinoDetector)
    assert pipe.detector.model_name == "iSEE-Laboratory/llmdet_tiny"
    assert isinstance(pipe.segmenter, SamSegmenter) and pipe.segmenter.model_name == "vit_l"
    pipe = Pipeline.from_preset("detect", device="cpu", detector=str(tiny_grounding_dino))
    assert isinstance(pipe.detector, GroundingDinoDetector)
    with pytest.raises(ValueError, match="known detector models: gdino-tiny"):
        Pipeline.from_preset("detect", detector="gdino-tinny")


def test_clip_short_name_is_shared_by_tagger_and_classifier() -> None:
    pipe = Pipeline.from_preset("default", device="cpu", tagger="clip-vit-b-32",
                                classifier="clip-vit-b-32")
    assert pipe.tagger.clip is pipe.classifier.clip


def test_models_cli_lists_the_registry() -> None:
    env_code = "import sys; from ovperc.cli import main; sys.exit(main(sys.argv[1:]))"
    table = subprocess.run([sys.executable, "-c", env_code, "models", "--role", "detector"],
                           check=True, capture_output=True, text=True).stdout
    assert "llmdet-tiny" in table and "iSEE-Laboratory/llmdet_tiny" in table
    assert "vit_b" not in table.split("\n\n")[0]
    listed = json.loads(subprocess.run([sys.executable, "-c", env_code, "models", "--json"],
                                       check=True, capture_output=True, text=True).stdout)
    sam3 = next(m for m in listed["models"] if m["name"] == "sam3")
    assert sam3["gated"] is True and sam3["params_m"] == 848
    assert listed["model_types"]["omdet-turbo"] == "ovperc.stages.omdet_turbo:OmDetTurboDetector"


def test_entry_point_plugins_register_once_and_a_broken_one_is_skipped(monkeypatch, caplog,
                                                                      clean_registry) -> None:
    import importlib.metadata

    def register() -> None:
        ovperc.register_model(ModelEntry("plugin-det", ("detector",), ThirdPartyDetector))

    def broken() -> None:
        raise RuntimeError("boom")

    class Point:
        def __init__(self, name: str, fn) -> None:
            self.name, self.value, self._fn = name, f"pkg:{name}", fn

        def load(self):
            return self._fn

    def entry_points(group: str):
        assert group == "ovperc.models"
        return [Point("good", register), Point("bad", broken)]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_STATE", [])  # a fresh registry, as in a new process
    assert resolve("detector", "plugin-det").stage is ThirdPartyDetector
    assert "model plug-in bad (pkg:bad) failed to register: boom" in caplog.text
