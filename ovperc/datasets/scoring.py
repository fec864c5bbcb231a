"""Score a labelled dataset (e.g. auto-labels) against a ground-truth dataset.

Matching and averaging are supervision's (``supervision.metrics``: COCO-style
``MeanAveragePrecision``, ``Precision`` and ``Recall``); this module pairs the images of
the two datasets by key, maps class names onto the ground truth's class ids and formats
the result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ovperc.datasets.class_map import (  # noqa: F401  (ClassMismatchError, parse_class_map: public here too)
    ClassMismatchError,
    check_classes,
    parse_class_map,
    read_class_map,
    rename_classes,
)
from ovperc.datasets.io import load_dataset

if TYPE_CHECKING:
    import supervision as sv

logger = logging.getLogger(__name__)

Target = Literal["boxes", "masks"]
#: confidence thresholds ``--sweep`` reports when none are given.
DEFAULT_SWEEP: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class NoScoresError(ValueError):
    """A confidence threshold was asked for but no predicted box carries a confidence."""


@dataclass
class ClassScores:
    """Scores of one ground-truth class (IoU 0.5 for precision and recall).

    ``ap50``/``ap50_95`` are ``None`` for a class without ground-truth instances.
    """

    name: str
    ground_truth: int
    predictions: int
    ap50: float | None
    ap50_95: float | None
    precision: float
    recall: float


@dataclass
class Scores:
    """mAP and per-class scores for boxes or masks.

    Attributes:
        target: ``"boxes"`` or ``"masks"``.
        map50: mAP at IoU 0.5 (COCO 101-point interpolation).
        map50_95: mAP averaged over IoU 0.50, 0.55, ..., 0.95.
        precision: TP / (TP + FP) over all classes at IoU 0.5.
        recall: TP / (TP + FN) over all classes at IoU 0.5.
        per_class: one entry per ground-truth class, in class-id order.
    """

    target: Target
    map50: float
    map50_95: float
    precision: float
    recall: float
    per_class: list[ClassScores] = field(default_factory=list)


@dataclass
class SweepPoint:
    """Box scores when only predictions with ``confidence >= threshold`` are kept."""

    threshold: float
    predictions: int
    map50: float
    map50_95: float
    precision: float
    recall: float
    f1: float


@dataclass
class Evaluation:
    """The result of :func:`evaluate`.

    Attributes:
        classes: the ground truth's class names (ids are their indices).
        images: number of images scored (present on both sides).
        boxes: box scores.
        masks: mask scores, when both datasets have masks.
        missing_in_predictions: keys of ground-truth images the predictions lack.
        missing_in_ground_truth: keys of predicted images the ground truth lacks.
        sweep: box scores at several confidence thresholds (``None`` unless asked).
        class_map: the prediction class renames applied.
        predicted_boxes: predicted boxes scored.
        unscored_boxes: how many of them were read without a confidence (each counted as
            1.0); when that is all of them, AP does not rank anything (see :attr:`has_scores`).
    """

    classes: list[str]
    images: int
    boxes: Scores
    masks: Scores | None = None
    missing_in_predictions: list[str] = field(default_factory=list)
    missing_in_ground_truth: list[str] = field(default_factory=list)
    sweep: list[SweepPoint] | None = None
    class_map: dict[str, str] = field(default_factory=dict)
    predicted_boxes: int = 0
    unscored_boxes: int = 0

    @property
    def has_scores(self) -> bool:
        """False when predicted boxes exist and none of them carries a confidence."""
        return not (self.predicted_boxes and self.unscored_boxes == self.predicted_boxes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict.

        Example:
            >>> json.dumps(evaluation.to_dict())  # doctest: +SKIP
        """
        return _clean_floats({**asdict(self), "has_scores": self.has_scores})


