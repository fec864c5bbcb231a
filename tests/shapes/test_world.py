"""The shapes world: reproducible scenes whose ground truth matches the pixels."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ovperc.shapes import CLASSES, generate_scene, generate_scenes
from ovperc.shapes.world import MAX_HIDDEN


def test_same_seed_same_scenes_and_prefix_stable() -> None:
    first = generate_scenes(5, seed=3)
    again = generate_scenes(8, seed=3)[:5]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.masks, b.masks)
        assert a.class_names == b.class_names
    other = generate_scenes(5, seed=4)
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(first, other))


def test_ground_truth_matches_the_pixels() -> None:
    scenes = generate_scenes(40, seed=11)
    counts = [len(s.shapes) for s in scenes]
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) > 1
    seen = set()
    for scene in scenes:
        assert scene.image.shape == (256, 256, 3) and scene.image.dtype == np.uint8
        for shape in scene.shapes:
            seen.add(shape.class_name)
            ys, xs = np.nonzero(shape.mask)
            np.testing.assert_array_equal(shape.xyxy, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            # the shape's own colour dominates its visible pixels
            colour = scene.image[shape.mask].astype(float).mean(axis=0)
            expected = {"red": 0, "blue": 2, "green": 1}.get(shape.class_name.split()[0])
            if expected is not None:
                assert colour.argmax() == expected, (shape.class_name, colour)
            else:  # yellow: red and green high, blue low
                assert colour[2] < 0.5 * min(colour[0], colour[1])
        # visible masks never overlap
        if scene.shapes:
            assert scene.masks.sum(axis=0).max() <= 1
    assert seen == set(CLASSES)


def test_occlusion_is_bounded() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        scene = generate_scene(rng, max_shapes=4)
        for shape in scene.shapes[:-1]:
            # the front-most shape is whole; others keep >= 1 - MAX_HIDDEN of their area
            assert shape.mask.sum() > 0
    assert 0 < MAX_HIDDEN < 0.5


def test_caption_counts_classes() -> None:
    scene = next(s for s in generate_scenes(60, seed=2) if len(set(s.class_names)) < len(s.shapes))
    caption = scene.caption
    for name in set(scene.class_names):
        assert name in caption
    assert any(word in caption for word in ("two", "three", "four"))


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"size": (16, 16)}, ValueError),
    ({"max_shapes": 0}, ValueError),
    ({"radius": (40.0, 20.0)}, ValueError),
])
def test_bad_arguments_raise(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        generate_scene(np.random.default_rng(0), **kwargs)


def test_import_does_not_load_torch() -> None:
    code = "import sys, ovperc.shapes, ovperc.shapes.export; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
