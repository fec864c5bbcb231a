"""Pick a confidence threshold per class from hand labels (``ovperc tune``).

For every candidate threshold (the predictions' confidences, rounded down to 0.01) the
predictions at or above it are matched to the hand labels by supervision's ``Recall``
metric, which gives true positives per class; precision and F1 follow from the counts.
Each class with enough hand boxes gets the threshold that maximises its F1 (or the lowest
one reaching a target precision); the others keep a global default chosen the same way
over all classes together.

Example:
    >>> result = tune_thresholds("auto/", "hand/")  # doctest: +SKIP
    >>> print(format_tuning(result))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ovperc.datasets.scoring import NoScoresError, no_scores_message, pair_datasets
from ovperc.thresholds import ClassThresholds, passes

if TYPE_CHECKING:
    import supervision as sv

#: the IoU thresholds supervision's metrics score at (COCO's 0.50, 0.55, ..., 0.95).
IOU_CHOICES: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
#: hand boxes a class needs for its own threshold (fewer: it keeps the default).
DEFAULT_MIN_SUPPORT = 10


@dataclass
class ClassThreshold:
    """The threshold chosen for one class and the scores it gives on the hand labels.

    Attributes:
        name: the class (``"default (all classes)"`` for the global default).
        support: hand-labelled boxes of the class.
        threshold: the threshold the class gets.
        tuned: ``False`` when the class keeps the default threshold.
        predictions: predicted boxes kept at ``threshold``.
        precision, recall, f1: at ``threshold`` (IoU as tuned).
        ap: average precision over all predictions (``None`` without hand boxes).
        note: why the threshold was kept or a caveat (``""`` when none).
    """

    name: str
    support: int
    threshold: float
    tuned: bool
    predictions: int
    precision: float
    recall: float
    f1: float
    ap: float | None = None
    note: str = ""


@dataclass
class Tuning:
    """The result of :func:`tune_thresholds`.

    Attributes:
        default: the global threshold, chosen over all classes together.
        per_class: one entry per ground-truth class, in class-id order.
        iou: the IoU a prediction needs to match a hand box.
        precision_target: the target precision (``None``: F1 was maximised).
        min_support: hand boxes a class needed for its own threshold.
        images: images on both sides.
        unscored_boxes: predicted boxes without a confidence (counted as 1.0).
        classes: the ground truth's class names.
    """

    default: ClassThreshold
    per_class: list[ClassThreshold]
    iou: float
    precision_target: float | None
    min_support: int
    images: int
    unscored_boxes: int = 0
    classes: list[str] = field(default_factory=list)

    def thresholds(self) -> ClassThresholds:
        """The thresholds to apply: the default plus every tuned class.

        Example:
            >>> tune_thresholds("auto/", "hand/").thresholds().to_dict()  # doctest: +SKIP
            {'default': 0.41, 'classes': {'dog': 0.35}}
        """
        return ClassThresholds({c.name: c.threshold for c in self.per_class if c.tuned},
                               default=self.default.threshold)


def _candidates(predictions: Sequence[sv.Detections]) -> np.ndarray:
    """Every confidence rounded down to 0.01 (float32 0.34999999 counts as 0.35), ascending.

    ``[0.0]`` without predictions.
    """
    conf = np.concatenate([np.asarray(p.confidence, dtype=np.float64) for p in predictions if len(p)]
                          + [np.zeros(0)])
    if len(conf) == 0:
        return np.array([0.0])
    return np.unique(np.floor(np.clip(conf, 0.0, 1.0) * 100 + 1e-3) / 100)


def _counts(predictions: Sequence[sv.Detections], targets: Sequence[sv.Detections], n_classes: int,
            iou_index: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(true positives, predictions) per class with only the predictions >= ``threshold``."""
    from supervision.metrics import Recall

    kept = [p[passes(p.confidence, threshold)] if len(p) else p for p in predictions]
    n_pred = np.bincount(np.concatenate([np.asarray(k.class_id, dtype=int) for k in kept]
                                        + [np.zeros(0, dtype=int)]), minlength=n_classes)
    n_gt = np.bincount(np.concatenate([np.asarray(t.class_id, dtype=int) for t in targets]
                                      + [np.zeros(0, dtype=int)]), minlength=n_classes)
    tp = np.zeros(n_classes, dtype=int)
    if n_pred.sum() and n_gt.sum():
        result = Recall().update(kept, list(targets)).compute()
        for cid, row in zip(result.matched_classes, result.recall_per_class):
            tp[int(cid)] = int(round(float(row[iou_index]) * n_gt[int(cid)]))
    return tp, n_pred


