"""`ovperc label` and `ovperc run` through the command line, with tiny real models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from ovperc.cli import build_parser, main
from tests.interrupts import ctrl_c_reaches_child

ROOT = Path(__file__).resolve().parents[2]


def _subparser(name: str):
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices[name]


@pytest.mark.parametrize("command", ["label", "run", "demo"])
def test_help_explains_every_option(command: str, capsys: pytest.CaptureFixture) -> None:
    sub = _subparser(command)
    for action in sub._actions:
        assert action.help and len(action.help) > 10, action.option_strings or action.dest
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--detector", "--segmenter", "--classifier", "--tagger", "--device",
                   "--dtype", "--box-threshold", "--preset"):
        assert option in text
    if command == "label":
        for option in ("--format", "--masks", "--batch-size", "--overwrite", "--classes",
                       "--ontology"):
            assert option in text


def _images(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / ("sub" if i % 2 else "") / f"im{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((32, 40, 3)) * 255).astype(np.uint8)).save(path)


def _dataset(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".ovperc" not in p.parts and p.name != "report.json"}


def _models(tiny_grounding_dino: Path, tiny_sam: Path) -> list[str]:
    return ["--detector", str(tiny_grounding_dino), "--segmenter", str(tiny_sam),
            "--device", "cpu", "--box-threshold", "0.05", "--text-threshold", "0.05"]


def test_label_yolo_masks_and_refusals(tmp_path: Path, tiny_grounding_dino: Path,
                                       tiny_sam: Path, capsys: pytest.CaptureFixture) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    _images(src, 1)
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    args = ["label", str(src), "--out", str(out), "--classes", "cat, dog", "--masks",
            "--no-progress", *_models(tiny_grounding_dino, tiny_sam)]
    assert main(args) == 1  # one bad file: exit code 1
    printed = capsys.readouterr().out
    assert "skipped 1 images" in printed and "broken.jpg" in printed
    dataset = sv.DetectionDataset.from_yolo(
        images_directory_path=str(out / "images"), annotations_directory_path=str(out / "labels"),
        data_yaml_path=str(out / "data.yaml"))
    assert dataset.classes == ["cat", "dog"] and len(dataset) == 1
    _, image, det = dataset[0]
    lines = (out / "labels" / "im0.txt").read_text().splitlines()
    assert len(det) == len(lines) > 0 and det.mask is not None
    tokens = [len(line.split()) for line in lines]
    # polygon lines (a box line only where SAM's mask came out empty)
    assert all(n == 5 or (n >= 7 and n % 2 == 1) for n in tokens) and max(tokens) >= 7
    # other classes against the same folder: refused, nothing changed
    before = _dataset(out)
    assert main([*args[:5], "cat", *args[6:]]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _dataset(out) == before


def test_run_saves_drawing_and_json(tmp_path: Path, tiny_grounding_dino: Path, tiny_sam: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    _images(tmp_path, 1)
    code = main(["run", str(tmp_path / "im0.png"), "--classes", "person, bicycle",
                 "--save", str(tmp_path / "annotated.jpg"), "--json", str(tmp_path / "out.json"),
                 *_models(tiny_grounding_dino, tiny_sam)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "im0.png (40x32)" in printed and "detections" in printed
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["image_size"] == {"width": 40, "height": 32}
    assert data["classes"] == ["person", "bicycle"]
    for box in data["detections"]:
        assert box["class_name"] in ("person", "bicycle") and box["mask"]["size"] == [32, 40]
    with Image.open(tmp_path / "annotated.jpg") as drawn:
        assert drawn.size == (40, 32)
    assert main(["run", str(tmp_path / "missing.png"), "--classes", "cat"]) == 1


@pytest.mark.parametrize("flag", ["--save", "--json"])
def test_run_never_writes_over_the_input_photo(tmp_path: Path, flag: str,
                                              capsys: pytest.CaptureFixture) -> None:
    _images(tmp_path, 1)
    photo = tmp_path / "im0.png"
    before = photo.read_bytes()
    assert main(["run", str(photo), "--classes", "cat", flag, str(photo)]) == 2
    assert "never writes over your photos" in capsys.readouterr().err
    assert photo.read_bytes() == before


def _wait_for_done(log: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("run did not progress in time")


def test_kill_and_ctrl_c_then_resume_equals_clean_run(tmp_path: Path, tiny_grounding_dino: Path,
                                                      tiny_sam: Path) -> None:
    """A real process killed with SIGKILL, one stopped with Ctrl-C, then resumed."""
    src = tmp_path / "src"
    _images(src, 3)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "ovperc", "label", str(src), "--out", str(out),
                "--classes", "cat, dog", "--format", "coco", "--masks", "--batch-size", "1",
                "--no-progress", *_models(tiny_grounding_dino, tiny_sam)]

    def start(out: Path) -> subprocess.Popen:
        return subprocess.Popen(command(out), env=env, cwd=tmp_path, text=True,
                                preexec_fn=ctrl_c_reaches_child,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    clean = start(tmp_path / "clean")  # the uninterrupted run, alongside
    out = tmp_path / "out"
    log = out / ".ovperc" / "done.jsonl"
    killed = start(out)
    _wait_for_done(log, 1, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "annotations.json").exists()  # it never got to the end

    stopped = start(out)
    _wait_for_done(log, 2, stopped)
    stopped.send_signal(signal.SIGINT)
    stdout, stderr = stopped.communicate(timeout=120)
    assert stopped.returncode == 130, stderr
    assert "rerun the same command to resume" in stdout + stderr
    done = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(done) == len({r["rel"] for r in done}) >= 2  # nothing done twice

    finished = subprocess.run(command(out), env=env, cwd=tmp_path, text=True,
                              capture_output=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "done by an earlier run" in finished.stdout

    _, clean_err = clean.communicate(timeout=300)
    assert clean.returncode == 0, clean_err
    assert _dataset(out) == _dataset(tmp_path / "clean")
    coco = json.loads((out / "annotations.json").read_text())
    assert [img["file_name"] for img in coco["images"]] == ["im0.png", "im2.png", "sub__im1.png"]


def test_tags_decide_when_no_classes(tmp_path: Path, tiny_grounding_dino: Path, tiny_clip: str,
                                     capsys: pytest.CaptureFixture) -> None:
    import yaml

    src, out = tmp_path / "src", tmp_path / "out"
    _images(src, 2)
    args = ["label", str(src), "--out", str(out), "--detector", str(tiny_grounding_dino),
            "--tagger", tiny_clip, "--device", "cpu", "--box-threshold", "0.05",
            "--tag-threshold", "0", "--max-tags", "3", "--no-progress"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    names = yaml.safe_load((out / "data.yaml").read_text())["names"]
    assert list(names.values()) == report["classes"] and len(names) >= 1
    ids = {int(line.split()[0]) for p in (out / "labels").glob("*.txt")
           for line in p.read_text().splitlines()}
    assert ids <= set(names)
    before = _dataset(out)
    assert main(args) == 0  # nothing left to do
    assert "2 done by an earlier run" in capsys.readouterr().out
    assert _dataset(out) == before


def test_ontology_file_maps_prompts_to_classes(tmp_path: Path, tiny_grounding_dino: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    _images(src, 1)
    (tmp_path / "onto.yaml").write_text("man: person\nwoman: person\ncar: vehicle\n")
    code = main(["label", str(src), "--out", str(out), "--ontology", str(tmp_path / "onto.yaml"),
                 "--format", "voc", "--detector", str(tiny_grounding_dino), "--device", "cpu",
                 "--box-threshold", "0.05", "--no-progress"])
    assert code == 0
    assert (out / "labels.txt").read_text().splitlines() == ["person", "vehicle"]
    xml = (out / "annotations" / "im0.xml").read_text()
    assert "<name>man</name>" not in xml and "<name>woman</name>" not in xml


@pytest.mark.parametrize(("device", "write_behind"), [("cpu", False), ("cuda", True)])
def test_label_writes_behind_the_models_only_on_a_gpu(
    tmp_path: Path, tiny_grounding_dino: Path, monkeypatch: pytest.MonkeyPatch, device: str,
    write_behind: bool,
) -> None:
    """On a cpu the writer would take cores from the models (bench/RESULTS.md)."""
    import torch

    from ovperc.labeling import runner
    from ovperc.labeling.report import Report

    seen: dict = {}

    def fake_label_folder(*args, **kwargs) -> Report:
        seen.update(kwargs)
        return Report(source="", out="", format="yolo")

    monkeypatch.setattr(runner, "label_folder", fake_label_folder)
    monkeypatch.setattr("ovperc.device.resolve_device", lambda name="auto": torch.device(device))
    _images(tmp_path / "src", 1)
    code = main(["label", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--classes", "cat",
                 "--detector", str(tiny_grounding_dino), "--device", "cpu", "--no-progress"])
    assert code == 0 and seen["write_behind"] is write_behind


def test_overwrite_into_the_source_folder_is_refused_and_loses_nothing(
        tmp_path: Path, tiny_grounding_dino: Path, capsys: pytest.CaptureFixture) -> None:
    """`ovperc label data/images --out data --overwrite` once deleted the user's photos."""
    photos = tmp_path / "data" / "images"
    _images(photos, 2)
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    args = ["label", str(photos), "--out", str(tmp_path / "data"), "--classes", "cat",
            "--no-progress", "--detector", str(tiny_grounding_dino), "--device", "cpu"]
    for extra in ([], ["--overwrite"]):
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert "where ovperc writes" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["images"]


