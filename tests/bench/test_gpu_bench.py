"""``bench/gpu.sh`` runs: its smoke mode takes the same code path on tiny models on the cpu."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_bench_smoke_run_prints_rates_and_ratios(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    run = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), "--device", "cpu", "--tiny", "--threads", "1",
         "--json", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    text = run.stdout
    result = json.loads(out.read_text())["results"]
    for batch in ("1", "8"):
        row = result["chain"]["float32"][batch]
        assert row["rate"] > 0 and row["runs"] >= 1 and row["peak_mib"] > 0
        assert f"chain float32  batch {batch}:" in text
    sam = result["sam"]["float32"]
    assert sam["boxes"] == 12
    assert min(sam["one_call"], sam["groups_of_4"], sam["one_by_one"], sam["embed_images_per_s"]) > 0
    # Half precision is GPU only in ovperc: on a cpu those runs are skipped with the reason.
    assert sorted(result["skipped"]) == ["bfloat16", "float16"]
    assert "float16: skipped (dtype float16 needs a GPU" in text
    assert "batch 8 / batch 1 images/s =" in text and "one call / groups of 4 =" in text
    assert "TARGET >= 10 images/s" in text and "not the target's conditions" in text
