"""``bench/peer.sh``'s pieces that run without the peer: equal box counts, the report's ratios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import supervision as sv

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402
import peer_ovperc  # noqa: E402


class _Detector:
    def detect(self, images, prompts):
        return [sv.Detections(xyxy=np.tile([[0.0, 0.0, 4.0, 4.0]], (9, 1)),
                              confidence=np.array([0.1, 0.9, 0.5, 0.3, 0.8, 0.2, 0.7, 0.6, 0.4]))
                for _ in images]


def test_top_boxes_keeps_the_most_confident_per_class_or_per_image():
    [two_classes] = common.TopBoxes(_Detector(), per_class=2).detect([None], [["a", "b"]])
    np.testing.assert_allclose(two_classes.confidence, [0.9, 0.8, 0.7, 0.6])
    [three] = common.TopBoxes(_Detector(), per_image=3).detect([None], [["a"]])
    np.testing.assert_allclose(three.confidence, [0.9, 0.8, 0.7])


def test_report_divides_the_peer_by_each_ovperc_column(tmp_path, capsys):
    def record(side, sam, k, wall, cpu):
        return {"side": side, "sam": sam, "k": k, "image": 0, "wall_s": wall, "cpu_s": cpu, "boxes": 2 * k}

    ours = tmp_path / "ovperc.json"
    ours.write_text(json.dumps({"records": [record("ovperc", "vit_h", 20, 50.0, 100.0),
                                            record("ovperc", "vit_b", 20, 25.0, 40.0)]}))
    peer = tmp_path / "peer.json"
    peer.write_text(json.dumps({"records": [record("peer", "vit_h", 20, 200.0, 400.0)]}))

    [row] = peer_ovperc.report([ours, peer])

    assert row["k"] == 20 and row["peer_vit_h"]["boxes"] == 40
    out = capsys.readouterr().out
    assert "K=20: same models, GD-T + SAM-H: 4.0x (4.0x); ovperc defaults, GD-T + SAM-B: 8.0x (10.0x)" in out


def test_peer_script_parses_and_names_its_steps():
    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "peer.sh")]).returncode == 0
    wrong = subprocess.run(["bash", str(ROOT / "bench" / "peer.sh"), "nonsense"],
                           capture_output=True, text=True)
    assert wrong.returncode == 2 and "usage: bash bench/peer.sh [setup|run]" in wrong.stderr
