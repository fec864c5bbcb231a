"""`ovperc label --existing keep|skip|merge`: a dataset's own labels are never lost or changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ovperc.labeling.hand_labels import box_iou, extend_coco, voc_boxes, yolo_boxes
from ovperc.labeling.manifest import ManifestMismatchError
from tests.labeling.folders import make_good_folder
from tests.labeling.test_safety import dataset_files, label, snapshot

ROOT = Path(__file__).resolve().parents[2]

#: the FakeDetector's "cat" box on a 40x48 image is (0, 0, 20.25, 24.5): this hand box covers it
#: (IoU 0.97), its "dog" box (7, 5, 27.25, 29.5) overlaps it by IoU 0.35 only.
CAT_LIKE = "1 0.25 0.25 0.5 0.5"


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def hand_yolo(root: Path, n: int = 4) -> list[str]:
    """A hand-labelled YOLO dataset: ``n`` images, labels for the first two, its own data.yaml."""
    rels = make_good_folder(root / "images", n)
    (root / "data.yaml").write_text("path: /data/mine\ntrain: images\nnames: [person, cat]\n")
    for i, rel in enumerate(rels[:2]):
        label_file = root / "labels" / Path(rel).with_suffix(".txt")
        label_file.parent.mkdir(parents=True, exist_ok=True)
        # the second has no final newline: it must stay so byte for byte
        label_file.write_text(["0 0.5 0.5 0.2 0.2\n", CAT_LIKE][i % 2])
    return rels


def hand_voc(root: Path, n: int = 4) -> list[str]:
    rels = make_good_folder(root / "images", n)
    for rel in rels[:2]:
        w, h = _size(root / "images" / rel)
        xml = root / "annotations" / Path(rel).with_suffix(".xml")
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text(f"<annotation>\n  <filename>{rel}</filename>\n  <size><width>{w}</width>"
                       f"<height>{h}</height></size>\n  <object>\n    <name>cat</name>\n    <bndbox>"
                       f"<xmin>0</xmin><ymin>0</ymin><xmax>{w // 2}</xmax><ymax>{h // 2}</ymax></bndbox>\n"
                       "  </object>\n</annotation>\n")
    return rels


def hand_coco(root: Path, n: int = 4) -> tuple[list[str], dict]:
    rels = make_good_folder(root / "images", n)
    images, annotations = [], []
    for i, rel in enumerate(rels[:2]):
        w, h = _size(root / "images" / rel)
        images.append({"id": 10 + i, "file_name": rel, "width": w, "height": h})
        annotations.append({"id": 100 + i, "image_id": 10 + i, "category_id": 7, "bbox": [0, 0, w / 2, h / 2],
                            "area": w * h / 4, "iscrowd": 0})
    coco = {"info": {"description": "mine"}, "images": images, "annotations": annotations,
            "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "person"}]}
    (root / "annotations.json").write_text(json.dumps(coco, indent=1))
    return rels, coco


HAND = {"yolo": lambda root: hand_yolo(root), "voc": lambda root: hand_voc(root),
        "coco": lambda root: hand_coco(root)[0]}


def _hand_files(root: Path) -> dict[str, str]:
    return {k: v for k, v in snapshot(root).items() if not k.startswith((".ovperc", "report"))}


# ------------------------------------------------------------------ keep
@pytest.mark.parametrize("fmt", ["yolo", "voc", "coco"])
def test_keep_labels_only_the_images_without_labels(tmp_path: Path, fmt: str) -> None:
    data = tmp_path / "data"
    rels = HAND[fmt](data)
    before = _hand_files(data)
    report = label(data / "images", data, format=fmt, existing="keep")
    assert report.exit_code == 0, report.skipped
    assert report.images_done == 2 and report.done_this_run == 2
    after = _hand_files(data)
    # every file of the hand dataset is there and unchanged, but the class list / COCO file
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed <= {"data.yaml", "annotations.json"}
    assert any("2 images already have labels" in note and "keep" in note for note in report.notes)
    if fmt == "yolo":
        assert (data / "labels" / "img2.txt").read_text().startswith("1 ")  # cat keeps the id 1
        spec = yaml.safe_load((data / "data.yaml").read_text())
        assert spec["names"] == ["person", "cat", "dog"] and spec["path"] == "/data/mine"
        assert (data / ".ovperc/originals/data.yaml").read_text() == "path: /data/mine\ntrain: images\n" \
                                                                    "names: [person, cat]\n"
    elif fmt == "coco":
        coco = json.loads((data / "annotations.json").read_text())
        assert [(c["id"], c["name"]) for c in coco["categories"]] == [(7, "cat"), (3, "person"), (8, "dog")]
        by_file = {i["file_name"]: i["id"] for i in coco["images"]}
        assert by_file[rels[0]] == 10 and by_file[rels[1]] == 11 and len(by_file) == 4
        ours = [a for a in coco["annotations"] if a["id"] > 101]
        assert {a["image_id"] for a in ours} == {by_file[rels[2]], by_file[rels[3]]}
        assert {a["category_id"] for a in ours} == {7, 8}
        assert [a for a in coco["annotations"] if a["id"] <= 101] == \
               [a for a in json.loads(before_text(data)).get("annotations", [])]
    else:
        assert (data / "labels.txt").read_text() == "cat\ndog\n"
    again = label(data / "images", data, format=fmt, existing="keep")
    assert again.done_this_run == 0 and again.already_done == 2
    assert _hand_files(data) == after


def before_text(data: Path) -> str:
    return (data / ".ovperc/originals/annotations.json").read_text()


def test_keep_into_a_dataset_from_photos_elsewhere_uses_its_own_image_copies(tmp_path: Path) -> None:
    data, photos = tmp_path / "data", tmp_path / "photos"
    rels = hand_yolo(data)
    make_good_folder(photos, 6)  # the same 4 photos, and two the dataset does not have yet
    before = _hand_files(data)
    report = label(photos, data, existing="keep")
    assert report.exit_code == 0, report.skipped
    assert report.done_this_run == 4
    after = _hand_files(data)
    assert all(after[k] == v for k, v in before.items() if k != "data.yaml")
    assert {"images/img4.png", "images/sub/img5.png"} <= set(after)
    assert {"labels/img2.txt", "labels/sub/img3.txt", "labels/img4.txt", "labels/sub/img5.txt"} <= set(after)
    assert len(rels) == 4


# ------------------------------------------------------------------ skip
def test_skip_changes_no_file_it_did_not_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    hand_yolo(data)
    (data / "data.yaml").write_text("names: [person, cat, dog]\n")
    before = _hand_files(data)
    report = label(data / "images", data, existing="skip")
    assert report.exit_code == 0 and report.done_this_run == 2
    after = _hand_files(data)
    assert all(after[k] == v for k, v in before.items())  # data.yaml included
    assert (data / "labels" / "img2.txt").read_text().startswith("1 ")
    assert any("left out of this run" in note for note in report.notes)
    assert any("data.yaml not written" in note for note in report.notes)
    assert not (data / ".ovperc" / "originals").exists()


def test_skip_refuses_what_it_could_only_do_by_changing_the_datasets_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    hand_yolo(data)
    before = snapshot(data)
    with pytest.raises(ValueError, match="dog is not"):
        label(data / "images", data, existing="skip")  # dog is not in data.yaml
    coco = tmp_path / "coco"
    hand_coco(coco)
    with pytest.raises(ValueError, match="use --existing keep"):
        label(coco / "images", coco, format="coco", existing="skip")
    assert snapshot(data) == before and not (coco / ".ovperc").exists()


# ------------------------------------------------------------------ merge
def test_merge_adds_only_boxes_that_overlap_none_of_the_images_own(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rels = hand_yolo(data)
    own = {rel: (data / "labels" / Path(rel).with_suffix(".txt")).read_bytes() for rel in rels[:2]}
    report = label(data / "images", data, existing="merge")
    assert report.exit_code == 0 and report.done_this_run == 4
    for rel, text in own.items():
        merged = (data / "labels" / Path(rel).with_suffix(".txt")).read_bytes()
        assert merged.startswith(text)  # every byte of the hand labels stays, in place
        assert not (data / "scores" / Path(rel).with_suffix(".txt")).exists()
    small = (data / "labels" / "img0.txt").read_text().splitlines()
    assert small[0] == "0 0.5 0.5 0.2 0.2" and [line[0] for line in small[1:]] == ["1", "2"]
    covered = (data / "labels" / "sub" / "img1.txt").read_text().splitlines()
    assert covered[0] == CAT_LIKE and [line[0] for line in covered[1:]] == ["2"]  # the cat was there
    assert any("3 new boxes" in note and "(2 boxes)" in note for note in report.notes)


@pytest.mark.parametrize("fmt", ["voc", "coco"])
def test_merge_in_voc_and_coco_keeps_every_existing_label(tmp_path: Path, fmt: str) -> None:
    data = tmp_path / "data"
    rels = HAND[fmt](data)
    before = _hand_files(data)
    report = label(data / "images", data, format=fmt, existing="merge")
    assert report.exit_code == 0 and report.done_this_run == 4
    if fmt == "voc":
        for rel in rels[:2]:
            xml = data / "annotations" / Path(rel).with_suffix(".xml")
            original = (data / ".ovperc/originals" / xml.relative_to(data)).read_text()
            text = xml.read_text()
            head = original[: original.rindex("</annotation>")]
            assert text.startswith(head) and text.endswith("</annotation>\n")
            assert len(voc_boxes(text)) == 2  # the hand cat and a dog: the detector's cat was there
            assert text.count("<name>dog</name>") == 1
    else:
        coco = json.loads((data / "annotations.json").read_text())
        hand = json.loads(before_text(data))
        assert coco["annotations"][:2] == hand["annotations"] and coco["images"][:2] == hand["images"]
        for image_id in (10, 11):
            mine = [a for a in coco["annotations"] if a["image_id"] == image_id and a["id"] > 101]
            assert len(mine) == 1 and mine[0]["category_id"] == 8  # only a dog: the cat was there
    assert ("annotations.json" in before) == (fmt == "coco")
    # a stricter --merge-iou: the dog (IoU 0.35 with the hand box) is not added either
    strict = tmp_path / "strict"
    HAND[fmt](strict)
    report = label(strict / "images", strict, format=fmt, existing="merge", merge_iou=0.3)
    assert any("got 0 new boxes" in note for note in report.notes), report.notes


def test_overwrite_after_merge_gives_the_hand_labels_back_byte_for_byte(tmp_path: Path) -> None:
    data = tmp_path / "data"
    hand_yolo(data)
    before = _hand_files(data)
    label(data / "images", data, existing="merge")
    assert _hand_files(data) != before
    with pytest.raises(ManifestMismatchError, match="other settings"):
        label(data / "images", data, existing="merge", classes="bird")
    label(data / "images", data, existing="merge", classes="bird", overwrite=True)
    label(data / "images", data, existing="keep", classes="bird", overwrite=True)
    after = _hand_files(data)
    assert all(after[k] == v for k, v in before.items() if k != "data.yaml")
    from ovperc.labeling.manifest import discard

    discard(data)
    assert _hand_files(data) == before
    assert not (data / ".ovperc" / "originals").exists()


def test_a_changed_image_is_merged_again_from_its_original_labels(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rels = hand_yolo(data)
    hand = (data / "labels" / "img0.txt").read_bytes()
    label(data / "images", data, existing="merge")
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(data / "images" / rels[0])
    report = label(data / "images", data, existing="merge")
    assert report.done_this_run == 1 and any("changed since" in n for n in report.notes)
    text = (data / "labels" / "img0.txt").read_bytes()
    assert text.startswith(hand) and text.count(b"\n") == 3  # the hand box once, two new ones


# ------------------------------------------------------------------ kill -9
KILLED_MERGE = """
import os, sys
from pathlib import Path
from tests.labeling.test_safety import label
from tests.interrupts import die_at_rename
die_at_rename(int(sys.argv[2]))
data = Path(sys.argv[1])
label(data / "images", data, format=sys.argv[3], existing="merge", batch_size=2)
"""


#: the file renames to die at, per format (a merge of 4 images, 2 with hand labels, batches of 2,
#: renames 19 / 15 / 13 files): the backup of a hand file, the hand file being rewritten, the
#: dataset-wide file being extended, and its backup.
KILL_AT = {"yolo": [3, 5, 11, 17], "voc": [3, 5, 10, 13], "coco": [3, 8, 9, 11]}


@pytest.mark.parametrize("fmt", ["yolo", "voc", "coco"])
def test_kill_during_merge_then_resume_loses_nothing(tmp_path: Path, fmt: str) -> None:
    fresh = tmp_path / "fresh"
    HAND[fmt](fresh)
    label(fresh / "images", fresh, format=fmt, existing="merge")
    for at in KILL_AT[fmt]:
        data = tmp_path / f"at{at}"
        HAND[fmt](data)
        hand = _hand_files(data)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", KILLED_MERGE, str(data), str(at), fmt], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 9, done.stderr
        for rel, digest in hand.items():  # mid-run: each hand file is its original, or in .ovperc
            kept = snapshot(data).get(rel) == digest
            backup = data / ".ovperc" / "originals" / rel
            assert kept or backup.is_file(), (at, rel)
        report = label(data / "images", data, format=fmt, existing="merge")
        assert report.exit_code == 0, (at, report.skipped)
        assert dataset_files(data) == dataset_files(fresh), at
        assert [p for p in data.rglob("*.tmp")] == [], at
        from ovperc.labeling.manifest import discard

        discard(data)
        assert _hand_files(data) == hand, at


# ------------------------------------------------------------------ settings
def test_bad_settings_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    hand_yolo(data)
    before = snapshot(data)
    cases = [
        ({"existing": "replace"}, "must be one of keep, skip, merge"),
        ({"merge_iou": 0.4}, "only applies with --existing merge"),
        ({"existing": "keep", "merge_iou": 0.4}, "only applies with --existing merge"),
        ({"existing": "merge", "merge_iou": 0.0}, "above 0"),
        ({"existing": "keep", "val_split": 0.2}, "cannot be combined"),
        ({"existing": "merge", "mask_png": True}, "--mask-png"),
        ({"existing": "keep", "format": "coco"}, "holds YOLO labels"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            label(data / "images", data, **kwargs)
    (data / "data.yaml").unlink()
    with pytest.raises(ValueError, match="no .*data.yaml naming"):
        label(data / "images", data, existing="keep")
    (data / "data.yaml").write_text("names: [person, cat\n")
    with pytest.raises(ValueError, match="cannot be read"):
        label(data / "images", data, existing="keep")
    with pytest.raises(ValueError, match="--existing keep, skip or merge"):
        label(data / "images", data)  # without --existing the images folder stays refused
    del before["data.yaml"]
    assert {k: v for k, v in snapshot(data).items() if k != "data.yaml"} == before


def test_an_unreadable_label_file_leaves_that_image_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    hand_yolo(data)
    (data / "labels" / "img0.txt").write_text("person at the left\n")
    report = label(data / "images", data, existing="merge")
    assert [s["path"] for s in report.skipped] == ["img0.jpg"]
    assert "not a YOLO box" in report.skipped[0]["reason"]
    assert (data / "labels" / "img0.txt").read_text() == "person at the left\n"


# ------------------------------------------------------------------ helpers
def test_label_file_readers_and_coco_extension() -> None:
    assert np.allclose(yolo_boxes("0 0.5 0.5 0.5 0.5\n1 0.1 0.1 0.3 0.1 0.3 0.4\n", (40, 20)),
                       [[5, 10, 15, 30], [2, 4, 6, 16]])
    with pytest.raises(ValueError, match="line 2"):
        yolo_boxes("0 0.5 0.5 0.5 0.5\n0 0.5\n", (4, 4))
    assert np.allclose(box_iou(np.array([[0., 0, 2, 2]]), np.array([[0., 0, 2, 2], [4., 4, 5, 5]])), [[1, 0]])
    base = {"images": [{"id": 4, "file_name": "images/a.jpg"}], "annotations": [{"id": 9, "image_id": 4}],
            "categories": [{"id": 2, "name": "cat"}], "licenses": []}
    parts = [{"image": {"file_name": "a.jpg"}, "annotations": [{"category_id": 2, "bbox": [0, 0, 1, 1]}]},
             {"image": {"file_name": "b.jpg"}, "annotations": [{"category_id": 1, "bbox": [0, 0, 1, 1]}]}]
    out = extend_coco(base, ["cat", "dog"], parts)
    assert out["licenses"] == [] and out["categories"][1] == {"id": 3, "name": "dog",
                                                              "supercategory": "common-objects"}
    found = [(a["id"], a["image_id"], a.get("category_id")) for a in out["annotations"]]
    assert found == [(9, 4, None), (10, 4, 3), (11, 5, 2)]
    assert [i["id"] for i in out["images"]] == [4, 5]
