"""Parts of the Ray engine that need no Ray: the install hint, option checks, and the
decode-task -> actor data path (the one used with GPU workers) run in this process."""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import numpy as np
import pytest

from ovperc.cli import main
from ovperc.labeling.ray_worker import CompactResult, Failure, Labeler, decode_row
from ovperc.ontology import Ontology
from tests.labeling.folders import make_good_folder
from tests.ray.pipelines import fake_pipeline


def test_engine_ray_without_ray_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    make_good_folder(tmp_path / "src", 1)
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    code = main(["label", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--classes", "cat",
                 "--engine", "ray", "--no-progress"])
    assert code == 2
    assert 'pip install "ovperc[ray]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing started


@pytest.mark.parametrize("option", [["--num-workers", "2"], ["--gpus-per-worker", "1"],
                                    ["--ray-address", "auto"]])
def test_ray_options_need_engine_ray(tmp_path: Path, option: list[str],
                                     capsys: pytest.CaptureFixture) -> None:
    make_good_folder(tmp_path / "src", 1)
    code = main(["label", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--classes", "cat",
                 *option, "--no-progress"])
    assert code == 2
    assert f"{option[0]} only apply with --engine ray" in capsys.readouterr().err


def test_decode_task_rows_feed_the_labeler_and_results_round_trip(tmp_path: Path) -> None:
    rels = make_good_folder(tmp_path, 2)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    paths = [os.fsencode(str(tmp_path / rel)) for rel in [rels[0], "bad.jpg", rels[1]]]
    row = decode_row({"index": 7, "paths": paths}, max_pixels=10**8)
    labeler = Labeler(fake_pipeline, Ontology(["cat", "dog"]), False, 10**8, 1, 1)
    out = labeler({**row, "paths": paths})
    again = labeler({"index": 7, "paths": paths})  # decoding in the actor gives the same
    import pickle

    first, bad, second = pickle.loads(out["outcomes"])
    assert out["index"] == again["index"] == 7
    for a, b in zip((first, bad, second), pickle.loads(again["outcomes"])):
        if isinstance(a, CompactResult):
            a.timings = b.timings = {}
            np.testing.assert_array_equal(a.xyxy, b.xyxy)
            assert a.names == b.names and a.masks == b.masks
        else:
            assert a == b
    assert bad == Failure("decode", "not an image, or an unsupported image format")
    assert isinstance(first, CompactResult) and first.names == ["cat", "dog"]
    assert first.masks is not None and len(first.masks) == 2
    # what the writer gets back equals what the chain returned
    from ovperc import load_image

    want = fake_pipeline().run_batch([load_image(tmp_path / rels[1])], classes=Ontology(["cat", "dog"]))[0]
    got = second.to_perception()
    assert got.image_size == want.image_size
    np.testing.assert_array_equal(got.detections.xyxy, want.detections.xyxy)
    assert got.detections.xyxy.dtype == want.detections.xyxy.dtype
    np.testing.assert_array_equal(got.detections.confidence, want.detections.confidence)
    np.testing.assert_array_equal(got.detections.mask, want.detections.mask)
    assert list(got.detections.data["class_name"]) == list(want.detections.data["class_name"])


def test_pipeline_errors_in_the_actor_fall_back_to_one_by_one(tmp_path: Path) -> None:
    rels = make_good_folder(tmp_path, 2)  # widths 40 and 48
    paths = [os.fsencode(str(tmp_path / rel)) for rel in rels]
    labeler = Labeler(lambda: fake_pipeline(fail_on_width=48), Ontology(["cat"]), False, 10**8, 1, 1)
    import pickle

    ok, failed = pickle.loads(labeler({"index": 0, "paths": paths})["outcomes"])
    assert isinstance(ok, CompactResult)
    assert failed == Failure("pipeline", "cannot handle width 48", "RuntimeError")
    assert failed.message() == "pipeline failed (RuntimeError: cannot handle width 48)"
