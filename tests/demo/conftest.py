"""Fixtures of the demo tests: a pipeline of colour-seeing fake stages and example images."""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import ovperc  # noqa: E402
from ovperc.demo.examples import write_examples  # noqa: E402
from tests.demo.fakes import ColorClassifier, ColorDetector  # noqa: E402
from tests.fakes import FakeSegmenter, FakeTagger  # noqa: E402

SHAPES_CLASSES = "red square, blue circle, yellow triangle"


def make_pipeline(*, tagger: bool = True, classifier: bool = True) -> ovperc.Pipeline:
    """Tagger, colour detector, box-mask segmenter and colour classifier."""
    return ovperc.Pipeline(
        tagger=FakeTagger([("blue circle", 0.9), ("green bar", 0.7), ("sky", 0.2)])
        if tagger else None,
        detector=ColorDetector(),
        segmenter=FakeSegmenter(),
        classifier=ColorClassifier() if classifier else None,
    )


@pytest.fixture
def pipeline() -> ovperc.Pipeline:
    return make_pipeline()


@pytest.fixture(scope="session")
def examples(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    """The demo's example images, drawn into a temporary folder."""
    return write_examples(tmp_path_factory.mktemp("examples"))


@pytest.fixture(scope="session")
def shapes_path(examples: list[tuple[Path, str]]) -> Path:
    return examples[0][0]
