"""Tracking scores: MOTA, IDF1 and id switches through motmetrics on NumPy 2."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("motmetrics")

from ovperc.video.metrics import iou_distances, score_tracks  # noqa: E402


def _relabel(tracks, mapping, since=0):
    out = []
    for t in tracks:
        det = t.detections[:]
        if t.index >= since and len(det):
            det.tracker_id = np.array([mapping.get(int(i), int(i)) for i in det.tracker_id])
        out.append(dataclasses.replace(t, detections=det))
    return out


def test_perfect_tracks_score_one(small_clip):
    truth = list(small_clip.ground_truth())
    scores = score_tracks(truth, _relabel(truth, {1: 41, 2: 42}))  # ids are names, not numbers
    assert (scores.mota, scores.idf1, scores.id_switches) == (1.0, 1.0, 0)
    assert scores.ground_truth == sum(len(t.detections) for t in truth)
    assert score_tracks(truth, truth, masks=True, by_class=True).mota == 1.0


def test_an_id_switch_is_counted(small_clip):
    truth = list(small_clip.ground_truth())
    scores = score_tracks(truth, _relabel(truth, {1: 99}, since=8))
    assert scores.id_switches == 1
    assert scores.mota < 1.0 and scores.idf1 < 0.95


def test_missing_frames_are_misses(small_clip):
    truth = list(small_clip.ground_truth())
    scores = score_tracks(truth, truth[:8])
    assert scores.recall == pytest.approx(sum(len(t.detections) for t in truth[:8]) / scores.ground_truth)
    assert scores.false_positives == 0


def test_iou_distances_boxes_and_masks():
    boxes = iou_distances(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 5], [20, 20, 30, 30]]),
                          max_distance=0.6)
    assert boxes[0, 0] == pytest.approx(0.5) and np.isnan(boxes[0, 1])
    a = np.zeros((1, 4, 4), bool)
    a[0, :2] = True
    b = np.ones((1, 4, 4), bool)
    assert iou_distances(a, b, max_distance=1.0)[0, 0] == pytest.approx(0.5)


def test_mot_files_read_back(tmp_path, small_clip):
    from ovperc.video.metrics import read_mot
    from ovperc.video.writers import mot_lines

    truth = list(small_clip.ground_truth())
    lines = [line for t in truth for line in mot_lines(t)]
    lines.append("3,77,1,1,5,5,0,-1,-1,-1")  # a row MOT ground truth marks "not scored"
    (tmp_path / "gt.txt").write_text("\n".join(lines) + "\n")
    back = read_mot(tmp_path / "gt.txt")
    assert [t.index for t in back] == [t.index for t in truth if len(t.detections)]
    assert score_tracks(truth, back).mota == 1.0
    (tmp_path / "bad.txt").write_text("1,2,3\n")
    with pytest.raises(ValueError, match="bad.txt:1: not a MOT row"):
        read_mot(tmp_path / "bad.txt")
