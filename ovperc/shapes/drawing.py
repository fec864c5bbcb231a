"""Rasterising the shapes world: textured backgrounds and anti-aliased shape masks.

Shapes are drawn at 4x resolution and averaged down, so their edges are smooth; the
ground-truth mask of a shape is its coverage of at least one half of a pixel.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

#: Supersampling factor for shape edges.
SUPERSAMPLE = 4

#: Outline kinds the world knows.
KINDS = ("circle", "square", "triangle", "star")

#: Base RGB colour of each colour name.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),
    "blue": (40, 80, 220),
    "green": (40, 170, 60),
    "yellow": (240, 210, 40),
}


def outline(kind: str, center: tuple[float, float], radius: float, angle: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape (circles are many-sided polygons), in pixels.

    Args:
        kind: one of :data:`KINDS`.
        center: ``(x, y)`` of the shape's centre.
        radius: distance from the centre to the farthest vertex.
        angle: rotation in radians.

    Example:
        >>> len(outline("triangle", (10.0, 10.0), 5.0, 0.0))
        3
    """
    if kind == "circle":
        steps = 64
        radii = [radius] * steps
    elif kind == "square":
        steps = 4
        radii = [radius] * steps
    elif kind == "triangle":
        steps = 3
        radii = [radius] * steps
    elif kind == "star":
        steps = 10
        radii = [radius if i % 2 == 0 else radius * 0.45 for i in range(steps)]
    else:
        raise ValueError(f"unknown shape kind {kind!r}; known: {', '.join(KINDS)}")
    cx, cy = center
    offset = angle - math.pi / 2 + (math.pi / 4 if kind == "square" else 0.0)
    return [
        (cx + r * math.cos(offset + 2 * math.pi * i / steps),
         cy + r * math.sin(offset + 2 * math.pi * i / steps))
        for i, r in enumerate(radii)
    ]


def coverage(points: list[tuple[float, float]], size: tuple[int, int]) -> np.ndarray:
    """Fraction of each pixel (``float32`` in ``[0, 1]``, shape ``(H, W)``) a polygon covers.

    Example:
        >>> cover = coverage([(0, 0), (4, 0), (4, 4), (0, 4)], (8, 8))
        >>> float(cover[1, 1]), float(cover[6, 6]), cover.shape
        (1.0, 0.0, (8, 8))
    """
    width, height = size
    canvas = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    ImageDraw.Draw(canvas).polygon([(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in points], fill=255)
    big = np.asarray(canvas, dtype=np.float32) / 255.0
    return big.reshape(height, SUPERSAMPLE, width, SUPERSAMPLE).mean(axis=(1, 3))


def shape_colour(name: str, rng: np.random.Generator) -> np.ndarray:
    """The colour of a shape: its base colour with a little brightness and tint jitter."""
    base = np.asarray(COLOURS[name], dtype=np.float32)
    return np.clip(base * rng.uniform(0.85, 1.1) + rng.normal(0, 8, 3), 0, 255)


def background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A muted textured background ``(H, W, 3)`` float32: gradient, stripes, checks or blotches.

    Colours are greyish (low saturation), so no background looks like a shape's colour.

    Example:
        >>> background((32, 16), np.random.default_rng(0)).shape
        (16, 32, 3)
    """
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    grey = rng.uniform(70, 190)
    tint = rng.normal(0, 12, 3)
    base = np.full((height, width, 3), grey, dtype=np.float32) + tint
    style = rng.integers(4)
    if style == 0:  # gradient
        direction = rng.uniform(0, 2 * math.pi)
        ramp = (xs * math.cos(direction) + ys * math.sin(direction)) / max(width, height)
        pattern = ramp * rng.uniform(30, 70)
    elif style == 1:  # stripes
        direction = rng.uniform(0, math.pi)
        period = rng.uniform(8, 32)
        phase = (xs * math.cos(direction) + ys * math.sin(direction)) / period
        pattern = np.sign(np.sin(2 * math.pi * phase)) * rng.uniform(10, 30)
    elif style == 2:  # checks
        cell = rng.uniform(10, 40)
        pattern = (((xs // cell) + (ys // cell)) % 2 - 0.5) * rng.uniform(20, 50)
    else:  # blotches: coarse noise, bilinearly enlarged
        coarse = rng.normal(0, 1, (6, 6)).astype(np.float32)
        img = Image.fromarray(coarse, mode="F").resize((width, height), Image.Resampling.BILINEAR)
        pattern = np.asarray(img) * rng.uniform(15, 35)
    textured = base + pattern[..., None] + rng.normal(0, rng.uniform(2, 8), (height, width, 3))
    return np.clip(textured, 0, 255)