def _clean_floats(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_floats(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


def _count_unscored(dets: Sequence[sv.Detections]) -> int:
    """Boxes without a confidence; they get 1.0 (every box counts as sure)."""
    unscored = 0
    for det in dets:
        if det.confidence is None:
            unscored += len(det)
            det.confidence = np.ones(len(det), dtype=np.float32)
    return unscored


# ---------------------------------------------------------------------- scoring
def _has_masks(dets: Sequence[sv.Detections]) -> bool:
    return any(len(d) for d in dets) and all(d.mask is not None for d in dets if len(d))


def _with_empty_masks(dets: Sequence[sv.Detections], shapes: Sequence[tuple[int, int]]) -> list:
    out = []
    for det, (h, w) in zip(dets, shapes):
        if len(det) == 0 and det.mask is None:
            det = det[:]
            det.mask = np.zeros((0, h, w), dtype=bool)
        out.append(det)
    return out


def score_detections(
    predictions: Sequence[sv.Detections],
    targets: Sequence[sv.Detections],
    classes: Sequence[str],
    target: Target = "boxes",
) -> Scores:
    """mAP@0.5, mAP@0.5:0.95 and per-class precision/recall/AP of parallel per-image lists.

    ``class_id`` on both sides must index ``classes``; predictions need ``confidence``.

    Example:
        >>> import supervision as sv, numpy as np
        >>> box = sv.Detections(xyxy=np.array([[0., 0, 10, 10]]), class_id=np.array([0]),
        ...                     confidence=np.array([0.9]))
        >>> score_detections([box], [box], ["cat"]).map50
        1.0
    """
    from supervision.metrics import AveragingMethod, MeanAveragePrecision, MetricTarget, Precision, Recall

    if len(predictions) != len(targets):
        raise ValueError(f"got {len(predictions)} prediction lists for {len(targets)} images")
    metric_target = MetricTarget.MASKS if target == "masks" else MetricTarget.BOXES
    preds, gts = list(predictions), list(targets)
    if target == "masks":
        shapes = [_mask_shape(p, g) for p, g in zip(preds, gts)]
        preds, gts = _with_empty_masks(preds, shapes), _with_empty_masks(gts, shapes)

    n_gt = np.bincount(np.concatenate([np.asarray(g.class_id, dtype=int) for g in gts] + [
        np.zeros(0, dtype=int)]), minlength=len(classes))
    n_pred = np.bincount(np.concatenate([np.asarray(p.class_id, dtype=int) for p in preds] + [
        np.zeros(0, dtype=int)]), minlength=len(classes))

    if not any(len(g) for g in gts) and not any(len(p) for p in preds):
        per = [ClassScores(c, 0, 0, None, None, 0.0, 0.0) for c in classes]
        return Scores(target, float("nan"), float("nan"), 0.0, 0.0, per)

    map_result = MeanAveragePrecision(metric_target=metric_target).update(preds, gts).compute()
    per_precision = Precision(metric_target=metric_target,
                              averaging_method=AveragingMethod.MICRO).update(preds, gts).compute()
    per_recall = Recall(metric_target=metric_target,
                        averaging_method=AveragingMethod.MICRO).update(preds, gts).compute()

    ap = {int(c): row for c, row in zip(map_result.matched_classes, map_result.ap_per_class)}
    prec = {int(c): float(row[0]) for c, row in
            zip(per_precision.matched_classes, per_precision.precision_per_class)}
    rec = {int(c): float(row[0]) for c, row in
           zip(per_recall.matched_classes, per_recall.recall_per_class)}
    per_class = []
    for cid, name in enumerate(classes):
        row = ap.get(cid) if n_gt[cid] else None
        per_class.append(ClassScores(
            name=name,
            ground_truth=int(n_gt[cid]),
            predictions=int(n_pred[cid]),
            ap50=None if row is None else max(float(row[0]), 0.0),
            ap50_95=None if row is None else max(float(np.mean(row)), 0.0),
            precision=prec.get(cid, 0.0),
            recall=rec.get(cid, 0.0),
        ))
    map50 = float(map_result.map50)
    map50_95 = float(map_result.map50_95)
    return Scores(
        target=target,
        map50=map50 if map50 >= 0 else float("nan"),
        map50_95=map50_95 if map50_95 >= 0 else float("nan"),
        precision=float(per_precision.precision_at_50),
        recall=float(per_recall.recall_at_50),
        per_class=per_class,
    )


def _mask_shape(pred: sv.Detections, gt: sv.Detections) -> tuple[int, int]:
    for det in (gt, pred):
        if det.mask is not None and det.mask.ndim == 3:
            return int(det.mask.shape[1]), int(det.mask.shape[2])
    return (1, 1)


def sweep_thresholds(
    predictions: Sequence[sv.Detections],
    targets: Sequence[sv.Detections],
    classes: Sequence[str],
    thresholds: Sequence[float] = DEFAULT_SWEEP,
) -> list[SweepPoint]:
    """Box scores with only the predictions at or above each confidence threshold.

    Example:
        >>> [p.threshold for p in sweep_thresholds(preds, gts, ["cat"], [0.3, 0.5])]  # doctest: +SKIP
        [0.3, 0.5]
    """
    points = []
    for t in sorted(float(x) for x in thresholds):
        kept = [p[np.asarray(p.confidence) >= t] if len(p) else p for p in predictions]
        s = score_detections(kept, targets, classes, "boxes")
        f1 = 2 * s.precision * s.recall / (s.precision + s.recall) if s.precision + s.recall else 0.0
        points.append(SweepPoint(t, sum(len(k) for k in kept), s.map50, s.map50_95,
                                 s.precision, s.recall, f1))
    return points


@dataclass
class PairedDatasets:
    """Two datasets' detections paired image by image (see :func:`pair_datasets`).

    Attributes:
        classes: the ground truth's class names; ``class_id`` on both sides indexes them.
        keys: the image keys present on both sides, sorted.
        predictions, targets: detections per key (predictions renamed by the class map;
            a prediction without a confidence gets 1.0).
        missing_in_predictions: keys of ground-truth images the predictions lack.
        missing_in_ground_truth: keys of predicted images the ground truth lacks.
        predicted_boxes: predicted boxes on the paired images.
        unscored_boxes: how many of them had no confidence in the files.
    """

    classes: list[str]
    keys: list[str]
    predictions: list[sv.Detections]
    targets: list[sv.Detections]
    missing_in_predictions: list[str]
    missing_in_ground_truth: list[str]
    predicted_boxes: int
    unscored_boxes: int

    @property
    def has_scores(self) -> bool:
        """False when predicted boxes exist and none of them carries a confidence."""
        return not (self.predicted_boxes and self.unscored_boxes == self.predicted_boxes)


def pair_datasets(
    predictions: str | Path,
    ground_truth: str | Path,
    *,
    pred_format: str = "auto",
    gt_format: str = "auto",
    class_map: Mapping[str, str] | None = None,
) -> PairedDatasets:
    """Read two datasets and pair their images by key, with the ground truth's class ids.

    Raises:
        ClassMismatchError: a prediction class (after ``class_map``) is not a ground-truth class.
        DatasetError: a folder is not a dataset of the given format.
        ValueError: no image is on both sides.

    Example:
        >>> paired = pair_datasets("auto-labels/", "hand-labels/")  # doctest: +SKIP
        >>> len(paired.keys), paired.has_scores  # doctest: +SKIP
        (120, True)
    """
    class_map = dict(class_map or {})
    pred_ds = load_dataset(predictions, pred_format)
    gt_ds = load_dataset(ground_truth, gt_format)
    classes = list(gt_ds.classes)
    check_classes(pred_ds.classes, classes, class_map)

    pred_images = pred_ds.images()
    gt_images = gt_ds.images()
    common = sorted(set(pred_images) & set(gt_images))
    missing_pred = sorted(set(gt_images) - set(pred_images))
    missing_gt = sorted(set(pred_images) - set(gt_images))
    if missing_pred:
        logger.warning("%d ground-truth images have no prediction counterpart, e.g. %s",
                       len(missing_pred), missing_pred[0])
    if missing_gt:
        logger.info("%d predicted images are not in the ground truth", len(missing_gt))
    if not common:
        raise ValueError(
            f"no image is in both {predictions} ({len(pred_images)} images) and "
            f"{ground_truth} ({len(gt_images)} images); images are paired by their path "
            "relative to the images folder (and split)"
        )
    preds = [rename_classes(pred_images[k].detections, class_map, classes) for k in common]
    gts = [rename_classes(gt_images[k].detections, {}, classes) for k in common]
    unscored = _count_unscored(preds)
    _count_unscored(gts)
    return PairedDatasets(classes, common, preds, gts, missing_pred, missing_gt,
                          sum(len(p) for p in preds), unscored)


def no_scores_message(predictions: str | Path) -> str:
    """Why a dataset without confidences cannot be thresholded, and how to get them.

    Example:
        >>> no_scores_message("auto/").startswith("auto/: no predicted box carries a confidence")
        True
    """
    return (f"{predictions}: no predicted box carries a confidence, so there is nothing to "
            "threshold or rank; label with ovperc label (YOLO keeps scores in scores/ next to "
            "labels/, COCO in 'score', VOC in <score>) or add a 6th column to YOLO box lines")


def evaluate(
    predictions: str | Path,
    ground_truth: str | Path,
    *,
    pred_format: str = "auto",
    gt_format: str = "auto",
    class_map: Mapping[str, str] | None = None,
    sweep: Sequence[float] | None = None,
) -> Evaluation:
    """Compare a labelled dataset with a ground-truth dataset (any pair of formats).

    Images are paired by key (split + path relative to the images folder); only images
    present on both sides are scored and the others are listed in the result. Class names
    are matched by name onto the ground truth's classes; ``class_map`` renames (or, with
    an empty new name, drops) prediction classes first. Predicted boxes without a
    confidence count as 1.0; the result says how many there were.

    Args:
        predictions: the dataset to score (e.g. written by ``ovperc label``).
        ground_truth: the hand-labelled dataset.
        pred_format, gt_format: ``auto``, ``yolo``, ``coco`` or ``voc``.
        class_map: ``prediction name -> ground-truth name``.
        sweep: confidence thresholds to report box scores at (``None``: no sweep).

    Raises:
        ClassMismatchError: a prediction class is not a ground-truth class.
        DatasetError: a folder is not a dataset of the given format.
        NoScoresError: a sweep was asked for but no predicted box has a confidence.
        ValueError: no image is on both sides.

    Example:
        >>> result = evaluate("auto-labels/", "hand-labels/")  # doctest: +SKIP
        >>> result.boxes.map50  # doctest: +SKIP
        0.71
    """
    paired = pair_datasets(predictions, ground_truth, pred_format=pred_format,
                           gt_format=gt_format, class_map=class_map)
    if sweep is not None and not paired.has_scores:
        raise NoScoresError(f"--sweep needs confidences: {no_scores_message(predictions)}")
    if paired.unscored_boxes:
        logger.warning("%d of %d predicted boxes carry no confidence; each counts as 1.0",
                       paired.unscored_boxes, paired.predicted_boxes)
    preds, gts, classes = paired.predictions, paired.targets, paired.classes
    boxes = score_detections(preds, gts, classes, "boxes")
    masks = score_detections(preds, gts, classes, "masks") if _has_masks(preds) and _has_masks(gts) \
        else None
    points = sweep_thresholds(preds, gts, classes, sweep) if sweep is not None else None
    return Evaluation(
        classes=classes,
        images=len(paired.keys),
        boxes=boxes,
        masks=masks,
        missing_in_predictions=paired.missing_in_predictions,
        missing_in_ground_truth=paired.missing_in_ground_truth,
        sweep=points,
        class_map=dict(class_map or {}),
        predicted_boxes=paired.predicted_boxes,
        unscored_boxes=paired.unscored_boxes,
    )


# ---------------------------------------------------------------------- report
def _fmt(value: float | None) -> str:
    return "    -" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def format_report(result: Evaluation) -> str:
    """A plain-text report: mAP, per-class table, missing images and the sweep.

    Example:
        >>> print(format_report(evaluate("auto/", "hand/")))  # doctest: +SKIP
    """
    lines = [f"images scored: {result.images}"]
    if not result.has_scores:
        lines.append("predictions carry no confidences: every box counts as 1.0, so AP is a "
                     "single precision/recall point, not a ranking (a confidence sweep or "
                     "threshold tuning needs scores)")
    elif result.unscored_boxes:
        lines.append(f"predicted boxes without a confidence (counted as 1.0): "
                     f"{result.unscored_boxes} of {result.predicted_boxes}")
    if result.missing_in_predictions:
        lines.append(f"ground-truth images missing from the predictions: "
                     f"{len(result.missing_in_predictions)} (e.g. {result.missing_in_predictions[0]})")
    if result.missing_in_ground_truth:
        lines.append(f"predicted images not in the ground truth (not scored): "
                     f"{len(result.missing_in_ground_truth)} (e.g. {result.missing_in_ground_truth[0]})")
    for scores in (result.boxes, result.masks):
        if scores is None:
            continue
        lines.append("")
        lines.append(f"{scores.target}: mAP@0.5 {_fmt(scores.map50)}  mAP@0.5:0.95 {_fmt(scores.map50_95)}"
                     f"  precision {_fmt(scores.precision)}  recall {_fmt(scores.recall)}")
        width = max([5, *(len(c.name) for c in scores.per_class)])
        lines.append(f"  {'class':<{width}}  {'gt':>5}  {'pred':>5}  {'P':>5}  {'R':>5}  "
                     f"{'AP50':>5}  {'AP50-95':>7}")
        for c in scores.per_class:
            lines.append(f"  {c.name:<{width}}  {c.ground_truth:>5}  {c.predictions:>5}  "
                         f"{_fmt(c.precision)}  {_fmt(c.recall)}  {_fmt(c.ap50)}  {_fmt(c.ap50_95):>7}")
    if result.sweep:
        lines.append("")
        lines.append("boxes by confidence threshold:")
        lines.append(f"  {'conf':>5}  {'preds':>6}  {'P':>5}  {'R':>5}  {'F1':>5}  {'mAP50':>5}  "
                     f"{'mAP50-95':>8}")
        best = max(result.sweep, key=lambda p: p.f1)
        for p in result.sweep:
            mark = "  <- best F1" if p is best else ""
            lines.append(f"  {p.threshold:>5.2f}  {p.predictions:>6}  {_fmt(p.precision)}  "
                         f"{_fmt(p.recall)}  {_fmt(p.f1)}  {_fmt(p.map50)}  {_fmt(p.map50_95):>8}{mark}")
    return "\n".join(lines)
