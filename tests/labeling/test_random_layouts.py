"""Property: on random mixes of good and bad files in random layouts, `label` changes nothing
outside OUT, labels or reports every image, and a rerun changes nothing."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovperc.labeling.scan import scan_images
from tests.labeling.test_safety import dataset_files, label, snapshot

NAMES = ["a", "IMG_0001", "photo 2", "ünïcödé", "x" * 120, "con", "a.b.c", "-dash", "日本"]
FOLDERS = ["", "cam_a", "cam_a/day 1", "deep/" + "/".join(["level_" + "y" * 30] * 6), "Trip"]


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


def _random_file(rng: random.Random) -> tuple[str, bytes]:
    h, w = rng.randint(8, 48), rng.randint(8, 48)
    array = np.random.default_rng(rng.randint(0, 10**6)).integers(0, 255, (h, w, 3), dtype=np.uint8)
    kind = rng.choice(["png", "jpg", "rgba", "palette", "gray16", "tiny", "thin", "corrupt", "empty",
                       "text", "truncated"])
    if kind == "png":
        return ".png", _png(array)
    if kind == "jpg":
        return rng.choice([".jpg", ".JPG", ".jpeg"]), _jpeg(array)
    if kind == "rgba":
        return ".png", _png(array, "RGBA")
    if kind == "palette":
        return ".png", _png(array, "P")
    if kind == "gray16":
        buffer = io.BytesIO()
        Image.fromarray(array[..., 0].astype(np.uint16) * 257).save(buffer, format="PNG")
        return ".png", buffer.getvalue()
    if kind == "tiny":
        return ".png", _png(array[:1, :1])
    if kind == "thin":
        return ".png", _png(np.repeat(array[:1], 1, 0).repeat(10, 1))
    if kind == "corrupt":
        return ".jpg", bytes(rng.getrandbits(8) for _ in range(200))
    if kind == "empty":
        return ".png", b""
    if kind == "text":
        return ".jpg", b"not an image at all\n"
    return ".jpg", _jpeg(array)[:60]


def _make_layout(root: Path, seed: int) -> tuple[Path, Path]:
    rng = random.Random(seed)
    src = root / "photos"
    for i in range(rng.randint(3, 10)):
        folder = src / rng.choice(FOLDERS)
        folder.mkdir(parents=True, exist_ok=True)
        suffix, data = _random_file(rng)
        (folder / f"{rng.choice(NAMES)}_{i}{suffix}").write_bytes(data)
    (src / "notes.txt").write_text("not an image")
    where = rng.choice(["beside", "inside source", "source inside out"])
    if where == "beside":
        out = root / "dataset"
    elif where == "inside source":
        out = src / "labels-out"
    else:  # SOURCE inside OUT (not in a folder ovperc writes): move the photos under it
        target = root / "project" / "raw"
        target.parent.mkdir()
        src.rename(target)
        src, out = target, root / "project"
    return src, out


@pytest.mark.parametrize("seed", range(8))
def test_random_layouts_and_files(tmp_path: Path, seed: int) -> None:
    src, out = _make_layout(tmp_path, seed)
    rng = random.Random(seed)
    options = {"format": rng.choice(["yolo", "coco", "voc"]), "masks": rng.random() < 0.5,
               "images": rng.choice(["copy", "hardlink", "symlink", "none"]),
               "batch_size": rng.randint(1, 4)}
    outside = out if out not in src.parents else None
    before = snapshot(tmp_path, skip=out if outside is not None else None)
    if outside is None:  # SOURCE inside OUT: everything outside OUT, and SOURCE itself
        before = {**snapshot(tmp_path, skip=out), **{f"src:{k}": v for k, v in snapshot(src).items()}}

    report = label(src, out, **options)

    after = snapshot(tmp_path, skip=out if outside is not None else None)
    if outside is None:
        after = {**snapshot(tmp_path, skip=out), **{f"src:{k}": v for k, v in snapshot(src).items()}}
    assert after == before, "a file outside the dataset changed"
    scanned = {e.rel for e in scan_images(src, exclude=[out])}
    labelled = set(_done(out))
    skipped = {s["path"] for s in report.skipped}
    assert labelled | skipped == scanned and not labelled & skipped
    assert all(s["reason"] for s in report.skipped)
    written = dataset_files(out)

    again = label(src, out, **options)
    assert again.done_this_run == 0 and again.images_done == report.images_done
    assert dataset_files(out) == written


def _done(out: Path) -> list[str]:
    import json

    log = out / ".ovperc" / "done.jsonl"
    return [json.loads(line)["rel"] for line in log.read_text().splitlines()] if log.exists() else []
