"""Tracking scores against ground truth: MOTA, IDF1, id switches (CLEAR MOT and identity
metrics, computed by ``motmetrics``).

Objects are matched per frame by box IoU (or mask IoU with ``masks=True``); a pair below
``iou`` never matches. ``motmetrics`` is imported only when a score is asked for
(``pip install "ovperc[track]"``). Its own IoU helper uses ``np.asfarray``, gone in NumPy 2,
so the distance matrices are computed here and only its accumulator and metrics are used.

Example:
    >>> scores = score_tracks(ground_truth, predicted)  # doctest: +SKIP
    >>> scores.mota, scores.idf1, scores.id_switches  # doctest: +SKIP
    (0.93, 0.96, 0)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ovperc.video.types import FrameTracks


@dataclass(frozen=True)
class TrackingScores:
    """Scores of predicted tracks against ground truth over a clip.

    Attributes:
        mota: multiple object tracking accuracy, ``1 - (misses + false positives +
            id switches) / ground-truth objects`` (can be negative).
        motp: mean IoU of the matched pairs.
        idf1: identity F1: how much of the ground truth is covered by the right id.
        id_switches: times a ground-truth object's matched predicted id changed.
        precision, recall: of the matched objects over all frames.
        misses, false_positives: unmatched ground-truth and predicted objects.
        ground_truth: ground-truth objects over all frames.
        frames: frames scored.
    """

    mota: float
    motp: float
    idf1: float
    id_switches: int
    precision: float
    recall: float
    misses: int
    false_positives: int
    ground_truth: int
    frames: int

    def to_dict(self) -> dict[str, Any]:
        """The scores as a JSON-ready dict."""
        return asdict(self)


def iou_distances(truth: np.ndarray, predicted: np.ndarray, *, max_distance: float) -> np.ndarray:
    """``1 - IoU`` between every pair of boxes (``xyxy``) or masks (``N x H x W``), ``nan``
    where it is above ``max_distance`` (that pair may not match).

    Example:
        >>> iou_distances(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 5]]), max_distance=0.6)
        array([[0.5]])
    """
    if truth.ndim == 3:
        a = truth.reshape(len(truth), -1).astype(np.float64)
        b = predicted.reshape(len(predicted), -1).astype(np.float64)
        inter = a @ b.T
        union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    else:
        a, b = np.asarray(truth, np.float64).reshape(-1, 4), np.asarray(predicted, np.float64).reshape(-1, 4)
        lt = np.maximum(a[:, None, :2], b[None, :, :2])
        rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
        inter = np.clip(rb - lt, 0, None).prod(-1)
        area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
        area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
        union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = 1.0 - np.where(union > 0, inter / union, 0.0)
    return np.where(distance > max_distance, np.nan, distance)


def score_tracks(
    truth: Iterable[FrameTracks],
    predicted: Iterable[FrameTracks],
    *,
    iou: float = 0.5,
    masks: bool = False,
    by_class: bool = False,
) -> TrackingScores:
    """MOTA, IDF1 and id switches of ``predicted`` against ``truth``, frame by frame.

    Frames are paired by :attr:`FrameTracks.index`; a frame present on one side only counts
    all its objects as misses (or false positives).

    Args:
        truth: ground-truth tracks (``tracker_id`` is the true identity).
        predicted: the tracker's output.
        iou: least IoU for a predicted object to match a true one (0.5 is the MOT standard).
        masks: match by mask IoU (both sides need masks) instead of box IoU.
        by_class: only objects of the same class name may match.

    Raises:
        ImportError: ``motmetrics`` is not installed (``pip install "ovperc[track]"``).

    Example:
        >>> score_tracks(clip.ground_truth(), tracker.track(frames)).idf1  # doctest: +SKIP
        0.97
    """
    motmetrics = _motmetrics()
    accumulator = _accumulate(motmetrics, truth, predicted, iou=iou, masks=masks, by_class=by_class)
    metrics = ["mota", "motp", "idf1", "num_switches", "precision", "recall", "num_misses",
               "num_false_positives", "num_objects", "num_frames"]
    row = motmetrics.metrics.create().compute(accumulator, metrics=metrics, name="clip").iloc[0]
    return TrackingScores(
        mota=_number(row["mota"]), motp=1.0 - _number(row["motp"]) if row["num_objects"] else 0.0,
        idf1=_number(row["idf1"]), id_switches=int(row["num_switches"]),
        precision=_number(row["precision"]), recall=_number(row["recall"]),
        misses=int(row["num_misses"]), false_positives=int(row["num_false_positives"]),
        ground_truth=int(row["num_objects"]), frames=int(row["num_frames"]),
    )


def matched_ids(
    truth: Iterable[FrameTracks],
    predicted: Iterable[FrameTracks],
    *,
    iou: float = 0.5,
    masks: bool = False,
) -> dict[int, dict[int, int]]:
    """Which predicted id each true object was matched to, frame by frame (the same
    matching :func:`score_tracks` scores): ``{frame index: {true id: predicted id}}``.

    Example:
        >>> matched_ids(clip.ground_truth(), tracks)[12]  # doctest: +SKIP
        {1: 1, 2: 2, 5: 4}
    """
    motmetrics = _motmetrics()
    accumulator = _accumulate(motmetrics, truth, predicted, iou=iou, masks=masks, by_class=False)
    events = accumulator.mot_events
    found: dict[int, dict[int, int]] = {}
    for (frame, _), row in events[events["Type"].isin(["MATCH", "SWITCH"])].iterrows():
        found.setdefault(int(frame), {})[int(row["OId"])] = int(row["HId"])
    return found


def read_mot(path: str | os.PathLike) -> list[FrameTracks]:
    """Read a MOT-challenge file (``frame,id,x,y,w,h,conf,...``, frames from 1) as tracks.

    Rows whose 7th value is 0 are left out (in MOT ground truth that marks an object not
    to be scored). Frames with no row are not listed.

    Raises:
        ValueError: a row that is not MOT (the message names the line).

    Example:
        >>> read_mot("gt/gt.txt")[0].detections.tracker_id  # doctest: +SKIP
        array([1, 2, 3])
    """
    import supervision as sv

    rows: dict[int, list[tuple[int, list[float], float]]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.replace(" ", "").strip().split(",")
            try:
                frame, track_id = int(float(fields[0])), int(float(fields[1]))
                x, y, w, h = (float(v) for v in fields[2:6])
                score = float(fields[6]) if len(fields) > 6 else 1.0
            except (ValueError, IndexError):
                raise ValueError(f"{path}:{number}: not a MOT row (frame,id,x,y,w,h,conf,...): "
                                 f"{line.strip()[:80]!r}") from None
            if len(fields) > 6 and score == 0:
                continue
            rows.setdefault(frame - 1, []).append((track_id, [x, y, x + w, y + h], score))
    out = []
    for index in sorted(rows):
        items = rows[index]
        det = sv.Detections(xyxy=np.array([b for _, b, _ in items], np.float32).reshape(-1, 4),
                            confidence=np.array([c for _, _, c in items], np.float32),
                            tracker_id=np.array([i for i, _, _ in items], int))
        out.append(FrameTracks(index, None, (0, 0), det, False, []))
    return out


def _motmetrics() -> Any:
    try:
        import motmetrics
    except ImportError as error:
        raise ImportError('tracking scores need motmetrics: pip install "ovperc[track]"') from error
    return motmetrics


def _accumulate(motmetrics: Any, truth: Iterable[FrameTracks], predicted: Iterable[FrameTracks], *,
                iou: float, masks: bool, by_class: bool) -> Any:
    if not 0 < iou <= 1:
        raise ValueError(f"iou must be above 0 and at most 1, got {iou}")
    accumulator = motmetrics.MOTAccumulator(auto_id=False)
    truth_by_index = {t.index: t for t in truth}
    predicted_by_index = {p.index: p for p in predicted}
    for index in sorted(set(truth_by_index) | set(predicted_by_index)):
        true_ids, true_geo, true_names = _objects(truth_by_index.get(index), masks)
        pred_ids, pred_geo, pred_names = _objects(predicted_by_index.get(index), masks)
        if len(true_ids) and len(pred_ids):
            distances = iou_distances(true_geo, pred_geo, max_distance=1.0 - iou)
            if by_class:
                distances[np.asarray(true_names)[:, None] != np.asarray(pred_names)[None, :]] = np.nan
        else:
            distances = np.empty((len(true_ids), len(pred_ids)))
        accumulator.update(true_ids.tolist(), pred_ids.tolist(), distances, frameid=index)
    return accumulator


def _objects(tracks: FrameTracks | None, masks: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if tracks is None or len(tracks.detections) == 0:
        return np.zeros(0, dtype=int), np.zeros((0, 4)), []
    det = tracks.detections
    if det.tracker_id is None:
        raise ValueError(f"frame {tracks.index}: detections have no tracker_id to score")
    if masks and det.mask is None:
        raise ValueError(f"frame {tracks.index}: masks=True but the detections have no masks")
    names = [str(n) for n in det.data.get("class_name", [""] * len(det))]
    return np.asarray(det.tracker_id, dtype=int), det.mask if masks else det.xyxy, names


def _number(value: Any) -> float:
    value = float(value)
    return 0.0 if np.isnan(value) else value
