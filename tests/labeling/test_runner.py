"""label_folder with small deterministic stages: outputs, resume, bad files, tags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from ovperc import Pipeline, load_image
from ovperc.labeling import runner
from ovperc.labeling.manifest import ManifestMismatchError
from ovperc.labeling.scan import scan_images
from tests.labeling.fakes import FakeDetector, FakeSegmenter, FakeTagger
from tests.labeling.folders import make_bad_folder, make_good_folder


def _tree(root: Path) -> dict[str, bytes]:
    """Every dataset file (not run state or the report) with its bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".ovperc" not in p.parts and p.name != "report.json"
    }


def label_folder(*args, **kwargs):
    """The runner with a fixed model signature (the fakes' class names differ)."""
    kwargs.setdefault("signature", {"models": "fake"})
    return runner.label_folder(*args, **kwargs)


def _pipe(**kwargs) -> Pipeline:
    return Pipeline(detector=FakeDetector(), segmenter=FakeSegmenter(), **kwargs)


@pytest.mark.parametrize("fmt", ["yolo", "coco", "voc"])
def test_resume_after_interrupt_equals_clean_run(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    make_good_folder(src, 7)
    clean = label_folder(_pipe(), src, tmp_path / "clean", classes="cat, dog", format=fmt,
                         masks=True, batch_size=2, progress=False)
    assert clean.exit_code == 0 and clean.images_done == 7

    class Interrupting(FakeDetector):
        def detect(self, images, prompts):
            if self.calls == 2:
                raise KeyboardInterrupt
            return super().detect(images, prompts)

    out = tmp_path / "resumed"
    first = label_folder(Pipeline(detector=Interrupting(), segmenter=FakeSegmenter()), src, out,
                         classes="cat, dog", format=fmt, masks=True, batch_size=2, progress=False)
    assert first.interrupted and first.exit_code == 130 and first.images_done == 4
    second = label_folder(_pipe(), src, out, classes="cat, dog", format=fmt, masks=True,
                          batch_size=3, progress=False)
    assert second.already_done == 4 and second.done_this_run == 3 and second.exit_code == 0
    assert _tree(out) == _tree(tmp_path / "clean")
    # a third run has nothing left to do and changes nothing
    third = label_folder(_pipe(), src, out, classes="cat, dog", format=fmt, masks=True,
                         progress=False)
    assert third.done_this_run == 0 and _tree(out) == _tree(tmp_path / "clean")


def test_changed_classes_are_refused_unless_overwrite(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_good_folder(src, 2)
    label_folder(_pipe(), src, out, classes="cat", progress=False)
    with pytest.raises(ManifestMismatchError, match="classes.*--overwrite"):
        label_folder(_pipe(), src, out, classes="cat, dog", progress=False)
    with pytest.raises(ManifestMismatchError, match="format"):
        label_folder(_pipe(), src, out, classes="cat", format="coco", progress=False)
    report = label_folder(_pipe(), src, out, classes="cat, dog", format="coco",
                          overwrite=True, progress=False)
    assert report.done_this_run == 2
    assert not (out / "labels").exists() and (out / "annotations.json").exists()


def test_foreign_folder_is_refused(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_good_folder(src, 1)
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(ManifestMismatchError, match="not empty"):
        label_folder(_pipe(), src, out, classes="cat", progress=False)
    label_folder(_pipe(), src, out, classes="cat", overwrite=True, progress=False)
    assert (out / "mine.txt").read_text() == "keep me"


def test_bad_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    good, bad = make_bad_folder(src)
    report = label_folder(_pipe(), src, out, classes="cat", format="coco", masks=True,
                          batch_size=3, progress=False)
    assert report.exit_code == 1
    reasons = {item["path"]: item["reason"] for item in report.skipped}
    assert set(reasons) == set(bad)
    for rel, word in bad.items():
        assert word in reasons[rel], (rel, reasons[rel])
    assert report.images_done == len(good) == report.images_found - len(bad)
    saved = json.loads((out / "report.json").read_text())
    assert saved["exit_code"] == 1 and len(saved["skipped"]) == len(bad)
    assert saved["detections_per_class"] == {"cat": len(good)}
    coco = json.loads((out / "annotations.json").read_text())
    sizes = {img["file_name"]: (img["width"], img["height"]) for img in coco["images"]}
    manifest = [json.loads(line) for line in (out / ".ovperc" / "done.jsonl").read_text().splitlines()]
    stems = {r["rel"]: r["stem"] for r in manifest}
    assert len(set(stems.values())) == len(good)  # no collisions (dup.png, same.jpg/png)
    for rel, size in good.items():
        suffix = Path(rel).suffix
        assert sizes[stems[rel] + suffix] == size, rel
    # every annotation's mask has the size of its (EXIF-oriented) image
    by_id = {img["id"]: img for img in coco["images"]}
    for ann in coco["annotations"]:
        img = by_id[ann["image_id"]]
        assert ann["segmentation"]["size"] == [img["height"], img["width"]]
    # a rerun retries the bad files only and still reports them
    again = label_folder(_pipe(), src, out, classes="cat", format="coco", masks=True,
                         progress=False)
    assert again.done_this_run == 0 and len(again.skipped) == len(bad)


def test_batch_size_does_not_change_the_dataset(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_good_folder(src, 5)
    for bs in (1, 4):
        label_folder(_pipe(), src, tmp_path / f"bs{bs}", classes="cat, dog", masks=True,
                     mask_png=True, batch_size=bs, progress=False)
    assert _tree(tmp_path / "bs1") == _tree(tmp_path / "bs4")


def test_tags_grow_the_classes_with_stable_ids_across_resume(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_good_folder(src, 6)
    (src / "zz_blue.png").write_bytes(b"")  # a bad file does not disturb the ids

    def pipe() -> Pipeline:
        return Pipeline(tagger=FakeTagger(), detector=FakeDetector())

    clean = label_folder(pipe(), src, tmp_path / "clean", batch_size=2, progress=False)
    expected: list[str] = []
    for entry in scan_images(src):
        if entry.rel != "zz_blue.png":
            for tag in FakeTagger().tag([load_image(entry.path)])[0]:
                expected += [] if tag.name in expected else [tag.name]
    assert clean.classes == expected  # in order of first appearance, scan order
    data = sv.DetectionDataset.from_yolo(
        images_directory_path=str(tmp_path / "clean" / "images"),
        annotations_directory_path=str(tmp_path / "clean" / "labels"),
        data_yaml_path=str(tmp_path / "clean" / "data.yaml"),
    )
    assert data.classes == clean.classes and set(clean.classes) >= {"wide", "tall"}

    class Interrupting(FakeDetector):
        def detect(self, images, prompts):
            if self.calls == 1:
                raise KeyboardInterrupt
            return super().detect(images, prompts)

    out = tmp_path / "resumed"
    first = label_folder(Pipeline(tagger=FakeTagger(), detector=Interrupting()), src, out,
                         batch_size=2, progress=False)
    assert first.interrupted and first.classes == expected[: len(first.classes)]
    label_folder(pipe(), src, out, batch_size=3, progress=False)
    assert _tree(out) == _tree(tmp_path / "clean")


def test_pipeline_failure_skips_only_that_image(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_good_folder(src, 6)  # widths 40 and 48 alternate
    (src / "zzz.png").write_bytes((src / "img1.png").read_bytes() if (src / "img1.png").exists()
                                  else (src / "sub" / "img1.png").read_bytes())
    pipe = Pipeline(detector=FakeDetector(fail_on_width=999))
    report = label_folder(pipe, src, tmp_path / "ok", classes="cat", progress=False)
    assert report.exit_code == 0
    # fails on every 48-wide image, but the 40-wide first image succeeds first
    pipe = Pipeline(detector=FakeDetector(fail_on_width=48))
    report = label_folder(pipe, src, tmp_path / "out", classes="cat", batch_size=2, progress=False)
    assert report.exit_code == 1 and report.done_this_run == 3
    assert all("pipeline failed" in s["reason"] for s in report.skipped)


def test_setup_errors_stop_the_run_before_the_first_image(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_good_folder(src, 4)

    class Broken(FakeDetector):
        def load(self):
            raise RuntimeError("weights do not fit the model")

    detector = Broken()
    with pytest.raises(RuntimeError, match="weights"):
        label_folder(Pipeline(detector=detector), src, tmp_path / "o1",
                     classes="cat", batch_size=1, progress=False)
    assert detector.calls == 0 and not (tmp_path / "o1").exists()
    with pytest.raises(ValueError, match="segmenter"):
        label_folder(Pipeline(detector=FakeDetector()), src, tmp_path / "o2", classes="cat",
                     masks=True, progress=False)
    with pytest.raises(ValueError, match="tagger"):
        label_folder(Pipeline(detector=FakeDetector()), src, tmp_path / "o3", progress=False)


def test_failing_on_the_first_images_never_ends_the_run(tmp_path: Path) -> None:
    """Three thin images before the first good one used to count as a setup failure."""
    src = tmp_path / "src"
    make_good_folder(src, 4)
    for i in range(3):
        np.random.seed(i)
        Image.fromarray(np.zeros((3, 900, 3), np.uint8)).save(src / f"a{i}_thin.png")

    class ThinFails(FakeDetector):
        def detect(self, images, prompts):
            if any(image.shape[0] < 8 for image in images):
                raise ValueError("image too thin for the detector")
            return super().detect(images, prompts)

    report = label_folder(Pipeline(detector=ThinFails()), src, tmp_path / "out", classes="cat",
                          batch_size=1, progress=False)
    assert report.exit_code == 1 and report.images_done == 4
    assert sorted(s["path"] for s in report.skipped) == [f"a{i}_thin.png" for i in range(3)]
    assert all("too thin" in s["reason"] for s in report.skipped)


def test_prompts_of_one_class_share_its_id(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_good_folder(src, 1)
    report = label_folder(Pipeline(detector=FakeDetector(), nms="none"), src, out,
                          classes={"man": "person", "woman": "person", "car": "car"},
                          progress=False)
    assert report.classes == ["person", "car"]
    lines = next((out / "labels").glob("*.txt")).read_text().splitlines()
    assert sorted(int(line.split()[0]) for line in lines) == [0, 0, 1]
    assert np.isclose(float(lines[0].split()[1]), 0.5, atol=0.5)


@pytest.mark.parametrize("mode", ["symlink", "hardlink", "none"])
def test_image_modes(tmp_path: Path, mode: str) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_good_folder(src, 2)
    label_folder(_pipe(), src, out, classes="cat", images=mode, progress=False)
    if mode == "none":
        assert not (out / "images").exists() and len(list((out / "labels").iterdir())) == 2
        return
    linked = out / "images" / "img0.jpg"
    assert linked.read_bytes() == (src / "img0.jpg").read_bytes()
    assert linked.is_symlink() == (mode == "symlink")
    if mode == "hardlink":
        assert linked.stat().st_ino == (src / "img0.jpg").stat().st_ino


def test_write_behind_overlaps_the_next_batch_and_keeps_order(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With write_behind, batches are written on one thread while the models run the next."""
    import threading

    src = tmp_path / "src"
    make_good_folder(src, 6)
    label_folder(_pipe(), src, tmp_path / "clean", classes="cat, dog", masks=True,
                 batch_size=2, progress=False)
    written: list[tuple[str, list[str]]] = []
    release = threading.Event()
    original = runner.DatasetSink.write_batch

    def slow_write(self, items):
        release.wait(timeout=10)  # held until the models have started the next batch
        written.append((threading.current_thread().name, [entry.rel for entry, _, _ in items]))
        return original(self, items)

    class Releasing(FakeDetector):
        def detect(self, images, prompts):
            if self.calls == 1:  # batch 2 is being inferred while batch 1 waits to be written
                release.set()
            return super().detect(images, prompts)

    monkeypatch.setattr(runner.DatasetSink, "write_batch", slow_write)
    report = label_folder(Pipeline(detector=Releasing(), segmenter=FakeSegmenter()), src,
                          tmp_path / "out", classes="cat, dog", masks=True, batch_size=2,
                          progress=False, write_behind=True)
    assert release.is_set() and report.exit_code == 0 and report.done_this_run == 6
    assert all(name.startswith("ovperc-writer") for name, _ in written)
    assert [rel for _, rels in written for rel in rels] == [e.rel for e in scan_images(src)]
    assert _tree(tmp_path / "out") == _tree(tmp_path / "clean")


@pytest.mark.parametrize("write_behind", [False, True])
def test_a_write_error_stops_the_run_and_keeps_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_behind: bool
) -> None:
    src = tmp_path / "src"
    make_good_folder(src, 6)
    original = runner.DatasetSink.write_batch
    batches = []

    def full_disk(self, items):
        batches.append(items)
        if len(batches) == 2:
            raise OSError(28, "No space left on device")
        return original(self, items)

    monkeypatch.setattr(runner.DatasetSink, "write_batch", full_disk)
    with pytest.raises(OSError, match="No space left"):
        label_folder(_pipe(), src, tmp_path / "out", classes="cat, dog", batch_size=2,
                     progress=False, write_behind=write_behind)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["exit_code"] == 2 and "No space left" in report["error"]
    assert report["images_done"] in (2, 4)  # batch 1 kept; batch 3 only if already queued
    monkeypatch.setattr(runner.DatasetSink, "write_batch", original)
    resumed = label_folder(_pipe(), src, tmp_path / "out", classes="cat, dog", batch_size=2,
                           progress=False)
    assert resumed.exit_code == 0 and resumed.images_done == 6


def test_the_summary_says_which_stage_to_change_to_go_faster(tmp_path: Path) -> None:
    from ovperc.labeling.report import SPEED_HINTS
    from ovperc.registry import get_model

    src = tmp_path / "src"
    make_good_folder(src, 3)
    report = label_folder(_pipe(), src, tmp_path / "out", classes="cat", masks=True, progress=False)
    text = report.summary()
    assert "images/s" in text and "%)" in text
    slowest = max(report.time_per_stage, key=report.time_per_stage.get)
    assert f"to go faster: {slowest} takes" in text
    for name in ("omdet-turbo", "sam2.1-tiny"):  # the models the hints name exist
        assert get_model(name).name == name
    assert set(SPEED_HINTS) >= {"decode", "tag", "detect", "segment", "classify", "write"}
