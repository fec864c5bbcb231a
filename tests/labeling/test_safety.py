"""A user's files are sacred: layouts of SOURCE and OUT, --overwrite, locks, modes, names."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovperc import Pipeline
from ovperc.labeling import runner
from ovperc.labeling.lock import DatasetBusyError, dataset_lock
from ovperc.labeling.manifest import ManifestMismatchError
from tests.labeling.fakes import FakeDetector, FakeSegmenter
from tests.labeling.folders import make_good_folder


def label(src: Path, out: Path, **kwargs):
    kwargs.setdefault("signature", {"models": "fake"})
    kwargs.setdefault("classes", "cat, dog")
    kwargs.setdefault("progress", False)
    pipe = Pipeline(detector=FakeDetector(), segmenter=FakeSegmenter())
    return runner.label_folder(pipe, src, out, **kwargs)


def snapshot(root: Path, *, skip: Path | None = None) -> dict[str, str]:
    """Every file under ``root`` (but ``skip``) with a hash of its bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def dataset_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".ovperc" not in p.parts and p.name != "report.json"}


# ------------------------------------------------------------------ SOURCE and OUT
@pytest.mark.parametrize("inside", ["images", "labels", "masks", "annotations", ".ovperc", "images/cam"])
def test_source_inside_a_folder_ovperc_writes_is_refused(tmp_path: Path, inside: str) -> None:
    data = tmp_path / "data"
    src = data / inside
    make_good_folder(src, 3)
    before = snapshot(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="where ovperc writes"):
            label(src, data, overwrite=overwrite)
    assert snapshot(tmp_path) == before


def test_the_reported_data_loss_cannot_happen(tmp_path: Path) -> None:
    """`label data/images --out data --overwrite` deleted the user's photos."""
    data = tmp_path / "data"
    label_src = tmp_path / "first"
    make_good_folder(label_src, 3)
    label(label_src, data)  # data/ is now an ovperc dataset with images/
    photos = data / "images" / "mine"
    make_good_folder(photos, 3)
    before = snapshot(photos)
    with pytest.raises(ValueError, match="where ovperc writes"):
        label(photos, data, overwrite=True, classes="bird")
    assert snapshot(photos) == before


def test_a_dataset_folder_linked_to_the_photos_is_refused(tmp_path: Path) -> None:
    """OUT/images a symlink to SOURCE: writing there would replace the photos with copies."""
    photos = tmp_path / "photos"
    make_good_folder(photos, 3)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "images").symlink_to(photos, target_is_directory=True)
    before = snapshot(photos)
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="where ovperc writes"):
            label(photos, tmp_path / "out", overwrite=overwrite)
    assert snapshot(photos) == before


def test_out_equal_to_source_is_refused(tmp_path: Path) -> None:
    make_good_folder(tmp_path / "p", 2)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="SOURCE itself"):
        label(tmp_path / "p", tmp_path / "p", overwrite=True)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "p")
    with pytest.raises(ValueError, match="SOURCE itself"):
        label(tmp_path / "p", link, overwrite=True)
    assert snapshot(tmp_path) == before


def test_source_elsewhere_inside_out_is_labelled_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rels = make_good_folder(data / "raw", 4)
    before = snapshot(data / "raw")
    report = label(data / "raw", data)  # OUT holds only SOURCE: no --overwrite needed
    assert report.images_done == len(rels)
    report = label(data / "raw", data, overwrite=True, classes="bird")
    assert report.images_done == len(rels) and snapshot(data / "raw") == before


def test_a_link_into_out_is_not_scanned(tmp_path: Path) -> None:
    rels = make_good_folder(tmp_path / "photos", 3)
    out = tmp_path / "out"
    label(tmp_path / "photos", out)
    (tmp_path / "photos" / "old").symlink_to(out / "images", target_is_directory=True)
    again = label(tmp_path / "photos", out)
    assert again.images_found == len(rels) and again.done_this_run == 0


def test_out_inside_source_is_not_scanned(tmp_path: Path) -> None:
    rels = make_good_folder(tmp_path / "photos", 4)
    out = tmp_path / "photos" / "dataset"
    first = label(tmp_path / "photos", out)
    again = label(tmp_path / "photos", out)
    assert first.images_found == again.images_found == len(rels)
    assert again.done_this_run == 0


