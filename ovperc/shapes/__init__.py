"""A synthetic "shapes" world: seeded images of coloured shapes with exact ground truth.

The world feeds the ``shapes-tiny`` models (trained by ``train/shapes.py``) and the
end-to-end tests that check those models. Nothing here imports torch.

Example:
    >>> from ovperc.shapes import generate_scenes
    >>> scene = generate_scenes(1, seed=0)[0]
    >>> scene.image.shape
    (256, 256, 3)
"""

from __future__ import annotations

from ovperc.shapes.world import CLASSES, Scene, Shape, generate_scene, generate_scenes

__all__ = ["CLASSES", "Scene", "Shape", "generate_scene", "generate_scenes"]
