"""Folders of test images: good ones, and one with every kind of bad or odd file."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _image(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = (rng.random((h, w, 3)) * 80 + 60).astype(np.uint8)
    image[h // 4 : h // 2, w // 4 : w // 2] = (200, 40, 40)
    return image


def _encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def make_good_folder(root: Path, n: int = 6) -> list[str]:
    """``n`` small images in a nested folder; returns their relative paths."""
    rels = []
    for i in range(n):
        rel = f"{'sub/' if i % 2 else ''}img{i}.{'png' if i % 3 else 'jpg'}"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        w, h = (48, 40) if i % 2 else (40, 48)
        path.write_bytes(_encode(_image(w, h, i), "PNG" if rel.endswith("png") else "JPEG"))
        rels.append(rel)
    return rels


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def huge_png(width: int, height: int) -> bytes:
    """A small, valid-looking PNG whose header declares ``width x height`` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


def make_bad_folder(root: Path) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Every kind of odd file the scan and decoder must handle.

    Returns ``(good, bad)``: good ``rel -> (width, height)`` after EXIF orientation, and
    bad ``rel -> a word the skip reason must contain``.
    """
    root.mkdir(parents=True, exist_ok=True)
    good: dict[str, tuple[int, int]] = {}
    bad: dict[str, str] = {}
    base = _image(40, 30, 1)

    def put(rel: str, data: bytes) -> Path:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    jpeg = _encode(base, "JPEG")
    png = _encode(base, "PNG")
    # bad ones
    put("corrupt.jpg", jpeg[:20] + bytes(range(256)) * 4)
    bad["corrupt.jpg"] = "not an image"
    put("cut.jpg", jpeg[: len(jpeg) * 2 // 3])
    bad["cut.jpg"] = "truncated"
    put("truncated.png", png[: len(png) // 2])
    bad["truncated.png"] = "truncated"
    put("empty.jpg", b"")
    bad["empty.jpg"] = "empty"
    put("text.jpg", b"this is not an image, just text\n" * 5)
    bad["text.jpg"] = "not an image"
    put("huge.png", huge_png(100000, 100000))
    bad["huge.png"] = "too large"
    os.mkfifo(root / "pipe.jpg")
    bad["pipe.jpg"] = "pipe"
    os.symlink(root / "does-not-exist.png", root / "broken.png")
    bad["broken.png"] = "broken"
    # odd but fine
    buffer = io.BytesIO()
    Image.fromarray(base).convert("CMYK").save(buffer, format="JPEG")
    put("cmyk.jpg", buffer.getvalue())
    good["cmyk.jpg"] = (40, 30)
    deep = (base[:, :, 0].astype(np.uint16) * 257)
    buffer = io.BytesIO()
    Image.fromarray(deep).save(buffer, format="PNG")
    put("deep16.png", buffer.getvalue())
    good["deep16.png"] = (40, 30)
    rgba = np.dstack([base, np.full(base.shape[:2], 128, np.uint8)])
    put("rgba.png", _encode(rgba, "PNG"))
    good["rgba.png"] = (40, 30)
    palette = Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=0)
    put("palette.png", buffer.getvalue())
    good["palette.png"] = (40, 30)
    put("gray.png", _encode(base[:, :, 1], "PNG"))
    good["gray.png"] = (40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: displayed size is 30x40
    buffer = io.BytesIO()
    Image.fromarray(base).save(buffer, format="JPEG", exif=exif.tobytes())
    put("rotated.jpg", buffer.getvalue())
    good["rotated.jpg"] = (30, 40)
    put("tiny.png", _encode(np.full((1, 1, 3), 200, np.uint8), "PNG"))
    good["tiny.png"] = (1, 1)
    put("café_日本.png", png)
    good["café_日本.png"] = (40, 30)
    put("a/dup.png", png)
    put("b/dup.png", _encode(_image(40, 30, 2), "PNG"))
    good["a/dup.png"] = good["b/dup.png"] = (40, 30)
    put("same.jpg", jpeg)
    put("same.png", png)
    good["same.jpg"] = good["same.png"] = (40, 30)
    put("UPPER.JPEG", jpeg)
    good["UPPER.JPEG"] = (40, 30)
    put("scan.TIFF", _encode(base, "TIFF"))
    good["scan.TIFF"] = (40, 30)
    put("old.BMP", _encode(base, "BMP"))
    good["old.BMP"] = (40, 30)
    put("web.webp", _encode(base, "WEBP", lossless=True))
    good["web.webp"] = (40, 30)
    put("folder.jpg/inside.png", png)  # a directory with an image name is scanned into
    good["folder.jpg/inside.png"] = (40, 30)
    put("notes.txt", b"not scanned")
    put(".hidden.png", png)  # hidden files are not scanned
    os.symlink(root, root / "a" / "loop")  # a symlink loop back to the top
    if os.geteuid() != 0:
        locked = put("locked.png", png)
        locked.chmod(0)
        bad["locked.png"] = "cannot read"
    return good, bad
