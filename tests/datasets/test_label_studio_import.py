"""``ovperc import label-studio``: reviewed labels replace the auto labels, image by image,
in the dataset's own format, touching only files ovperc wrote."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ovperc import Pipeline
from ovperc.cli import main
from ovperc.datasets.io import load_dataset
from ovperc.datasets.label_studio import export_label_studio
from ovperc.datasets.label_studio_import import (
    LabelStudioImportError,
    UnknownClassesError,
    import_label_studio,
)
from ovperc.datasets.label_studio_tasks import reference_parts, reviewed_annotation, task_objects
from ovperc.labeling import runner
from ovperc.labeling.manifest import discard
from ovperc.masks import brush_rle_to_mask
from tests.labeling.fakes import FakeDetector
from tests.labeling.folders import make_good_folder
from tests.labeling.test_safety import label

# make_good_folder(n=3): img0.jpg 40x48, sub/img1.png 48x40 (stem sub__img1), img2.png 40x48


# ------------------------------------------------------------------ helpers
def brush_rle(mask: np.ndarray, colour: tuple[int, int, int] = (200, 30, 40)) -> list[int]:
    """Label Studio's brush encoding of a mask (RGBA values, alpha 255 inside), written
    from its documented bit layout; runs of one value are packed as literal chunks."""
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask] = (*colour, 255)
    values = rgba.ravel().tolist()
    sizes = [4, 8, 12, 16]
    bits: list[str] = [format(len(values), "032b"), format(8 - 1, "05b")]
    bits += [format(s - 1, "04b") for s in sizes]

    def length(n: int) -> str:
        k = next(k for k, s in enumerate(sizes) if n - 1 < 2**s)
        return format(k, "02b") + format(n - 1, f"0{sizes[k]}b")

    runs: list[tuple[int, int]] = []  # (value, count)
    for v in values:
        if runs and runs[-1][0] == v:
            runs[-1] = (v, runs[-1][1] + 1)
        else:
            runs.append((v, 1))
    literal: list[int] = []

    def flush() -> None:
        while literal:
            chunk, literal[:] = literal[:4096], literal[4096:]
            bits.append("0" + length(len(chunk)) + "".join(format(v, "08b") for v in chunk))

    for value, count in runs:
        if count == 1:
            literal.append(value)
            continue
        flush()
        while count:
            n = min(count, 2**16)
            bits.append("1" + length(n) + format(value, "08b"))
            count -= n
    flush()
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return [int(stream[i:i + 8], 2) for i in range(0, len(stream), 8)]


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "lock"}


def reviewed(task: dict, result: list, annotation_id: int = 1, **extra) -> dict:
    """A task as Label Studio exports it once a reviewer submitted ``result``."""
    task = copy.deepcopy(task)
    task["annotations"] = [{"id": annotation_id, "result": result, "was_cancelled": False,
                            "updated_at": "2026-11-30T10:00:00.000000Z", **extra}]
    return task


def rect(rid: str, name: str, x: float, y: float, w: float, h: float, size=(40, 48)) -> dict:
    return {"id": rid, "type": "rectanglelabels", "from_name": "box", "to_name": "image",
            "original_width": size[0], "original_height": size[1],
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [name]}}


def polygon(rid: str, name: str, pixels, size=(40, 48)) -> dict:
    points = [[px / size[0] * 100, py / size[1] * 100] for px, py in pixels]
    return {"id": rid, "type": "polygonlabels", "from_name": "polygon", "to_name": "image",
            "original_width": size[0], "original_height": size[1],
            "value": {"points": points, "closed": True, "polygonlabels": [name]}}


def brush(rid: str, name: str, mask: np.ndarray) -> dict:
    h, w = mask.shape
    return {"id": rid, "type": "brushlabels", "from_name": "brush", "to_name": "image",
            "original_width": w, "original_height": h,
            "value": {"format": "rle", "rle": brush_rle(mask), "brushlabels": [name]}}


def make_dataset(tmp_path: Path, fmt: str, masks: bool = True) -> tuple[Path, list[dict]]:
    make_good_folder(tmp_path / "src", 3)
    out = tmp_path / "ds"
    label(tmp_path / "src", out, format=fmt, masks=masks)
    export_label_studio(out, tmp_path / "tasks.json")
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    return out, {t["meta"]["key"]: t for t in tasks}


BRUSH = np.zeros((48, 40), dtype=bool)
BRUSH[20:30, 5:15] = True
SQUARE = [(22, 30), (36, 30), (36, 44), (22, 44)]


def edited_export(tasks: dict, path: Path) -> Path:
    """The review: on img0 move box r0 (its outline deleted) and relabel r1 dog -> cat; on
    img2 delete r1 (box and outline), add a dog polygon and a cat brush mask; sub__img1 was
    opened but skipped (a cancelled annotation)."""
    first = tasks["img0.jpg"]["predictions"][0]["result"]
    kept = [r for r in first if not r["id"].startswith("r0")]
    for r in kept:
        if r["id"] == "r1":
            r["value"]["rectanglelabels"] = ["cat"]
    img0 = reviewed(tasks["img0.jpg"], [rect("r0", "cat", 30, 40, 40, 30), *kept])
    second = tasks["img2.png"]["predictions"][0]["result"]
    img2 = reviewed(tasks["img2.png"], [r for r in second if not r["id"].startswith("r1")]
                    + [polygon("Xk3_a9", "dog", SQUARE), brush("bR9_zz", "cat", BRUSH)])
    img1 = reviewed(tasks["sub__img1.png"], [], was_cancelled=True)
    path.write_text(json.dumps([img0, img1, img2]))
    return path


def boxes(item) -> list[tuple[str, list[float]]]:
    det = item.detections
    return [(str(n), [float(v) for v in b]) for n, b in zip(det.data["class_name"], det.xyxy)]


# ------------------------------------------------------------------ the round trip
@pytest.mark.parametrize("fmt", ["yolo", "coco", "voc"])
def test_reviewed_labels_replace_exactly_the_reviewed_images(tmp_path, fmt):
    out, tasks = make_dataset(tmp_path, fmt)
    before = {k: boxes(v) for k, v in load_dataset(out).images().items()}
    files_before = snapshot(out)

    report = import_label_studio(edited_export(tasks, tmp_path / "export.json"), out)

    assert sorted(report.replaced) == ["img0.jpg", "img2.png"]
    assert report.not_reviewed == [f"task {tasks['sub__img1.png']['id']}"] and report.skipped == []
    after = load_dataset(out).images()
    assert [n for n, _ in boxes(after["img0.jpg"])] == ["cat", "cat"]
    moved = boxes(after["img0.jpg"])[0][1]
    # VOC stores whole pixels
    assert moved == pytest.approx([12.0, 19.2, 28.0, 33.6], abs=0.5 if fmt == "voc" else 0.01)
    assert boxes(after["img0.jpg"])[1][1] == pytest.approx(before["img0.jpg"][1][1], abs=1.5)
    second = boxes(after["img2.png"])
    assert [n for n, _ in second] == ["cat", "dog", "cat"]
    assert second[0][1] == pytest.approx(before["img2.png"][0][1], abs=1.5)
    assert second[1][1] == pytest.approx([22, 30, 37, 45], abs=1.5)
    assert second[2][1] == pytest.approx([5, 20, 15, 30], abs=1.5)
    if after["img2.png"].detections.mask is not None:
        brushed = after["img2.png"].detections.mask[2]
        assert (brushed & BRUSH).sum() / (brushed | BRUSH).sum() > 0.8
    assert boxes(after["sub__img1.png"]) == before["sub__img1.png"]
    assert load_dataset(out).classes == ["cat", "dog"]
    # the image nobody reviewed keeps every file byte for byte; so do the images themselves
    files_after = snapshot(out)
    untouched = [f for f in files_before if "sub__img1" in f or f.startswith("images/")
                 or f in ("data.yaml", "labels.txt")]
    assert untouched and all(files_after[f] == files_before[f] for f in untouched)


@pytest.mark.parametrize("fmt", ["yolo", "coco"])
def test_reviewed_images_are_recorded_and_survive_resume_and_overwrite_removes_them(tmp_path, fmt):
    out, tasks = make_dataset(tmp_path, fmt)
    import_label_studio(edited_export(tasks, tmp_path / "export.json"), out)
    done = [json.loads(line) for line in (out / ".ovperc/done.jsonl").read_text().splitlines()]
    latest = {r["rel"]: r for r in done}
    assert latest["img0.jpg"]["reviewed"]["tool"] == "label-studio"
    assert "reviewed" not in latest["sub/img1.png"]
    if fmt == "yolo":  # reviewed labels carry no confidence
        assert not (out / "scores/img0.txt").exists()
        assert "scores/img0.txt" not in latest["img0.jpg"]["files"]
    images = load_dataset(out).images()
    assert images["img0.jpg"].detections.confidence is None
    assert images["sub__img1.png"].detections.confidence is not None
    assert latest["img0.jpg"]["counts"] == {"cat": 2}
    reviewed_state = snapshot(out)

    # a resumed `ovperc label` (same settings), even with a reviewed image's source touched
    os.utime(tmp_path / "src/img0.jpg", ns=(1, 1))
    label(tmp_path / "src", out, format=fmt, masks=True)
    resumed = snapshot(out)
    assert {f: h for f, h in resumed.items() if "img0" in f or "img2" in f} == \
        {f: h for f, h in reviewed_state.items() if "img0" in f or "img2" in f}

    # --overwrite (other settings) removes exactly what ovperc wrote, reviewed files included
    (out / "notes.txt").write_text("mine")
    discard(out)
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert left in (["notes.txt"], [".ovperc/lock", "notes.txt"])


def test_a_rerun_of_the_same_import_changes_nothing(tmp_path):
    out, tasks = make_dataset(tmp_path, "coco")
    export = edited_export(tasks, tmp_path / "export.json")
    import_label_studio(export, out)
    first = snapshot(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    report = import_label_studio(export, out)

    assert report.replaced == [] and sorted(report.unchanged) == ["img0.jpg", "img2.png"]
    assert snapshot(out) == first
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "lock"} == \
        {p: t for p, t in mtimes.items() if p.name != "lock"}


def test_boxes_without_masks_dataset_and_plain_references(tmp_path):
    out, tasks = make_dataset(tmp_path, "yolo", masks=False)
    task = reviewed(tasks["img0.jpg"], [rect("r0", "dog", 0, 0, 50, 50)])
    task["data"]["image"] = "/data/upload/7/0a1b2c3d-img0.jpg"
    del task["meta"]
    other = reviewed(tasks["sub__img1.png"], [rect("n1", "cat", 10, 10, 20, 20, size=(48, 40))])
    other["data"]["image"] = "http://files.local/ds/images/sub__img1.png"
    del other["meta"]
    (tmp_path / "e.json").write_text(json.dumps([task, other]))

    report = import_label_studio(tmp_path / "e.json", out)

    assert sorted(report.replaced) == ["img0.jpg", "sub/img1.png"]
    after = load_dataset(out).images()
    assert boxes(after["img0.jpg"]) == [("dog", pytest.approx([0, 0, 20, 24], abs=0.01))]
    assert boxes(after["sub__img1.png"]) == [("cat", pytest.approx([4.8, 4, 14.4, 12], abs=0.01))]


# ------------------------------------------------------------------ classes
def test_unknown_classes_are_an_error_up_front_or_appended(tmp_path):
    out, tasks = make_dataset(tmp_path, "voc")
    export = tmp_path / "e.json"
    export.write_text(json.dumps([
        reviewed(tasks["img0.jpg"], [rect("a", "cow", 0, 0, 50, 50), rect("b", "dog", 50, 50, 20, 20)]),
        reviewed(tasks["img2.png"], [rect("c", "bird", 0, 0, 50, 50)]),
    ]))
    before = snapshot(out)

    with pytest.raises(UnknownClassesError, match="cow, bird"):
        import_label_studio(export, out)
    assert snapshot(out) == before

    report = import_label_studio(export, out, add_classes=True)

    assert report.added_classes == ["cow", "bird"]
    dataset = load_dataset(out)
    assert dataset.classes == ["cat", "dog", "cow", "bird"]
    assert (out / "labels.txt").read_text() == "cat\ndog\ncow\nbird\n"
    assert [n for n, _ in boxes(dataset.images()["img0.jpg"])] == ["cow", "dog"]


# ------------------------------------------------------------------ which annotation
def test_latest_submitted_annotation_wins_and_cancelled_ones_do_not_count():
    task = {"annotations": [
        {"id": 1, "updated_at": "2026-01-02", "result": ["first"]},
        {"id": 2, "updated_at": "2026-01-03", "result": ["second"]},
        {"id": 3, "updated_at": "2026-01-04", "result": [], "was_cancelled": True},
    ]}
    assert reviewed_annotation(task)["id"] == 2
    assert reviewed_annotation({"annotations": [task["annotations"][2]]}) is None
    assert reviewed_annotation({"predictions": [{"result": []}]}) is None


@pytest.mark.parametrize("reference, parts", [
    ("/data/local-files/?d=ds/images/a%20b.jpg", ("ds", "images", "a b.jpg")),
    ("/data/upload/3/1a2b3c4d-photo.jpg", ("photo.jpg",)),
    ("https://host/ds/images/train/a.jpg?token=1", ("ds", "images", "train", "a.jpg")),
    ("s3://bucket/ds/images/a.jpg", ("ds", "images", "a.jpg")),
    ("/home/me/ds/images/a.jpg", ("home", "me", "ds", "images", "a.jpg")),
])
def test_image_references(reference, parts):
    assert reference_parts(reference) == parts


# ------------------------------------------------------------------ bad input
def test_malformed_tasks_are_skipped_with_reasons_and_the_rest_imported(tmp_path):
    out, tasks = make_dataset(tmp_path, "yolo")
    good = reviewed(tasks["img0.jpg"], [rect("r0", "dog", 0, 0, 50, 50)])
    bad_x = reviewed(tasks["img2.png"], [rect("r0", "dog", 0, 0, 50, 50)])
    bad_x["annotations"][0]["result"][0]["value"]["x"] = "left"
    bad_brush = reviewed(tasks["sub__img1.png"], [brush("b", "cat", np.ones((40, 48), bool))])
    bad_brush["annotations"][0]["result"][0]["value"]["rle"] = [1, 2, 3]
    no_image = reviewed({"id": 77, "data": {}}, [])
    elsewhere = reviewed({"id": 78, "data": {"image": "/data/upload/1/deadbeef-other.jpg"}}, [])
    two_labels = reviewed({"id": 79, "data": {"image": "x"}}, [rect("q", "cat", 0, 0, 5, 5)])
    two_labels["annotations"][0]["result"][0]["value"]["rectanglelabels"] = ["cat", "dog"]
    two_labels["data"]["image"] = tasks["img2.png"]["data"]["image"]
    export = tmp_path / "e.json"
    export.write_text(json.dumps([good, bad_x, bad_brush, no_image, elsewhere, "text", two_labels]))
    before = snapshot(out)

    report = import_label_studio(export, out)

    reasons = dict(report.skipped)
    assert report.replaced == ["img0.jpg"]
    assert "x='left', not a number" in reasons[f"task {bad_x['id']}"]
    assert "brush RLE" in reasons[f"task {bad_brush['id']}"]
    assert "data.image" in reasons["task 77"]
    assert "not an image of the dataset" in reasons["task 78"]
    assert "not a task" in reasons["task #6"]
    assert "one label per region" in reasons["task 79"]
    assert report.exit_code == 1
    after = snapshot(out)
    assert {f: h for f, h in after.items() if "img0" not in f and not f.startswith(".ovperc")} == \
        {f: h for f, h in before.items() if "img0" not in f and not f.startswith(".ovperc")}


def test_malformed_json_or_a_dataset_ovperc_did_not_write_is_exit_2(tmp_path, capsys):
    out, _ = make_dataset(tmp_path, "yolo")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": 1,')
    assert main(["import", "label-studio", str(broken), "--out", str(out)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    with pytest.raises(LabelStudioImportError, match="not a list of tasks"):
        broken.write_text('"hello"')
        import_label_studio(broken, out)
    (tmp_path / "plain").mkdir()
    (tmp_path / "e.json").write_text("[]")
    assert main(["import", "label-studio", str(tmp_path / "e.json"), "--out", str(tmp_path / "plain")]) == 2
    assert "no ovperc manifest" in capsys.readouterr().err


def test_cli_imports_and_writes_its_report(tmp_path, capsys):
    out, tasks = make_dataset(tmp_path, "yolo")
    export = edited_export(tasks, tmp_path / "export.json")
    code = main(["import", "label-studio", str(export), "--out", str(out), "--report",
                 str(tmp_path / "r.json")])
    assert code == 0
    assert "2 images replaced" in capsys.readouterr().out
    assert sorted(json.loads((tmp_path / "r.json").read_text())["replaced"]) == ["img0.jpg", "img2.png"]


# ------------------------------------------------------------------ geometry
def test_brush_rle_round_trips_runs_and_literals():
    rng = np.random.default_rng(0)
    mask = rng.random((23, 31)) > 0.6
    mask[5:15, 3:25] = True
    assert np.array_equal(brush_rle_to_mask(brush_rle(mask), 31, 23), mask)
    with pytest.raises(ValueError, match="31x24"):
        brush_rle_to_mask(brush_rle(mask), 31, 24)
    with pytest.raises(ValueError, match="ends before"):
        brush_rle_to_mask(brush_rle(mask)[:40], 31, 23)


def test_rotated_box_becomes_the_box_around_it_and_outline_pieces_join_their_box():
    box = rect("r0", "dog", 50, 10, 20, 20, size=(100, 100))
    box["value"]["rotation"] = 90  # clockwise about the top-left corner: it now lies left of x=50
    pieces = [polygon("r0p0", "dog", [(40, 20), (45, 20), (45, 25)], size=(100, 100)),
              polygon("r0p1", "dog", [(30, 20), (35, 20), (35, 25)], size=(100, 100))]
    objects, notes = task_objects([box, *pieces], 100, 100)
    assert len(objects) == 1 and notes == []
    assert objects[0].xyxy.tolist() == pytest.approx([30, 10, 50, 30])
    assert objects[0].mask[22, 44] and objects[0].mask[22, 34] and not objects[0].mask[22, 38]


# ------------------------------------------------------------------ safety
def test_a_file_ovperc_did_not_write_is_never_replaced_or_removed(tmp_path):
    out, tasks = make_dataset(tmp_path, "yolo")
    log = out / ".ovperc/done.jsonl"  # as if the run had not written img0's scores file
    records = [json.loads(line) for line in log.read_text().splitlines()]
    for record in records:
        if record["rel"] == "img0.jpg":
            record["files"].remove("scores/img0.txt")
    log.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    (out / "scores/img0.txt").write_text("someone else's file\n")
    export = tmp_path / "e.json"
    export.write_text(json.dumps([reviewed(tasks["img0.jpg"], [rect("r0", "dog", 0, 0, 50, 50)])]))
    before = snapshot(out)

    report = import_label_studio(export, out)

    assert report.replaced == [] and "ovperc did not write it" in report.skipped[0][1]
    assert snapshot(out) == before


def test_an_import_stopped_half_way_is_finished_by_rerunning_it(tmp_path, monkeypatch):
    from ovperc import atomic

    out, tasks = make_dataset(tmp_path, "voc")
    export = edited_export(tasks, tmp_path / "export.json")
    clean, _ = make_dataset(tmp_path / "clean", "voc")
    import_label_studio(export, clean)
    real, calls = atomic.atomic_write_bytes, []

    def disk_full(path, data, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # img0's mask PNG is in place, its XML is not
            raise OSError(28, "No space left on device", str(path))
        return real(path, data, **kwargs)

    monkeypatch.setattr(atomic, "atomic_write_bytes", disk_full)
    with pytest.raises(OSError):
        import_label_studio(export, out)
    monkeypatch.setattr(atomic, "atomic_write_bytes", real)

    report = import_label_studio(export, out)

    assert sorted(report.replaced) == ["img0.jpg", "img2.png"]
    same = [f for f in snapshot(clean) if not f.startswith(".ovperc") and f != "report.json"]
    assert {f: snapshot(out)[f] for f in same} == {f: snapshot(clean)[f] for f in same}


def test_reviewed_labels_keep_their_class_ids_when_a_tagging_run_resumes(tmp_path):
    from tests.labeling.fakes import FakeTagger

    make_good_folder(tmp_path / "src", 3)
    out = tmp_path / "ds"
    pipe = Pipeline(tagger=FakeTagger(), detector=FakeDetector())
    runner.label_folder(pipe, tmp_path / "src", out, classes=None, progress=False,
                        signature={"models": "fake"})
    tasks = {t["meta"]["key"]: t for t in export_tasks(out, tmp_path)}
    classes = load_dataset(out).classes
    # the first image now uses the last class first: a fresh run would number classes otherwise
    export = tmp_path / "e.json"
    export.write_text(json.dumps([reviewed(tasks["img0.jpg"], [rect("a", classes[-1], 0, 0, 50, 50)])]))
    import_label_studio(export, out)
    state = snapshot(out)

    runner.label_folder(pipe, tmp_path / "src", out, classes=None, progress=False,
                        signature={"models": "fake"})

    assert load_dataset(out).classes == classes
    assert snapshot(out) == {**state, "report.json": snapshot(out)["report.json"]}


def export_tasks(out: Path, tmp_path: Path) -> list[dict]:
    export_label_studio(out, tmp_path / "tasks.json")
    return json.loads((tmp_path / "tasks.json").read_text())


def test_importing_into_a_dataset_with_its_own_labels_keeps_them(tmp_path: Path) -> None:
    """A COCO dataset labelled by hand, completed with `label --existing keep`: a review of an
    image ovperc labelled replaces its labels, and every hand annotation stays with its id."""
    from tests.labeling.test_existing import hand_coco

    data = tmp_path / "data"
    rels, hand = hand_coco(data)
    label(data / "images", data, format="coco", existing="keep")
    export_label_studio(data, tmp_path / "tasks.json")
    tasks = {t["meta"]["key"]: t for t in json.loads((tmp_path / "tasks.json").read_text())}
    export = tmp_path / "export.json"
    export.write_text(json.dumps([reviewed(tasks[rels[2]], [rect("a", "dog", 10, 10, 50, 50)])]))
    report = import_label_studio(export, data)
    assert report.replaced == [rels[2]] and report.exit_code == 0
    coco = json.loads((data / "annotations.json").read_text())
    assert coco["info"] == {"description": "mine"}
    assert coco["annotations"][:2] == hand["annotations"] and coco["images"][:2] == hand["images"]
    dog = next(c["id"] for c in coco["categories"] if c["name"] == "dog")
    image = next(i["id"] for i in coco["images"] if i["file_name"] == rels[2])
    assert [a["category_id"] for a in coco["annotations"] if a["image_id"] == image] == [dog]
