"""Turning images into CLIP's pixels: input checks, trimming of extreme strips, batched transforms."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image


def split_transform(preprocess: Any) -> tuple[Callable[[Any], Any], Any] | None:
    """``(PIL steps, Normalize)`` of a ``Compose`` ending in to-tensor + normalise, else None."""
    try:
        from torchvision.transforms import Compose, Normalize, ToTensor
    except ImportError:  # pragma: no cover - open_clip depends on torchvision
        return None
    steps = getattr(preprocess, "transforms", None)
    if not isinstance(preprocess, Compose) or not steps or len(steps) < 2:
        return None
    to_tensor, normalize = steps[-2], steps[-1]
    if not isinstance(to_tensor, ToTensor) or type(normalize) is not Normalize or normalize.inplace:
        return None
    return Compose(list(steps[:-2])), normalize


#: Long side / short side past which an image is trimmed before a shortest-edge resize.
_MAX_ASPECT = 4


def trim_to_center(image: Image.Image, preprocess: Any) -> Image.Image:
    """A very elongated image cut to the middle part that the transform keeps anyway.

    CLIP's usual transform resizes the short side to the model's size, then keeps the
    centred square. A 1x30000 strip would first become 224x6720000 pixels (4.5 GB); cut
    to its central ``_MAX_ASPECT``:1 part it gives the same square without that. Other
    transforms, and images no more elongated than that, are left as they are.
    """
    steps = getattr(preprocess, "transforms", None)
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if not steps or len(steps) < 2 or long <= _MAX_ASPECT * short:
        return image
    from torchvision.transforms import CenterCrop, Resize

    resize, crop = steps[0], steps[1]
    size = getattr(resize, "size", None)
    shortest_edge = isinstance(size, int) or (isinstance(size, (list, tuple)) and len(size) == 1)
    if not (isinstance(resize, Resize) and isinstance(crop, CenterCrop) and shortest_edge
            and getattr(resize, "max_size", None) is None):
        return image
    keep = _MAX_ASPECT * short + (long - _MAX_ASPECT * short) % 2  # the middle stays the middle
    start = (long - keep) // 2
    box = (start, 0, start + keep, height) if width > height else (0, start, width, start + keep)
    return image.crop(box)


def rgb_array(image: np.ndarray) -> np.ndarray:
    """``image`` as a contiguous ``(H, W, 3)`` uint8 array; ``ValueError`` for anything else."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(
            f"expected an RGB uint8 array (H, W, 3), got shape {array.shape} dtype {array.dtype}"
        )
    return np.ascontiguousarray(array)
