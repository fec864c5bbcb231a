"""The Ray engine on a local 2-CPU Ray instance: same dataset as the local engine, resume
across engines, bad files, failing and dying workers."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason='the Ray engine needs Ray: pip install "ovperc[ray]"')
pytest.importorskip("ray.data", reason='the Ray engine needs Ray Data: pip install "ovperc[ray]"')

from ovperc.cli import main  # noqa: E402
from ovperc.labeling import runner  # noqa: E402
from ovperc.labeling.ray_engine import RayEngine  # noqa: E402
from tests.interrupts import ctrl_c_reaches_child  # noqa: E402
from tests.labeling.fakes import FakeDetector, FakeSegmenter  # noqa: E402
from tests.labeling.folders import make_bad_folder, make_good_folder  # noqa: E402
from tests.ray.pipelines import box_filler_pipeline, doomed_pipeline, fake_pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FAKE = {"classes": "cat, dog", "masks": True, "batch_size": 2, "progress": False,
        "signature": {"models": "fake"}}


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs, no dashboard) for the module; engines reuse it."""
    if ray.is_initialized():
        ray.shutdown()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1",
                                       "TRANSFORMERS_OFFLINE": "1"}})
    yield ray
    ray.shutdown()


def _tree(root: Path) -> dict[str, bytes]:
    """Every dataset file (not run state or the report) with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".ovperc" not in p.parts and p.name != "report.json"}


def _done(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / ".ovperc" / "done.jsonl").read_text().splitlines()]


def _report(root: Path) -> dict:
    return json.loads((root / "report.json").read_text())


@pytest.fixture
def one_thread():
    """The local engine on one torch thread, like each 1-CPU actor: the same float sums."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_cli_ray_writes_the_local_dataset_with_bad_files(
        local_ray, one_thread, tmp_path: Path, tiny_grounding_dino: Path, tiny_sam: Path,
        capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "src"
    good, bad = make_bad_folder(src)
    keep = {"rotated.jpg", "a/dup.png", "b/dup.png", "café_日本.png", "cmyk.jpg"}
    for rel in set(good) - keep:
        (src / rel).unlink()
    args = ["label", str(src), "--classes", "cat, dog", "--format", "coco", "--masks",
            "--batch-size", "2", "--no-progress", "--detector", str(tiny_grounding_dino),
            "--segmenter", str(tiny_sam), "--device", "cpu", "--box-threshold", "0.05",
            "--text-threshold", "0.05"]
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main([*args, "--out", str(local)]) == 1  # bad files skipped: exit code 1
    assert main([*args, "--out", str(remote), "--engine", "ray", "--num-workers", "2"]) == 1
    printed = capsys.readouterr().out
    assert f"skipped {len(bad)} images" in printed
    assert _tree(remote) == _tree(local)
    assert (remote / ".ovperc" / "done.jsonl").read_bytes() == (local / ".ovperc" / "done.jsonl").read_bytes()
    assert [r["rel"] for r in _done(remote)] == sorted(keep, key=lambda r: tuple(r.split("/")))
    assert _report(remote)["skipped"] == _report(local)["skipped"]
    assert {s["path"] for s in _report(remote)["skipped"]} == set(bad)
    coco = json.loads((remote / "annotations.json").read_text())
    assert any("segmentation" in a and a["segmentation"] for a in coco["annotations"])


