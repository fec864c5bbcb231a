"""The shapes world: seeded scenes of coloured shapes on textured backgrounds.

Every scene holds one to four shapes of four classes (``red circle``, ``blue square``,
``green triangle``, ``yellow star``) with varied sizes, positions, rotations and
overlaps, and their exact ground truth: the visible mask of each shape, its box, its class
and a caption of the whole scene. A later shape may hide part of an earlier one, but never
more than :data:`MAX_HIDDEN` of it.

Scenes are reproducible: ``generate_scenes(n, seed)`` gives scene ``i`` from its own
child seed of ``seed``, so the first scenes do not depend on ``n``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ovperc.shapes.drawing import background as draw_background
from ovperc.shapes.drawing import coverage, outline, shape_colour

if TYPE_CHECKING:
    import supervision as sv

#: The classes, as ``"<colour> <kind>"``; a scene's ``class_id`` indexes this tuple.
CLASSES: tuple[str, ...] = ("red circle", "blue square", "green triangle", "yellow star")

#: The largest hidden fraction of a shape's area a later shape may cover.
MAX_HIDDEN = 0.4

_NUMBERS = {1: "a", 2: "two", 3: "three", 4: "four"}


@dataclass(frozen=True)
class Shape:
    """One shape of a scene and its ground truth.

    Attributes:
        class_id: index into :data:`CLASSES`.
        xyxy: box of the visible mask in pixel edges ``(x0, y0, x1, y1)``, ``x1``/``y1``
            exclusive, as float32.
        mask: visible pixels, bool ``(H, W)``.
    """

    class_id: int
    xyxy: np.ndarray
    mask: np.ndarray = field(repr=False)

    @property
    def class_name(self) -> str:
        """The class, e.g. ``"red circle"``."""
        return CLASSES[self.class_id]


@dataclass(frozen=True)
class Scene:
    """One generated image with its shapes, front-most last.

    Example:
        >>> scene = generate_scene(np.random.default_rng(0))
        >>> scene.xyxy.shape == (len(scene.shapes), 4)
        True
    """

    image: np.ndarray = field(repr=False)
    shapes: tuple[Shape, ...]

    @property
    def xyxy(self) -> np.ndarray:
        """Boxes ``(N, 4)`` float32 in pixels."""
        return np.array([s.xyxy for s in self.shapes], dtype=np.float32).reshape(-1, 4)

    @property
    def masks(self) -> np.ndarray:
        """Visible masks ``(N, H, W)`` bool."""
        if not self.shapes:
            return np.zeros((0, *self.image.shape[:2]), dtype=bool)
        return np.stack([s.mask for s in self.shapes])

    @property
    def class_ids(self) -> np.ndarray:
        """Class index of each shape into :data:`CLASSES`."""
        return np.array([s.class_id for s in self.shapes], dtype=int)

    @property
    def class_names(self) -> list[str]:
        """Class name of each shape."""
        return [s.class_name for s in self.shapes]

    @property
    def caption(self) -> str:
        """The scene in words, e.g. ``"two red circles and a blue square"``."""
        counts = Counter(self.class_names)
        parts = [
            f"{_NUMBERS[n]} {name}{'s' if n > 1 else ''}"
            for name, n in sorted(counts.items(), key=lambda item: CLASSES.index(item[0]))
        ]
        if not parts:
            return "an empty background"
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]

    def detections(self) -> sv.Detections:
        """The ground truth as ``sv.Detections`` (boxes, masks, ``class_id``, ``class_name``).

        Example:
            >>> generate_scene(np.random.default_rng(1)).detections().data["class_name"]  # doctest: +SKIP
            array(['blue square', 'red circle'], dtype='<U11')
        """
        import supervision as sv

        return sv.Detections(
            xyxy=self.xyxy,
            mask=self.masks,
            class_id=self.class_ids,
            confidence=np.ones(len(self.shapes), dtype=np.float32),
            data={"class_name": np.array(self.class_names, dtype=object)},
        )


def generate_scene(
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = (256, 256),
    max_shapes: int = 4,
    radius: tuple[float, float] = (14.0, 44.0),
) -> Scene:
    """Draw one scene from a random generator.

    Args:
        rng: the numpy generator to draw from.
        size: ``(width, height)`` of the image.
        max_shapes: most shapes in a scene (at least one is always drawn).
        radius: range of the shapes' outer radius in pixels.

    Example:
        >>> scene = generate_scene(np.random.default_rng(0), size=(128, 96))
        >>> scene.image.shape, scene.image.dtype
        ((96, 128, 3), dtype('uint8'))
    """
    width, height = size
    if width < 32 or height < 32:
        raise ValueError(f"size must be at least 32x32 pixels, got {size}")
    if max_shapes < 1:
        raise ValueError(f"max_shapes must be >= 1, got {max_shapes}")
    low, high = radius
    high = min(high, min(width, height) / 2 - 1)
    if not 2 <= low <= high:
        raise ValueError(f"radius {radius} does not fit an image of size {size}")
    canvas = draw_background(size, rng)
    count = int(rng.integers(1, max_shapes + 1))
    covers: list[np.ndarray] = []
    ids: list[int] = []
    for _ in range(count):
        class_id = int(rng.integers(len(CLASSES)))
        placed = _place(rng, _kind(class_id), size, covers, low, high)
        if placed is None:
            continue
        covers.append(placed)
        ids.append(class_id)
    for cover, class_id in zip(covers, ids):
        colour = shape_colour(CLASSES[class_id].split()[0], rng)
        shade = colour + rng.normal(0, 4, (*cover.shape, 3))
        canvas = canvas * (1 - cover[..., None]) + shade * cover[..., None]
    shapes = tuple(_shape(class_id, mask) for class_id, mask in zip(ids, _masks(covers)))
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return Scene(image=image, shapes=tuple(s for s in shapes if s is not None))


def generate_scenes(n: int, seed: int, **options: object) -> list[Scene]:
    """``n`` scenes; scene ``i`` comes from the ``i``-th child seed of ``seed``.

    Args:
        n: how many scenes.
        seed: the run's seed; different seeds give independent sets.
        **options: passed to :func:`generate_scene` (``size``, ``max_shapes``, ``radius``).

    Example:
        >>> [s.caption for s in generate_scenes(2, seed=0)] == [
        ...     s.caption for s in generate_scenes(3, seed=0)[:2]]
        True
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    children = np.random.SeedSequence(seed).spawn(n)
    return [generate_scene(np.random.default_rng(child), **options) for child in children]  # type: ignore[arg-type]