def test_overwrite_removes_only_what_the_previous_run_recorded(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_good_folder(src, 4)
    label(src, out, format="voc", masks=True)
    (out / "notes.txt").write_text("mine")
    (out / "images" / "holiday.jpg").write_bytes(b"my photo")
    (out / "labels").mkdir()
    (out / "labels" / "hand.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    mine = {k: v for k, v in snapshot(out).items()
            if k in {"notes.txt", "images/holiday.jpg", "labels/hand.txt"}}
    report = label(src, out, format="yolo", classes="bird", overwrite=True)
    assert report.images_done == 4
    after = snapshot(out)
    assert all(after.get(k) == v for k, v in mine.items())
    assert not (out / "annotations").exists() and not (out / "labels.txt").exists()


def test_overwrite_never_replaces_a_file_ovperc_did_not_write(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    rels = make_good_folder(src, 4)
    stem = rels[0].replace("/", "__").rsplit(".", 1)[0]
    (out / "labels").mkdir(parents=True)
    (out / "labels" / f"{stem}.txt").write_text("hand label\n")
    (out / "data.yaml").write_text("mine: true\n")
    report = label(src, out, overwrite=True)
    assert (out / "labels" / f"{stem}.txt").read_text() == "hand label\n"
    assert (out / "data.yaml").read_text() == "mine: true\n"
    assert [s["path"] for s in report.skipped] == [rels[0]]
    assert "did not write" in report.skipped[0]["reason"]
    assert any("data.yaml" in note for note in report.notes)


def test_foreign_folder_still_needs_overwrite(tmp_path: Path) -> None:
    make_good_folder(tmp_path / "src", 2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.txt").write_text("x")
    with pytest.raises(ManifestMismatchError, match="not empty"):
        label(tmp_path / "src", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.txt"]


# ------------------------------------------------------------------ names, nesting, modes, lock
def test_deep_folders_with_long_names_are_labelled_with_valid_stable_names(tmp_path: Path) -> None:
    src = tmp_path / "src"
    deep = src.joinpath(*(["sub_directory_name_" + "x" * 40] * 5))
    deep.mkdir(parents=True)
    image = np.full((24, 32, 3), 90, np.uint8)
    for name in ["a.png", "b.png", "ä" * 60 + ".png", "con.png"]:
        Image.fromarray(image).save(deep / name)
    first = label(src, tmp_path / "out")
    assert first.exit_code == 0 and first.images_done == 4
    paths = [p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*") if p.is_file()]
    names = [p.name for p in paths]
    assert max(len(n.encode()) for n in names) <= 255
    assert len({p.as_posix().casefold() for p in paths}) == len(paths)
    assert not any(n.split(".")[0].lower() == "con" for n in names)
    label(src, tmp_path / "again")
    assert dataset_files(tmp_path / "out") == dataset_files(tmp_path / "again")


def test_folders_holding_an_ovperc_dataset_are_skipped_with_a_note(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    rels = make_good_folder(photos / "new", 3)
    label(photos / "new", photos / "old-dataset")
    report = label(photos, tmp_path / "out")
    assert report.images_found == len(rels)
    assert any("old-dataset" in note and "ovperc dataset" in note for note in report.notes)


def test_written_files_get_the_umask_mode(tmp_path: Path) -> None:
    make_good_folder(tmp_path / "src", 2)
    old = os.umask(0o022)
    try:
        label(tmp_path / "src", tmp_path / "out", format="coco", masks=True, mask_png=True)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != "lock"]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(tmp_path: Path) -> None:
    make_good_folder(tmp_path / "src", 2)
    out = tmp_path / "out"
    label(tmp_path / "src", out)
    loads = []

    class Counting(FakeDetector):
        def load(self):
            loads.append(1)

    with dataset_lock(out):
        with pytest.raises(DatasetBusyError, match=f"process {os.getpid()}"):
            runner.label_folder(Pipeline(detector=Counting()), tmp_path / "src", out, classes="cat, dog",
                                signature={"models": "fake"}, progress=False)
    assert loads == []  # refused before any model loads
    assert label(tmp_path / "src", out).exit_code == 0  # released: not stuck


def test_a_file_as_out_and_changed_settings_are_refused_before_models_load(tmp_path: Path) -> None:
    make_good_folder(tmp_path / "src", 2)
    loads = []

    class Counting(FakeDetector):
        def load(self):
            loads.append(1)

    (tmp_path / "afile").write_text("x")
    label(tmp_path / "src", tmp_path / "out")
    for out, classes, match in ((tmp_path / "afile", "cat", "is a file"),
                                (tmp_path / "out", "bird", "other settings")):
        with pytest.raises(ValueError, match=match):
            runner.label_folder(Pipeline(detector=Counting()), tmp_path / "src", out, classes=classes,
                                signature={"models": "fake"}, progress=False)
    assert loads == []
