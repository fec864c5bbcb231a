"""Held-out shapes scenes, their ground truth on disk, and the ``shapes-tiny`` chain."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from ovperc.shapes import CLASSES, Scene, generate_scenes

#: Held-out scenes: a seed no training run uses (training uses 1000, 2000 and 3000).
HELDOUT_SEED = 7
HELDOUT_SIZE = 30


@pytest.fixture(scope="session")
def heldout() -> list[Scene]:
    """The held-out scenes."""
    return generate_scenes(HELDOUT_SIZE, seed=HELDOUT_SEED)


class HeldoutFiles(NamedTuple):
    """The held-out scenes on disk."""

    images: Path  # folder of PNGs
    paths: list[Path]  # the PNGs, in scene order
    truth: Path  # their ground truth, a COCO dataset with masks


@pytest.fixture(scope="session")
def heldout_files(heldout: list[Scene], tmp_path_factory: pytest.TempPathFactory) -> HeldoutFiles:
    """The held-out images as PNGs and their ground truth as a COCO dataset."""
    from ovperc.shapes.export import write_ground_truth, write_images

    root = tmp_path_factory.mktemp("shapes-heldout")
    paths = write_images(heldout, root / "images")
    write_ground_truth(heldout, paths, root / "truth", format="coco", masks=True)
    return HeldoutFiles(root / "images", paths, root / "truth")


@pytest.fixture(scope="session")
def shapes_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """``Pipeline.from_preset("shapes-tiny")`` on the cpu (tag cache in a temporary folder)."""
    from ovperc import Pipeline

    cache = tmp_path_factory.mktemp("shapes-tags")
    return Pipeline.from_preset("shapes-tiny", device="cpu",
                                options={"tagger": {"cache_dir": str(cache)}})


@pytest.fixture(scope="session")
def perceptions(shapes_pipeline, heldout_files: HeldoutFiles) -> list:
    """The chain's results on the held-out images, with the four classes given."""
    return list(shapes_pipeline.map(heldout_files.paths, classes=list(CLASSES), batch_size=8))