def _scores(tp: int, n_pred: int, n_gt: int) -> tuple[float, float, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gt if n_gt else 0.0
    f1 = 2 * tp / (n_pred + n_gt) if n_pred + n_gt else 0.0
    return precision, recall, f1


def _choose(thresholds: np.ndarray, tp: np.ndarray, n_pred: np.ndarray, n_gt: int,
            precision_target: float | None) -> tuple[int, str]:
    """Index of the chosen threshold for one column of counts, and a note.

    The best F1 (ties: the one keeping more boxes), or the lowest threshold reaching the
    target precision; then raised as far as it keeps the same boxes, i.e. to the rounded
    confidence of the least confident box kept.
    """
    scores = [_scores(int(t), int(p), n_gt) for t, p in zip(tp, n_pred)]
    note = ""
    if precision_target is None:
        best = max(range(len(scores)), key=lambda i: (scores[i][2], -i))
    else:
        reaching = [i for i, (p, _, _) in enumerate(scores) if p >= precision_target and n_pred[i]]
        if reaching:
            best = reaching[0]
        else:
            best = max(range(len(scores)), key=lambda i: (scores[i][0], -i))
            note = f"precision {precision_target:g} not reached: the most precise threshold"
    while best + 1 < len(thresholds) and n_pred[best + 1] == n_pred[best]:
        best += 1
    if not note and n_pred[best] and n_pred[best] == n_pred[0]:
        note = "keeps every box: labelling with a lower --box-threshold may find more"
    return best, note


def tune_thresholds(
    predictions: str | Path,
    ground_truth: str | Path,
    *,
    iou: float = 0.5,
    precision: float | None = None,
    min_support: int = DEFAULT_MIN_SUPPORT,
    pred_format: str = "auto",
    gt_format: str = "auto",
    class_map: Mapping[str, str] | None = None,
) -> Tuning:
    """Choose per-class confidence thresholds for ``predictions`` against hand labels.

    Args:
        predictions: the auto-labelled dataset (its boxes need confidences).
        ground_truth: the hand-labelled dataset, kept apart from training.
        iou: IoU a prediction needs to match a hand box, one of :data:`IOU_CHOICES`.
        precision: pick the lowest threshold whose precision reaches this (``None``:
            the threshold with the best F1).
        min_support: hand boxes a class needs for its own threshold; classes with fewer
            keep the default, chosen over all classes together.
        pred_format, gt_format, class_map: as in :func:`~ovperc.datasets.scoring.evaluate`.

    Raises:
        NoScoresError: no predicted box carries a confidence.
        ValueError: an ``iou``, ``precision`` or ``min_support`` out of range, or the
            datasets cannot be paired (see :func:`~ovperc.datasets.scoring.pair_datasets`).

    Example:
        >>> result = tune_thresholds("auto/", "hand/", precision=0.9)  # doctest: +SKIP
        >>> result.thresholds().threshold("dog")  # doctest: +SKIP
        0.47
    """
    from supervision.metrics import MeanAveragePrecision

    matching = [c for c in IOU_CHOICES if math.isclose(c, iou)]
    if not matching:
        raise ValueError(f"iou must be one of {list(IOU_CHOICES)}, got {iou}")
    if precision is not None and not 0.0 < precision <= 1.0:
        raise ValueError(f"precision must be in (0, 1], got {precision}")
    if min_support < 1:
        raise ValueError(f"min_support must be 1 or more, got {min_support}")
    iou_index = IOU_CHOICES.index(matching[0])

    paired = pair_datasets(predictions, ground_truth, pred_format=pred_format, gt_format=gt_format,
                           class_map=class_map)
    if not paired.has_scores:
        raise NoScoresError(no_scores_message(predictions))
    preds, gts, classes = paired.predictions, paired.targets, paired.classes
    n = len(classes)
    n_gt = np.bincount(np.concatenate([np.asarray(t.class_id, dtype=int) for t in gts]
                                      + [np.zeros(0, dtype=int)]), minlength=n)
    thresholds = _candidates(preds)
    counts = [_counts(preds, gts, n, iou_index, float(t)) for t in thresholds]
    tp = np.stack([c[0] for c in counts])  # (thresholds, classes)
    n_pred = np.stack([c[1] for c in counts])

    ap: dict[int, float] = {}
    if n_gt.sum():
        result = MeanAveragePrecision().update(preds, gts).compute()
        ap = {int(c): max(float(row[iou_index]), 0.0)
              for c, row in zip(result.matched_classes, result.ap_per_class)}

    def entry(name: str, i: int, tp_col: np.ndarray, pred_col: np.ndarray, support: int,
              tuned: bool, note: str, class_ap: float | None) -> ClassThreshold:
        p, r, f1 = _scores(int(tp_col[i]), int(pred_col[i]), support)
        return ClassThreshold(name, support, float(thresholds[i]), tuned, int(pred_col[i]),
                              p, r, f1, class_ap, note)

    all_tp, all_pred, all_gt = tp.sum(1), n_pred.sum(1), int(n_gt.sum())
    d_index, d_note = _choose(thresholds, all_tp, all_pred, all_gt, precision)
    default = entry("default (all classes)", d_index, all_tp, all_pred, all_gt, True, d_note, None)
    per_class = []
    for cid, name in enumerate(classes):
        support = int(n_gt[cid])
        class_ap = ap.get(cid) if support else None
        if support >= min_support:
            i, note = _choose(thresholds, tp[:, cid], n_pred[:, cid], support, precision)
            per_class.append(entry(name, i, tp[:, cid], n_pred[:, cid], support, True, note, class_ap))
        else:
            note = f"support {support} < {min_support}: default"
            per_class.append(entry(name, d_index, tp[:, cid], n_pred[:, cid], support, False, note,
                                   class_ap))
    return Tuning(default, per_class, matching[0], precision, min_support, len(paired.keys),
                  paired.unscored_boxes, classes)


def _fmt(value: float | None) -> str:
    return "    -" if value is None else f"{value:.3f}"


def format_tuning(result: Tuning) -> str:
    """A plain-text table: class, threshold, P, R, F1, AP, support and notes.

    Example:
        >>> print(format_tuning(tune_thresholds("auto/", "hand/")))  # doctest: +SKIP
    """
    goal = (f"lowest threshold with precision >= {result.precision_target:g}"
            if result.precision_target is not None else "threshold with the best F1")
    lines = [f"images: {result.images}  IoU {result.iou:g}  {goal} per class "
             f"(own threshold from {result.min_support} hand boxes)"]
    if result.unscored_boxes:
        lines.append(f"predicted boxes without a confidence (counted as 1.0): {result.unscored_boxes}")
    rows = [result.default, *result.per_class]
    width = max(5, *(len(r.name) for r in rows))
    lines.append(f"  {'class':<{width}}  {'thresh':>6}  {'P':>5}  {'R':>5}  {'F1':>5}  "
                 f"{'AP':>5}  {'support':>7}  note")
    for r in rows:
        lines.append(f"  {r.name:<{width}}  {r.threshold:>6.2f}  {_fmt(r.precision)}  "
                     f"{_fmt(r.recall)}  {_fmt(r.f1)}  {_fmt(r.ap)}  {r.support:>7}  {r.note}".rstrip())
    return "\n".join(lines)
