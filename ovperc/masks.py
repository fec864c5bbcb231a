"""Every mask encoding ovperc writes or reads, in one place, with one overlap rule.

* COCO run-length encoding (:func:`mask_to_coco_rle`, :func:`coco_rle_to_mask`), through
  pycocotools: what COCO files, ``Perception.to_dict`` and the Ray engine carry.
* Polygons: one outline per mask for YOLO segmentation lines (:func:`mask_polygon`), or the
  outline of each piece (:func:`mask_polygons`) for Label Studio.
* Instance PNGs (:func:`encode_instance_png`, :func:`decode_instance_png`): pixel value k is
  the k-th mask, 0 background. **Where masks overlap, the later mask wins**: the rule every
  writer, the demo and the Ray workers share.
* Label Studio brush masks (:func:`brush_rle_to_mask`): its own run-length bit stream of
  RGBA values, read when reviewed labels come back from Label Studio.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np

#: outlines longer than this many points are simplified by :func:`mask_polygons`.
POLYGON_MAX_EXACT = 40


def mask_to_coco_rle(mask: np.ndarray) -> dict:
    """A bool mask as COCO compressed RLE: ``{"size": [h, w], "counts": str}``.

    Example:
        >>> mask_to_coco_rle(np.ones((2, 3), bool))
        {'size': [2, 3], 'counts': '06'}
    """
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def coco_rle_to_mask(rle: dict) -> np.ndarray:
    """A COCO compressed RLE (``counts`` as ``str`` or ``bytes``) back to a bool mask.

    Example:
        >>> int(coco_rle_to_mask(mask_to_coco_rle(np.eye(3, dtype=bool))).sum())
        3
    """
    from pycocotools import mask as coco_mask

    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    encoded = {"size": list(rle["size"]), "counts": counts}
    return coco_mask.decode(encoded).astype(bool)


def mask_polygon(mask: np.ndarray, approximation: float = 0.5) -> np.ndarray | None:
    """A mask's outline as one ``(N, 2)`` polygon, or ``None`` for an empty mask.

    Pieces are joined to the largest one, and holes to their outline, by zero-width seams
    (the path goes out to the piece and back the same way), so filling the polygon gives
    the mask back, up to the outline's simplification.

    Example:
        >>> m = np.zeros((8, 8), bool); m[2:6, 2:6] = True
        >>> mask_polygon(m).shape[1]
        2
    """
    from supervision.dataset.utils import approximate_mask_with_polygons

    if not mask.any():
        return None
    try:
        polygons = approximate_mask_with_polygons(
            mask=mask, approximation_percentage=approximation, bridge_holes=True)
    except ValueError:
        polygons = approximate_mask_with_polygons(mask=mask, approximation_percentage=approximation)
    polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
    polygons = [p for p in polygons if len(p) >= 3]
    if not polygons:
        return None
    polygons.sort(key=lambda p: -_polygon_area(p))
    joined = polygons[0]
    for piece in polygons[1:]:
        dist = ((joined[:, None, :] - piece[None, :, :]) ** 2).sum(-1)
        a, b = np.unravel_index(int(np.argmin(dist)), dist.shape)
        detour = np.concatenate([piece[b:], piece[: b + 1], joined[a : a + 1]])
        joined = np.concatenate([joined[: a + 1], detour, joined[a + 1 :]])
    return joined


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))



def mask_polygons(mask: np.ndarray, approximation: float = 0.5) -> list[np.ndarray]:
    """Outer outlines of a mask's pieces as ``(N, 2)`` pixel polygons, longest first.

    Outlines longer than :data:`POLYGON_MAX_EXACT` points lose ``approximation`` of them
    (supervision's ``approximate_polygon``).

    Example:
        >>> m = np.zeros((10, 10), bool); m[2:8, 2:8] = True
        >>> len(mask_polygons(m))
        1
    """
    import supervision as sv

    if not mask.any():
        return []
    polygons = sv.mask_to_polygons(mask.astype(bool))
    if approximation > 0:
        polygons = [sv.approximate_polygon(p, percentage=approximation) if len(p) > POLYGON_MAX_EXACT else p
                    for p in polygons]
    polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
    polygons = [p for p in polygons if len(p) >= 3]
    return sorted(polygons, key=lambda p: -len(p))


def instance_ids(masks: np.ndarray, image_hw: tuple[int, int] | None = None, *,
                 values: Sequence[int] | None = None) -> np.ndarray:
    """One array of instance ids: pixel value k is mask k (1-based), 0 none; where masks
    overlap the later mask wins. ``uint8`` for values up to 255, ``uint16`` beyond.

    Args:
        masks: ``(N, H, W)`` bool masks.
        image_hw: ``(height, width)`` (needed when there are no masks).
        values: the pixel value of each mask instead of ``1..N`` (e.g. track ids, 1 to 65535).

    Example:
        >>> m = np.zeros((2, 2, 3), bool); m[0, :, :2] = True; m[1, :, 1:] = True
        >>> instance_ids(m)[0].tolist()
        [1, 2, 2]
        >>> instance_ids(m, values=[7, 300])[0].tolist()
        [7, 300, 300]
    """
    masks = np.asarray(masks, dtype=bool)
    shape = tuple(image_hw) if image_hw is not None else masks.shape[1:]
    values = list(range(1, len(masks) + 1)) if values is None else [int(v) for v in values]
    if len(values) != len(masks):
        raise ValueError(f"{len(values)} values for {len(masks)} masks")
    if values and not 1 <= min(values) <= max(values) <= 65535:
        raise ValueError(f"mask values must be 1 to 65535, got {min(values)} to {max(values)}")
    ids = np.zeros(shape, dtype=np.uint8 if max(values, default=0) <= 255 else np.uint16)
    for k, value in enumerate(values):
        ids[masks[k]] = value
    return ids


def encode_instance_png(masks: np.ndarray, image_hw: tuple[int, int], *,
                        values: Sequence[int] | None = None) -> bytes:
    """An instance-id PNG: 0 is background, k the k-th mask (later masks drawn on top), or
    ``values[k-1]`` when ``values`` are given (see :func:`instance_ids`).

    8-bit for values up to 255, 16-bit beyond.

    Example:
        >>> png = encode_instance_png(np.ones((1, 4, 4), bool), (4, 4))
        >>> png[:4]
        b'\\x89PNG'
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(instance_ids(masks, image_hw, values=values)).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_instance_png(path: str | os.PathLike, count: int | None = None) -> np.ndarray:
    """Read an instance PNG back as a ``(N, H, W)`` bool array.

    ``N`` is ``count`` when given (the number of objects the annotations list: an object
    hidden under later ones gets an empty mask), else the largest id in the PNG.

    Example:
        >>> decode_instance_png("dataset/masks/a.png").shape  # doctest: +SKIP
        (3, 480, 640)
    """
    from PIL import Image

    with Image.open(path) as img:
        ids = np.asarray(img)
    n = int(ids.max(initial=0)) if count is None else count
    return np.stack([ids == k for k in range(1, n + 1)]) if n else np.zeros((0, *ids.shape), bool)


def brush_rle_to_mask(rle: Sequence[int] | bytes, width: int, height: int) -> np.ndarray:
    """A Label Studio brush mask (its ``rle`` byte list) as an ``(height, width)`` bool mask.

    The bytes are a bit stream (most significant bit first): a 32-bit count of values, a
    5-bit word size minus one, four 4-bit run-length field sizes minus one, then chunks until
    the count is reached: one bit (1: a run of one repeated word, 0: literal words), a 2-bit
    choice of length field, the chunk length minus one in that many bits, then the word (a
    run) or the words (literals). The values are the RGBA bytes of the brush layer, row by
    row; a pixel is in the mask when its alpha is not zero.

    Raises:
        ValueError: the bytes are not such a stream, or it does not hold ``width * height``
            RGBA pixels.

    Example:
        >>> brush_rle_to_mask(rle, 640, 480).shape  # doctest: +SKIP
        (480, 640)
    """
    data = bytes(bytearray(rle))
    size = len(data) * 8
    padded = data + bytes(5)
    bits: np.ndarray | None = None  # unpacked on the first long literal chunk
    pos = 0

    def read(n: int) -> int:  # n <= 32 bits, most significant first
        nonlocal pos
        if pos + n > size:
            raise ValueError("brush RLE ends before its last value")
        window = int.from_bytes(padded[pos >> 3 : (pos >> 3) + 5], "big")
        value = (window >> (40 - (pos & 7) - n)) & ((1 << n) - 1)
        pos += n
        return value

    total = read(32)
    if total != width * height * 4:
        raise ValueError(f"brush RLE holds {total} values, not the {width}x{height} RGBA pixels "
                         "of its original_width x original_height")
    word = read(5) + 1
    if word > 8:
        raise ValueError(f"brush RLE words of {word} bits are not bytes")
    sizes = [read(4) + 1 for _ in range(4)]
    weights = 1 << np.arange(word - 1, -1, -1, dtype=np.int64)
    out = np.zeros(total, dtype=np.uint8)
    i = 0
    while i < total:
        repeat = read(1)
        end = i + 1 + read(sizes[read(2)])
        if end > total:
            raise ValueError("brush RLE runs past its value count")
        if repeat:
            value = read(word)
            if value:
                out[i:end] = value
        elif end - i < 16:
            for k in range(i, end):
                out[k] = read(word)
        else:
            n = end - i
            if pos + n * word > size:
                raise ValueError("brush RLE ends before its last value")
            if bits is None:
                bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
            out[i:end] = bits[pos : pos + n * word].reshape(n, word).dot(weights)
            pos += n * word
        i = end
    return out.reshape(height, width, 4)[:, :, 3] > 0
