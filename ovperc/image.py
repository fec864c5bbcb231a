"""Decode any image input into an RGB ``uint8`` array, or fail with a clear reason."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = Union[str, os.PathLike, bytes, "Image.Image", np.ndarray]

#: Images with more pixels than this are refused (decompression-bomb guard): PIL's own hard
#: limit (twice ``PIL.Image.MAX_IMAGE_PIXELS``, about 179 megapixels).
DEFAULT_MAX_PIXELS = 2 * 89_478_485


class ImageError(ValueError):
    """An input that cannot be used as an image; ``source`` and ``reason`` say which and why."""

    def __init__(self, source: object, reason: str) -> None:
        self.source = _describe(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class UnsupportedImageError(ImageError):
    """A decoded image that one stage's model cannot process, e.g. ``1x100000`` pixels.

    Stages raise it for one image of a batch (``index``: its position in the batch) and
    :meth:`ovperc.Pipeline.run_batch` names the image (``source``) and can skip it while
    the other images of the batch are still labelled.

    Args:
        source: the image or where it came from (``"images[3]"`` inside a stage).
        reason: what the stage cannot do, e.g. ``"image too thin for the detector: 10000x10"``.
        index: the image's position in the batch given to the stage.
        stage: the role that failed (``"detector"``, ``"segmenter"``, ...).

    Example:
        >>> error = UnsupportedImageError("images[1]", "image too thin for the detector: 1x9", index=1)
        >>> str(error.with_source("strip.png"))
        'strip.png: image too thin for the detector: 1x9'
    """

    def __init__(self, source: object, reason: str, *, index: int | None = None,
                 stage: str | None = None) -> None:
        super().__init__(source, reason)
        self.index = index
        self.stage = stage

    def with_source(self, source: object, index: int | None = None) -> UnsupportedImageError:
        """The same error naming ``source`` (and position ``index``) instead."""
        return UnsupportedImageError(source, self.reason, index=index, stage=self.stage)


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    if isinstance(source, np.ndarray):
        return f"<array shape={source.shape} dtype={source.dtype}>"
    if isinstance(source, Image.Image):
        return f"<PIL image mode={source.mode} size={source.size}>"
    return f"<{type(source).__name__}>"


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load an image as an RGB ``uint8`` array of shape ``(H, W, 3)``.

    Accepts a path, encoded bytes, a PIL image or a numpy array. EXIF orientation is
    applied; palette, grayscale, CMYK, 16-bit and float images are converted to RGB, and
    transparent pixels are composited over white.

    Args:
        source: the image, or where to read it from.
        max_pixels: refuse images declaring more pixels than this (decompression bombs).

    Returns:
        A C-contiguous ``(H, W, 3)`` ``uint8`` array.

    Raises:
        ImageError: the input is missing, empty, corrupt, truncated, not an image, too
            large, or of a shape/dtype that is not an image.

    Example:
        >>> import numpy as np
        >>> load_image(np.zeros((4, 6), dtype=np.uint8)).shape
        (4, 6, 3)
    """
    if isinstance(source, np.ndarray):
        return _from_array(source, source, max_pixels)
    if isinstance(source, Image.Image):
        return _from_pil(source, source, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            mode = path.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            raise ImageError(source, "file not found") from None
        except OSError as error:
            raise ImageError(source, f"cannot read file ({error.strerror or error})") from None
        if stat.S_ISFIFO(mode):
            # opening a named pipe would block until something writes to it
            raise ImageError(source, "a named pipe, not an image file")
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            raise ImageError(source, "not a regular file (a device or socket), not an image file")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(source, "file not found") from None
        except IsADirectoryError:
            raise ImageError(source, "is a directory, not an image file") from None
        except OSError as error:
            raise ImageError(source, f"cannot read file ({error.strerror or error})") from None
    else:
        raise TypeError(
            f"load_image takes a path, bytes, PIL image or numpy array, got {type(source).__name__}"
        )
    if not data:
        raise ImageError(source, "empty file (0 bytes)")
    try:
        pil = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(source, "not an image, or an unsupported image format") from None
    except Image.DecompressionBombError as error:
        raise ImageError(source, f"too large to decode safely ({error})") from None
    except Exception as error:  # PIL raises many types on malformed headers
        raise ImageError(source, f"corrupt image header ({error})") from None
    return _from_pil(pil, source, max_pixels)


def _check_size(width: int, height: int, source: object, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(source, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            source,
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (raise max_pixels if this image is trusted)",
        )


def _from_pil(pil: Image.Image, source: object, max_pixels: int) -> np.ndarray:
    # The header's size is checked before decoding, so a bomb is never decompressed.
    _check_size(pil.width, pil.height, source, max_pixels)
    try:
        pil.load()
        pil = ImageOps.exif_transpose(pil)
    except Image.DecompressionBombError as error:
        raise ImageError(source, f"too large to decode safely ({error})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(source, f"corrupt or truncated image data ({error})") from None
    if pil.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _from_array(np.asarray(pil), source, max_pixels)
    if pil.mode == "P" and "transparency" in pil.info:
        pil = pil.convert("RGBA")
    if pil.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        pil = pil.convert("RGBA")
        background = Image.new("RGBA", pil.size, (255, 255, 255, 255))
        pil = Image.alpha_composite(background, pil)
    if pil.mode != "RGB":
        pil = pil.convert("RGB")
    return np.array(pil, dtype=np.uint8)  # a writable copy that owns its memory


def _to_uint8(array: np.ndarray, source: object) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        top = max(int(array.max(initial=0)), 1)
        scale = 255.0 / (65535.0 if top > 255 else 255.0)
        return np.clip(array.astype(np.float64) * scale, 0, 255).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError(source, "float image holds NaN or infinite values")
        top = float(array.max(initial=0.0))
        scale = 255.0 if top <= 1.0 else 1.0
        return np.clip(array * scale, 0, 255).round().astype(np.uint8)
    raise ImageError(source, f"unsupported array dtype {array.dtype}")


def _from_array(array: np.ndarray, source: object, max_pixels: int) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(source, f"array of shape {array.shape} is not HxW, HxWx3 or HxWx4")
    height, width = array.shape[:2]
    _check_size(width, height, source, max_pixels)
    array = _to_uint8(array, source)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[:, :, 3:4].astype(np.float32) / 255.0
        array = (array[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(array)
