"""Example images for the demo, drawn on the spot (no files shipped with the package).

Two sets: :func:`write_examples` draws two flat scenes for open-vocabulary models (the
default Grounding DINO, SAM and CLIP), :func:`write_shapes_examples` writes scenes of the
synthetic shapes world (:mod:`ovperc.shapes`) for the ``shapes-tiny`` toy models.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

#: file name -> classes suggested with it.
EXAMPLES: dict[str, str] = {
    "shapes.png": "red square, blue circle, yellow triangle",
    "house.png": "house, tree, sun",
}

#: Seed of the shapes scenes shown as examples: the scenes of ``examples/shapes`` in a
#: checkout, held out from every seed the ``shapes-tiny`` models were trained on.
SHAPES_SEED = 8


def draw_example(name: str) -> Image.Image:
    """Draw one example image of :data:`EXAMPLES` (320x240, flat colours).

    Raises:
        KeyError: ``name`` is not an example.

    Example:
        >>> draw_example("shapes.png").size
        (320, 240)
    """
    from PIL import Image, ImageDraw

    if name not in EXAMPLES:
        raise KeyError(f"unknown example {name!r}; known: {sorted(EXAMPLES)}")
    image = Image.new("RGB", (320, 240), (236, 234, 226))
    draw = ImageDraw.Draw(image)
    if name == "shapes.png":
        draw.rectangle((24, 40, 124, 140), fill=(214, 40, 40))
        draw.ellipse((150, 30, 250, 130), fill=(40, 70, 200))
        draw.polygon([(200, 215), (250, 140), (300, 215)], fill=(240, 200, 30))
        draw.rectangle((40, 170, 160, 200), fill=(40, 150, 70))
    else:
        draw.rectangle((0, 0, 320, 150), fill=(150, 200, 240))
        draw.rectangle((0, 150, 320, 240), fill=(90, 160, 70))
        draw.ellipse((250, 20, 300, 70), fill=(250, 210, 40))
        draw.rectangle((60, 100, 170, 190), fill=(180, 120, 80))
        draw.polygon([(50, 100), (115, 55), (180, 100)], fill=(170, 40, 40))
        draw.rectangle((100, 145, 128, 190), fill=(90, 60, 40))
        draw.rectangle((232, 120, 246, 195), fill=(100, 70, 40))
        draw.ellipse((205, 70, 273, 140), fill=(40, 120, 50))
    return image


def write_examples(folder: str | Path) -> list[tuple[Path, str]]:
    """Write every example image of :data:`EXAMPLES` into ``folder``.

    Returns:
        ``(path, suggested classes)`` pairs, for :func:`ovperc.demo.build_app`.

    Example:
        >>> pairs = write_examples(tmp_path)  # doctest: +SKIP
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for name, classes in EXAMPLES.items():
        path = folder / name
        draw_example(name).save(path, optimize=True)
        pairs.append((path, classes))
    return pairs


def write_shapes_examples(folder: str | Path, count: int = 4) -> list[tuple[Path, str]]:
    """Write ``count`` scenes of the shapes world (seed :data:`SHAPES_SEED`) as PNGs.

    Each comes with all four shape classes, so the page shows what the toy models find
    and what they do not.

    Returns:
        ``(path, suggested classes)`` pairs, for :func:`ovperc.demo.build_app`.

    Example:
        >>> [p.name for p, _ in write_shapes_examples(tmp_path, 2)]  # doctest: +SKIP
        ['shapes_000.png', 'shapes_001.png']
    """
    from ovperc.shapes import CLASSES, generate_scenes
    from ovperc.shapes.export import write_images

    classes = ", ".join(CLASSES)
    paths = write_images(generate_scenes(count, seed=SHAPES_SEED), folder, suffix=".png")
    return [(path, classes) for path in paths]
