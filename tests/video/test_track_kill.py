"""kill -9 at any moment of a tracking run: the rerun finishes it, nothing lost, duplicated
or left behind, and every output matches a run that was never stopped (ids aside: the
resumed part continues after the ids already written)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ovperc.shapes.world import CLASSES
from ovperc.video.output import DatasetOptions
from ovperc.video.run import track_video
from tests.video.fakes import OracleTracker

ROOT = Path(__file__).resolve().parents[2]

#: a tracking run that dies like ``kill -9`` (``os._exit``) at its N-th file rename.
KILLED_RUN = """
import os, sys
from pathlib import Path
from tests.video.test_track_kill import run
from tests.interrupts import die_at_rename
die_at_rename(int(sys.argv[3]))
run(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def run(video: Path, out: Path):
    from ovperc.shapes.motion import generate_clip

    clip = generate_clip(seed=5, frames=16, size=(96, 72), radius=(9.0, 14.0))  # the small_clip fixture
    return track_video(OracleTracker(clip), video, out, classes=list(CLASSES), chunk_frames=5,
                       dataset=DatasetOptions(every=3, format="coco"))


def _rows(out: Path) -> list[tuple]:
    """MOT rows without the id: what must match a fresh run exactly."""
    return sorted(tuple(line.split(",")[:1] + line.split(",")[2:])
                  for line in (out / "tracks.txt").read_text().splitlines())


def _files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*")
            if p.is_file() and ".ovperc" not in p.parts and p.name != "report.json"}


def test_kill_at_any_rename_then_rerun_equals_a_fresh_run(tmp_path: Path, small_video: Path,
                                                          small_clip) -> None:
    fresh = run(small_video, tmp_path / "fresh")
    assert fresh.exit_code == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(0)
    killed = 0
    for at in sorted(rng.sample(range(1, 46), 4)):  # a whole run renames 47 files
        out = tmp_path / f"at{at}"
        done = subprocess.run([sys.executable, "-c", KILLED_RUN, str(small_video), str(out), str(at)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode in (0, 9), done.stderr
        killed += done.returncode == 9
        report = run(small_video, out)
        assert report.exit_code == 0 and report.frames_done == len(small_clip), (at, report.summary())
        assert _rows(out) == _rows(tmp_path / "fresh"), at
        assert _files(out) == _files(tmp_path / "fresh"), at
        leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
        assert leftovers == [], at
        ids = [Image.open(out / "masks" / f"{i:06d}.png").getextrema()[1] for i in range(len(small_clip))]
        assert all(ids)  # every frame's id PNG is complete
        coco = json.loads((out / "dataset" / "annotations.json").read_text())
        assert len(coco["images"]) == len(range(0, len(small_clip), 3))
    assert killed >= 3  # the runs were really stopped part way


@pytest.mark.parametrize("chunk_frames", [1, 7])
def test_chunk_size_does_not_change_the_outputs(tmp_path: Path, small_video: Path, small_clip,
                                                chunk_frames: int) -> None:
    out = tmp_path / "out"
    report = track_video(OracleTracker(small_clip), small_video, out, classes=list(CLASSES),
                         chunk_frames=chunk_frames)
    assert report.exit_code == 0
    track_video(OracleTracker(small_clip), small_video, tmp_path / "ref", classes=list(CLASSES))
    assert (out / "tracks.txt").read_text() == (tmp_path / "ref" / "tracks.txt").read_text()
