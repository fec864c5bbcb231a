"""Scores kept in every format, train/val splits, and a hand-labelled validation set."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import yaml

from ovperc.labeling.sink import split_of
from tests.labeling.folders import make_good_folder
from tests.labeling.test_safety import dataset_files, label


def _many(src: Path, n: int) -> list[str]:
    from PIL import Image

    rels = []
    for i in range(n):
        path = src / f"cam_{i % 3}" / f"img_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((24 + i % 5, 32, 3), (i * 9) % 255, np.uint8)).save(path)
        rels.append(path.relative_to(src).as_posix())
    return rels


def test_split_depends_only_on_the_path() -> None:
    rels = [f"cam/{i}.jpg" for i in range(2000)]
    val = [r for r in rels if split_of(r, 0.1) == "val"]
    assert 150 < len(val) < 250
    assert val == [r for r in rels if split_of(r, 0.1) == "val"]
    assert set(val) <= {r for r in rels if split_of(r, 0.3) == "val"}  # growing the fraction keeps them


def test_yolo_scores_sidecar_matches_the_label_lines(tmp_path: Path) -> None:
    make_good_folder(tmp_path / "src", 3)
    out = tmp_path / "out"
    label(tmp_path / "src", out, masks=True)
    for labels in (out / "labels").rglob("*.txt"):
        scores = out / "scores" / labels.relative_to(out / "labels")
        lines, values = labels.read_text().splitlines(), scores.read_text().splitlines()
        assert len(lines) == len(values) > 0
        assert all(len(line.split()) == 5 or len(line.split()) % 2 == 1 for line in lines)
        assert [float(v) for v in values] == pytest.approx([0.9, 0.85], abs=1e-4)


def test_yolo_val_split_layout_and_resume(tmp_path: Path) -> None:
    src = tmp_path / "src"
    rels = _many(src, 30)
    out = tmp_path / "out"
    report = label(src, out, val_split=0.3, batch_size=4)
    assert report.images_done == 30
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["train"] == "images/train" and data["val"] == "images/val"
    expected_val = {r.replace("/", "__").removesuffix(".png") for r in rels if split_of(r, 0.3) == "val"}
    assert {p.stem for p in (out / "images" / "val").iterdir()} == expected_val
    assert {p.stem for p in (out / "labels" / "val").iterdir()} == expected_val
    for split in ("train", "val"):
        ds = sv.DetectionDataset.from_yolo(
            images_directory_path=str(out / "images" / split),
            annotations_directory_path=str(out / "labels" / split), data_yaml_path=str(out / "data.yaml"))
        assert len(ds) == len(list((out / "images" / split).iterdir()))
    again = label(src, out, val_split=0.3)
    assert again.done_this_run == 0
    with pytest.raises(ValueError, match="val_split"):
        label(src, out, val_split=0.2)


def test_coco_and_voc_val_splits(tmp_path: Path) -> None:
    src = tmp_path / "src"
    rels = _many(src, 20)
    val = {r for r in rels if split_of(r, 0.25) == "val"}
    coco = tmp_path / "coco"
    label(src, coco, format="coco", masks=True, val_split=0.25)
    for split, members in (("train", set(rels) - val), ("val", val)):
        ds = sv.DetectionDataset.from_coco(images_directory_path=str(coco / "images"),
                                           annotations_path=str(coco / f"annotations_{split}.json"))
        assert len(ds) == len(members)
    assert not (coco / "annotations.json").exists()
    voc = tmp_path / "voc"
    label(src, voc, format="voc", val_split=0.25)
    listed = (voc / "ImageSets" / "Main" / "val.txt").read_text().split()
    assert sorted(listed) == sorted(r.replace("/", "__").removesuffix(".png") for r in val)
    assert len((voc / "ImageSets" / "Main" / "train.txt").read_text().split()) == len(rels) - len(val)


def test_val_from_hand_labels_never_validates_on_an_auto_labelled_image(tmp_path: Path) -> None:
    src = tmp_path / "src"
    rels = _many(src, 8)
    hand = tmp_path / "hand"
    label(src / "cam_0", hand, classes="cat, dog")  # stands in for a hand-labelled dataset
    out = tmp_path / "out"
    report = label(src, out, classes=None, val_from=hand)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert Path(data["val"]) == (hand / "images").resolve() and data["train"] == "images"
    assert data["names"] == {0: "cat", 1: "dog"}
    in_hand = [r for r in rels if r.startswith("cam_0/")]
    assert report.images_done == len(rels) - len(in_hand)
    assert any("validation set" in note for note in report.notes)
    with pytest.raises(ValueError, match="differ"):
        label(src, tmp_path / "o2", classes="dog, cat", val_from=hand)
    with pytest.raises(ValueError, match="not both"):
        label(src, tmp_path / "o3", val_split=0.1, val_from=hand)
    shutil.rmtree(hand / "labels")
    shutil.rmtree(hand / "images")
    with pytest.raises(ValueError, match="val-from"):
        label(src, tmp_path / "o4", val_from=hand)


def test_no_split_dataset_says_it_has_no_validation_set(tmp_path: Path) -> None:
    make_good_folder(tmp_path / "src", 2)
    label(tmp_path / "src", tmp_path / "out")
    text = (tmp_path / "out" / "data.yaml").read_text()
    assert text.startswith("# no validation set") and yaml.safe_load(text)["val"] == "images"
    assert dataset_files(tmp_path / "out")
