"""Grounding DINO's input size: the processor's resize rule, safe for images of any shape.

The processor resizes the short side to ``shortest_edge`` unless the long side would pass
``longest_edge``; for a thin strip that rounds the short side to 0 pixels and fails, and a
strip only a few pixels high has fewer feature-map cells than the model has queries.
:func:`processed_size` is that rule with no side below one pixel; :func:`pad_strip`
pads a strip up to :data:`MIN_SIDE` pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Shortest side, in processed pixels, of what the model is shown (thinner strips are
#: padded up to it): a 64x1333 input has 1777 feature-map cells, enough for 900 queries.
MIN_SIDE = 64


def pad_strip(image: np.ndarray, size: tuple[int, int], mean: Any
               ) -> tuple[np.ndarray, tuple[float, float]]:
    """A thin image resized to ``size`` and padded so its short side is :data:`MIN_SIDE`.

    Returns the padded ``uint8`` image and the ``(height, width)`` it covers in the
    original image's pixels (the image sits at its top-left corner).

    Example:
        >>> strip, frame = pad_strip(np.zeros((10, 10000, 3), np.uint8), (1, 1333), None)
        >>> strip.shape, frame
        ((64, 1333, 3), (640.0, 10000.0))
    """
    from PIL import Image

    height, width = image.shape[:2]
    out_h, out_w = size
    short = min(MIN_SIDE, max(size))
    pad_h, pad_w = (max(out_h, short), out_w) if out_h < out_w else (out_h, max(out_w, short))
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((out_w, out_h),
                                                                             Image.Resampling.BILINEAR))
    fill = np.asarray(mean if mean is not None else (0.5, 0.5, 0.5), dtype=np.float64)
    canvas = np.empty((pad_h, pad_w, 3), dtype=np.uint8)
    canvas[:] = np.clip(np.round(fill * 255), 0, 255).astype(np.uint8)
    canvas[:out_h, :out_w] = resized
    return canvas, (pad_h * height / out_h, pad_w * width / out_w)


def processed_size(height: int, width: int, size: Any) -> tuple[int, int] | None:
    """``(height, width)`` the Grounding DINO processor resizes an image to, no side below 1.

    The same rule as the processor's (shortest edge to ``shortest_edge`` unless the longest
    would pass ``longest_edge``; or the largest size within ``max_height`` x ``max_width``),
    except that a side it would round to 0 is 1 pixel. ``None`` for any other ``size``
    form (the processor then decides).

    Example:
        >>> processed_size(480, 640, {"shortest_edge": 800, "longest_edge": 1333})
        (800, 1066)
        >>> processed_size(10, 10000, {"shortest_edge": 800, "longest_edge": 1333})
        (1, 1333)
        >>> processed_size(10, 10000, {"shortest_edge": 224, "longest_edge": 224})
        (1, 224)
    """
    def field(name: str) -> int | None:
        value = size.get(name) if isinstance(size, dict) else getattr(size, name, None)
        return int(value) if value else None

    shortest, longest = field("shortest_edge"), field("longest_edge")
    max_height, max_width = field("max_height"), field("max_width")
    if shortest and longest:
        short, long = min(height, width), max(height, width)
        target: float = shortest
        raw = None
        if long / short * shortest > longest:
            raw = longest * short / long
            target = int(round(raw))
        if (height <= width and height == target) or (width <= height and width == target):
            out_h, out_w = height, width
        elif width < height:
            out_w = int(target)
            out_h = int((raw if raw is not None else target) * height / width)
        else:
            out_h = int(target)
            out_w = int((raw if raw is not None else target) * width / height)
    elif max_height and max_width:
        scale = min(max_height / height, max_width / width)
        out_h, out_w = int(height * scale), int(width * scale)
    else:
        return None
    return max(1, out_h), max(1, out_w)


def resize_rule(own: Any, image_size: int | tuple[int, int] | None) -> dict[str, int] | None:
    """The processor ``size`` for a chosen ``image_size``; ``None``: keep the processor's own.

    ``image_size`` is the shortest edge (the longest edge then keeps the ratio of the
    processor's own rule, 1333/800 for the released models) or ``(shortest_edge,
    longest_edge)``. A smaller input is faster (the cost grows with the pixel count) and
    loses small objects.

    Raises:
        ValueError: a size below :data:`MIN_SIDE` pixels, a longest edge below the shortest,
            or an int given for a processor whose rule has no shortest/longest edge.

    Example:
        >>> resize_rule({"shortest_edge": 800, "longest_edge": 1333}, 480)
        {'shortest_edge': 480, 'longest_edge': 800}
        >>> resize_rule({"shortest_edge": 800, "longest_edge": 1333}, (512, 853))
        {'shortest_edge': 512, 'longest_edge': 853}
    """
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, (int, tuple, list)):
        raise TypeError(f"image_size must be an int (shortest edge) or (shortest_edge, longest_edge), "
                        f"got {image_size!r}")
    if isinstance(image_size, int):
        def field(name: str) -> int | None:
            value = own.get(name) if isinstance(own, dict) else getattr(own, name, None)
            return int(value) if value else None

        shortest, longest = field("shortest_edge"), field("longest_edge")
        if not (shortest and longest):
            raise ValueError(f"image_size={image_size} (a shortest edge) needs a processor that "
                             f"resizes by shortest/longest edge; this one uses {own!r}: give "
                             "(shortest_edge, longest_edge)")
        pair = (image_size, int(round(image_size * longest / shortest)))
    else:
        if len(image_size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                           for v in image_size):
            raise ValueError(f"image_size must be (shortest_edge, longest_edge) ints, got {image_size!r}")
        pair = (int(image_size[0]), int(image_size[1]))
    if pair[0] < MIN_SIDE or pair[1] < pair[0]:
        raise ValueError(f"image_size needs shortest_edge >= {MIN_SIDE} and longest_edge >= "
                         f"shortest_edge, got {pair}")
    return {"shortest_edge": pair[0], "longest_edge": pair[1]}
