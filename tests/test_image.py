"""load_image: every input kind and odd file decodes to RGB uint8, or fails with a reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovperc.image import ImageError, load_image
from tests.labeling.folders import huge_png, make_bad_folder


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("odd")
    good, bad = make_bad_folder(root)
    return root, good, bad


def test_odd_but_valid_files_decode_to_rgb(odd_files) -> None:
    root, good, _ = odd_files
    for rel, (width, height) in good.items():
        image = load_image(root / rel)
        assert image.shape == (height, width, 3) and image.dtype == np.uint8, rel
        assert image.flags["C_CONTIGUOUS"]


def test_bad_files_fail_with_a_reason(odd_files) -> None:
    root, _, bad = odd_files
    for rel, word in bad.items():
        word = "file not found" if word == "broken" else word  # the scan says "broken link"
        with pytest.raises(ImageError, match=word) as info:
            load_image(root / rel)
        assert info.value.source == str(root / rel)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    Image.fromarray(array).save(tmp_path / "r.png", exif=exif.tobytes())
    image = load_image(tmp_path / "r.png")
    assert image.shape == (40, 20, 3)
    assert image[5, 10, 0] == 255 and image[35, 10, 0] == 0  # red is on top now


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((2, 3), 7, np.uint8), 7),  # grayscale
        (np.full((2, 3, 1), 7, np.uint8), 7),
        (np.full((2, 3), 65535, np.uint16), 255),  # 16-bit
        (np.full((2, 3, 3), 0.5, np.float32), 128),  # float in [0, 1]
        (np.full((2, 3), True), 255),
        (np.dstack([np.zeros((2, 3, 3), np.uint8), np.zeros((2, 3), np.uint8)]), 255),  # clear
    ],
)
def test_arrays_are_converted(array: np.ndarray, expected: int) -> None:
    image = load_image(array)
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    assert int(image[0, 0, 0]) == expected


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (np.zeros((2, 3, 5), np.uint8), "shape"),
        (np.zeros((0, 3), np.uint8), "no pixels"),
        (np.full((2, 2), np.nan, np.float32), "NaN"),
        (b"", "empty"),
        (b"GIF89a-but-not-really", "not an image|corrupt"),
        (huge_png(100000, 100000), "too large"),
    ],
)
def test_bad_inputs_raise_image_error(source: object, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        load_image(source)


def test_bytes_pil_and_limits(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (5, 4), (1, 2, 3)).save(buffer, format="PNG")
    assert load_image(buffer.getvalue()).shape == (4, 5, 3)
    assert load_image(Image.new("L", (5, 4), 9))[0, 0].tolist() == [9, 9, 9]
    with pytest.raises(ImageError, match="over the limit"):
        load_image(buffer.getvalue(), max_pixels=10)
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(TypeError, match="path, bytes"):
        load_image(42)  # type: ignore[arg-type]