def _kind(class_id: int) -> str:
    return CLASSES[class_id].split()[1]


def _place(
    rng: np.random.Generator,
    kind: str,
    size: tuple[int, int],
    covers: Sequence[np.ndarray],
    low: float,
    high: float,
    tries: int = 20,
) -> np.ndarray | None:
    """Coverage of a new shape that leaves every earlier shape visible enough, or None."""
    width, height = size
    for _ in range(tries):
        r = float(rng.uniform(low, high))
        center = (float(rng.uniform(r, width - r)), float(rng.uniform(r, height - r)))
        cover = coverage(outline(kind, center, r, float(rng.uniform(0, 6.2832))), size)
        visible = _visible([*covers, cover])
        if all(v.sum() >= (1 - MAX_HIDDEN) * c.sum() for v, c in zip(visible[:-1], covers)):
            return cover
    return None


def _visible(covers: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Visible coverage of each shape once all later shapes are drawn over it."""
    result = []
    hidden = np.zeros_like(covers[0]) if covers else None
    for cover in reversed(covers):
        assert hidden is not None
        result.append(cover * (1 - hidden))
        hidden = hidden + cover * (1 - hidden)
    return result[::-1]


def _masks(covers: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each shape's pixels: covered at least half by it, and by no other shape more."""
    if not covers:
        return []
    visible = np.stack(_visible(covers))
    owner = visible.argmax(axis=0)
    return [(owner == i) & (v >= 0.5) for i, v in enumerate(visible)]


def _shape(class_id: int, mask: np.ndarray) -> Shape | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    return Shape(class_id=class_id, xyxy=box, mask=mask)
