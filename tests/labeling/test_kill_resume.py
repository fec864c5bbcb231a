"""kill -9 at any moment, SOURCE changed or not: the rerun's dataset equals a fresh run's."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.labeling.folders import make_good_folder
from tests.labeling.test_safety import dataset_files, label

ROOT = Path(__file__).resolve().parents[2]

#: runs a labelling that dies like ``kill -9`` (``os._exit``) at its N-th file rename.
KILLED_RUN = """
import os, sys
from tests.labeling.test_safety import label
from tests.interrupts import die_at_rename
die_at_rename(int(sys.argv[3]))
label(__import__("pathlib").Path(sys.argv[1]), __import__("pathlib").Path(sys.argv[2]),
      format=sys.argv[4], masks=True, mask_png=sys.argv[4] == "yolo", batch_size=2, classes=None
      if sys.argv[5] == "tags" else "cat, dog")
"""


def _killed_run(src: Path, out: Path, at: int, fmt: str, classes: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, str(src), str(out), str(at), fmt, classes],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 9), done.stderr
    return done.returncode


def _change(src: Path, rels: list[str], how: str) -> None:
    if how == "delete":
        (src / rels[1]).unlink()
    elif how == "add":
        Image.fromarray(np.full((30, 44, 3), 200, np.uint8)).save(src / "aaa_first.png")
    elif how == "modify":
        Image.fromarray(np.full((36, 52, 3), 10, np.uint8)).save(src / rels[0])


@pytest.mark.parametrize(("fmt", "change"), [("yolo", None), ("coco", "delete"), ("voc", "modify"),
                                             ("yolo", "add")])
def test_kill_at_any_rename_then_rerun_equals_a_fresh_run(tmp_path: Path, fmt: str, change: str | None,
                                                          ) -> None:
    rng = random.Random(f"{fmt}{change}")
    for at in sorted(rng.sample(range(1, 40), 4)):
        case = tmp_path / f"at{at}"
        src = case / "src"
        rels = make_good_folder(src, 6)
        killed = _killed_run(src, case / "out", at, fmt, "classes") == 9
        if change:
            _change(src, rels, change)
        report = label(src, case / "out", format=fmt, masks=True, mask_png=fmt == "yolo", batch_size=3)
        fresh = label(src, case / "fresh", format=fmt, masks=True, mask_png=fmt == "yolo")
        assert report.exit_code == fresh.exit_code == 0, (at, report.skipped)
        assert dataset_files(case / "out") == dataset_files(case / "fresh"), (at, killed)
        leftovers = [p for p in (case / "out").rglob("*") if p.name.endswith(".tmp")]
        assert leftovers == [], at


def test_tag_classes_stay_exact_when_an_image_that_added_a_class_is_gone(tmp_path: Path) -> None:
    from ovperc import Pipeline
    from ovperc.labeling import runner
    from tests.labeling.fakes import FakeDetector, FakeTagger

    src = tmp_path / "src"
    make_good_folder(src, 4)
    Image.fromarray(np.full((20, 40, 3), (250, 0, 0), np.uint8)).save(src / "a_red.png")

    def run(out: Path):
        return runner.label_folder(Pipeline(tagger=FakeTagger(), detector=FakeDetector()), src, out,
                                   signature={"models": "fake"}, progress=False)

    run(tmp_path / "out")
    (src / "a_red.png").unlink()
    report = run(tmp_path / "out")
    fresh = run(tmp_path / "fresh")
    assert report.classes == fresh.classes
    assert dataset_files(tmp_path / "out") == dataset_files(tmp_path / "fresh")


def test_tag_classes_stay_exact_when_an_image_with_a_new_class_is_added_before(tmp_path: Path) -> None:
    """Tags decide the classes: an added image that sorts first and names a new class."""
    from ovperc import Pipeline
    from ovperc.labeling import runner
    from tests.labeling.fakes import FakeDetector, FakeTagger

    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):  # green and wide
        Image.fromarray(np.full((20, 30 + i, 3), (0, 200, 0), np.uint8)).save(src / f"b{i}.png")

    def run(out: Path):
        return runner.label_folder(Pipeline(tagger=FakeTagger(), detector=FakeDetector()), src, out,
                                   signature={"models": "fake"}, progress=False)

    run(tmp_path / "out")
    Image.fromarray(np.full((40, 20, 3), (250, 0, 0), np.uint8)).save(src / "a_red_tall.png")
    report = run(tmp_path / "out")
    fresh = run(tmp_path / "fresh")
    assert fresh.classes[:2] == ["red thing", "tall"]
    assert report.classes == fresh.classes
    assert dataset_files(tmp_path / "out") == dataset_files(tmp_path / "fresh")


def test_a_dataset_from_the_previous_release_resumes_over_a_changed_folder(tmp_path: Path) -> None:
    """Manifest records of 0.1 listed neither their files nor their classes' order."""
    import json

    src = tmp_path / "src"
    rels = make_good_folder(src, 5)
    out = tmp_path / "out"
    label(src, out, format="voc", masks=True)
    log = out / ".ovperc" / "done.jsonl"
    old = [{k: v for k, v in json.loads(line).items() if k in ("rel", "stem", "counts")}
           for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps(r) + "\n" for r in old))
    (src / rels[2]).unlink()
    report = label(src, out, format="voc", masks=True)
    fresh = label(src, tmp_path / "fresh", format="voc", masks=True)
    assert report.exit_code == fresh.exit_code == 0
    assert dataset_files(out) == dataset_files(tmp_path / "fresh")