def test_resume_across_engines(local_ray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    make_good_folder(src, 7)
    (src / "img1b.jpg").write_bytes(b"")  # a bad file among them
    clean = runner.label_folder(fake_pipeline(), src, tmp_path / "clean", **FAKE)
    assert clean.images_done == 7
    engine = RayEngine(fake_pipeline, num_workers=2)

    # Ray stopped (Ctrl-C) after two batches are written, then finished by the local engine
    record = runner.ResultRecorder.record
    calls = []

    def interrupting(self, entries, results):
        record(self, entries, results)
        calls.append(len(entries))
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner.ResultRecorder, "record", interrupting)
    first = runner.label_folder(fake_pipeline(), src, tmp_path / "r2l", engine=engine, **FAKE)
    monkeypatch.undo()
    assert first.interrupted and first.images_done == sum(calls) == 3
    second = runner.label_folder(fake_pipeline(), src, tmp_path / "r2l", **FAKE)
    assert second.already_done == 3 and second.done_this_run == 4 and second.exit_code == 1
    assert _tree(tmp_path / "r2l") == _tree(tmp_path / "clean")

    # the local engine stopped after one batch, then finished on Ray
    class Interrupting(FakeDetector):
        def detect(self, images, prompts):
            if self.calls == 1:
                raise KeyboardInterrupt
            return super().detect(images, prompts)

    from ovperc import Pipeline

    stopped = Pipeline(detector=Interrupting(), segmenter=FakeSegmenter())
    first = runner.label_folder(stopped, src, tmp_path / "l2r", **FAKE)
    assert first.interrupted and first.images_done == 1  # img0.jpg (img1b.jpg is empty)
    second = runner.label_folder(fake_pipeline(), src, tmp_path / "l2r", engine=engine, **FAKE)
    assert second.already_done == 1 and second.done_this_run == 6
    assert _tree(tmp_path / "l2r") == _tree(tmp_path / "clean")
    rels = [r["rel"] for r in _done(tmp_path / "l2r")]
    assert len(rels) == len(set(rels)) == 7