def test_existing_labels_a_hand_dataset_in_place_and_refuses_bad_settings(
        tmp_path: Path, tiny_grounding_dino: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    _images(data / "images", 3)
    (data / "data.yaml").write_text("names: [person]\n")
    (data / "labels").mkdir()
    (data / "labels" / "im0.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    hand = {p: p.read_bytes() for p in [data / "data.yaml", data / "labels" / "im0.txt",
                                        *sorted((data / "images").rglob("*.png"))]}
    args = ["label", str(data / "images"), "--out", str(data), "--classes", "cat", "--no-progress",
            "--detector", str(tiny_grounding_dino), "--device", "cpu", "--box-threshold", "0.05"]
    refused = [(["--existing", "keep", "--merge-iou", "0.3"], "only applies with --existing merge"),
               (["--existing", "keep", "--format", "voc"], "holds YOLO labels"),
               (["--existing", "skip"], "cat is not"),
               ([], "--existing keep, skip or merge")]
    for extra, message in refused:
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--existing", "replace"])
    assert exit_info.value.code == 2 and "invalid choice: 'replace'" in capsys.readouterr().err
    assert not (data / ".ovperc").exists()
    assert main([*args, "--existing", "keep"]) == 0
    assert "2 images" in capsys.readouterr().out
    assert (data / "labels" / "im0.txt").read_bytes() == hand[data / "labels" / "im0.txt"]
    assert all(p.read_bytes() == b for p, b in hand.items() if p.suffix == ".png")
    assert yaml_names(data / "data.yaml") == ["person", "cat"]
    assert {p.name for p in (data / "labels").rglob("*.txt")} == {"im0.txt", "im1.txt", "im2.txt"}


def yaml_names(path: Path) -> list[str]:
    import yaml

    return list(yaml.safe_load(path.read_text())["names"])
