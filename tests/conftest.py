"""Shared fixtures: tiny models of the real architectures, built once per session.

Nothing here touches the network: weights are random, saved in the real on-disk formats,
and loaded through the same public constructors users call.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own ovperc cache folder; nothing is read from ~/.cache."""
    monkeypatch.setenv("OVPERC_CACHE", str(tmp_path_factory.mktemp("ovperc-cache")))


@pytest.fixture(scope="session")
def tiny_grounding_dino(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Grounding DINO folder (transformers ``save_pretrained`` format)."""
    from tests.tiny.gdino import build_tiny_grounding_dino

    return build_tiny_grounding_dino(tmp_path_factory.mktemp("tiny-gdino"))


@pytest.fixture(scope="session")
def tiny_mm_grounding_dino(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MM Grounding DINO (LLMDet format) folder whose score bias is not zero."""
    from tests.tiny.gdino import build_tiny_grounding_dino

    return build_tiny_grounding_dino(tmp_path_factory.mktemp("tiny-mm-gdino"), mm=True,
                                     score_bias=-0.5)


@pytest.fixture(scope="session")
def tiny_owlv2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny OWLv2 folder (transformers ``save_pretrained`` format)."""
    from tests.tiny.owl import build_tiny_owl

    return build_tiny_owl(tmp_path_factory.mktemp("tiny-owlv2"), v2=True)


@pytest.fixture(scope="session")
def tiny_owlvit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny OWL-ViT (v1) folder (transformers ``save_pretrained`` format)."""
    from tests.tiny.owl import build_tiny_owl

    return build_tiny_owl(tmp_path_factory.mktemp("tiny-owlvit"), v2=False)


@pytest.fixture(scope="session")
def tiny_omdet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny OmDet-Turbo folder (transformers ``save_pretrained`` format)."""
    from tests.tiny.omdet import build_tiny_omdet

    return build_tiny_omdet(tmp_path_factory.mktemp("tiny-omdet"))


@pytest.fixture(scope="session")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SAM checkpoint (``.pth`` state dict of the segment-anything architecture)."""
    from tests.tiny.sam import build_tiny_sam

    return build_tiny_sam(tmp_path_factory.mktemp("tiny-sam"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model spec string for a tiny open_clip model, accepted by ClipClassifier/ClipTagger."""
    from tests.tiny.clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def street_image() -> np.ndarray:
    """A deterministic 480x640 RGB test image with a few flat shapes."""
    rng = np.random.default_rng(0)
    image = (rng.random((480, 640, 3)) * 60 + 90).astype(np.uint8)
    image[100:300, 50:200] = (200, 30, 30)
    image[250:420, 350:600] = (30, 30, 200)
    return image