def test_dead_worker_is_retried_without_losing_or_repeating_images(local_ray, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_good_folder(src, 6)
    runner.label_folder(fake_pipeline(), src, tmp_path / "clean", format="coco", **FAKE)
    marker = tmp_path / "died"
    engine = RayEngine(functools.partial(fake_pipeline, die_marker=marker), num_workers=2)
    report = runner.label_folder(fake_pipeline(), src, tmp_path / "out", format="coco",
                                 engine=engine, **FAKE)
    assert marker.exists()  # a worker process did die
    assert report.exit_code == 0 and report.done_this_run == 6
    rels = [r["rel"] for r in _done(tmp_path / "out")]
    assert len(rels) == len(set(rels)) == 6
    assert _tree(tmp_path / "out") == _tree(tmp_path / "clean")


def test_a_worker_that_keeps_dying_stops_the_run(local_ray, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_good_folder(src, 2)
    engine = RayEngine(doomed_pipeline, num_workers=1, max_retries=0)
    with pytest.raises(RuntimeError, match="a Ray worker died on the same batch 1 time "):
        runner.label_folder(fake_pipeline(), src, tmp_path / "out", engine=engine, **FAKE)
    assert _report(tmp_path / "out")["exit_code"] == 2
    with pytest.raises(ValueError, match="max_retries"):
        RayEngine(doomed_pipeline, max_retries=-1)


def test_failing_images_and_setup_errors_as_in_the_local_engine(local_ray, tmp_path: Path) -> None:
    src = tmp_path / "src"
    good, bad = make_bad_folder(src)
    engine = RayEngine(functools.partial(fake_pipeline, fail_on_width=30), num_workers=2)
    kwargs = {**FAKE, "batch_size": 3}
    local = runner.label_folder(fake_pipeline(fail_on_width=30), src, tmp_path / "local", **kwargs)
    remote = runner.label_folder(fake_pipeline(), src, tmp_path / "ray", engine=engine, **kwargs)
    failed = [s for s in remote.skipped if "pipeline failed" in s["reason"]]
    assert [s["path"] for s in failed] == ["rotated.jpg"]  # the only 30-pixel-wide image
    assert "RuntimeError: cannot handle width 30" in failed[0]["reason"]
    assert remote.skipped == local.skipped and remote.exit_code == local.exit_code == 1
    assert remote.images_done == len(good) - 1
    assert _tree(tmp_path / "ray") == _tree(tmp_path / "local")

    # failing on the first images is still a per-image failure: the run goes on
    broken = RayEngine(functools.partial(fake_pipeline, fail_on_width=40), num_workers=1)
    report = runner.label_folder(fake_pipeline(), src, tmp_path / "broken", engine=broken, **kwargs)
    assert report.exit_code == 1 and report.images_done > 0
    assert any("cannot handle width 40" in s["reason"] for s in report.skipped)


def test_an_iterator_closed_early_leaves_no_ray_data_thread_running(local_ray) -> None:
    """What a Ctrl-C leaves behind: an iterator closed mid-way; its threads must end before Ray stops."""
    import threading

    from ovperc.labeling.ray_engine import _wait_for_data_threads

    def data_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.ident not in before
                and getattr(getattr(t, "_target", None), "__module__", "").startswith("ray.data")]

    before = {t.ident for t in threading.enumerate()}
    rows = iter(local_ray.data.range(200, override_num_blocks=20).map(lambda r: r).iter_rows())
    next(rows)
    assert data_threads()  # the iterator's prefetcher and workers are running
    rows.close()
    _wait_for_data_threads(before, timeout_s=20)
    assert data_threads() == []


def test_ctrl_c_on_a_ray_run_then_resume_locally(tmp_path: Path, tiny_grounding_dino: Path) -> None:
    """The real command, with its own local Ray instance, stopped by SIGINT mid-run.

    Ray Data's iterator threads must end before Ray stops, or Ray ends the process with
    status 1 ("the core worker has already been shutdown") instead of ovperc's 130.
    """
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "src"
    rels = make_good_folder(src, 24)  # enough that SIGINT after the first lands mid-run
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ovperc", "label", str(src), "--out", str(out),
               "--classes", "cat, dog", "--batch-size", "1", "--no-progress",
               "--detector", str(tiny_grounding_dino), "--device", "cpu",
               "--box-threshold", "0.05"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([*command, "--engine", "ray", "--num-workers", "1"], env=env,
                            cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=ctrl_c_reaches_child)
    log = out / ".ovperc" / "done.jsonl"
    deadline = time.monotonic() + 150
    while not (log.exists() and log.read_text().count("\n") >= 1):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the Ray run did not get going: {proc.communicate()}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "rerun the same command to resume" in stdout + stderr
    first = [r["rel"] for r in _done(out)]
    assert 1 <= len(first) < len(rels)

    finished = subprocess.run(command, env=env, cwd=tmp_path, text=True, capture_output=True,
                              timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert f"{len(first)} done by an earlier run" in finished.stdout
    done = [r["rel"] for r in _done(out)]
    assert done[: len(first)] == first and sorted(done) == sorted(rels) and len(set(done)) == len(rels)
    assert len(list((out / "labels").glob("*.txt"))) == len(rels)


def test_segment_on_ray_writes_what_the_local_engine_writes(local_ray, tmp_path: Path, one_thread) -> None:
    from ovperc.datasets.segment import segment_dataset
    from tests.datasets.helpers import write_coco_gt, write_yolo_gt
    from tests.datasets.test_segment import BOXES, BoxFiller

    for name, write in (("coco", write_coco_gt), ("yolo", write_yolo_gt)):
        src = write(tmp_path / f"in-{name}", BOXES)
        local = segment_dataset(BoxFiller(), src, tmp_path / f"local-{name}", batch_size=2, progress=False)
        engine = RayEngine(box_filler_pipeline, num_workers=1)
        remote = segment_dataset(BoxFiller(), src, tmp_path / f"ray-{name}", batch_size=2, progress=False,
                                 engine=engine)
        assert local.exit_code == remote.exit_code == 0 and remote.images_done == len(BOXES)
        assert _tree(tmp_path / f"ray-{name}") == _tree(tmp_path / f"local-{name}")
