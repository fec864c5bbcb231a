"""Which detection is which tracked object: box IoU and a one-to-one assignment.

The tracker compares each keyframe's detections with where its tracks are expected on
that frame (their last box moved by their last motion, :func:`predict_box`), pairs them
one to one by IoU (Hungarian assignment with scipy, a greedy best-first match without),
and starts a new track only for a detection that overlaps no track enough.
"""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (``N x 4`` xyxy) with every box of ``b`` (``M x 4``): ``N x M``.

    Example:
        >>> box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10]])).round(3)
        array([[1.   , 0.333]])
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - overlap
    return np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)


def box_containment(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How much of the smaller box of each pair lies inside the other: ``N x M`` in [0, 1].

    Example:
        >>> box_containment(np.array([[0, 0, 10, 10]]), np.array([[2, 2, 6, 6], [5, 0, 15, 10]]))
        array([[1. , 0.5]])
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    return np.divide(overlap, smaller, out=np.zeros_like(overlap), where=smaller > 0)


def assign(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """One-to-one pairs ``(row, column)`` of ``iou`` that maximise the total IoU, each pair
    at least ``min_iou``; Hungarian (``scipy``) when installed, greedy best-first otherwise.

    Example:
        >>> assign(np.array([[0.9, 0.6], [0.7, 0.0]]), 0.3)
        [(0, 1), (1, 0)]
    """
    iou = np.asarray(iou, dtype=np.float64)
    if iou.size == 0:
        return []
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:  # pragma: no cover - supervision depends on scipy
        return _greedy(iou, min_iou)
    rows, cols = linear_sum_assignment(np.where(iou >= min_iou, iou, 0.0), maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]


def _greedy(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        row, col = divmod(int(flat), iou.shape[1])
        if iou[row, col] < min_iou:
            break
        if row not in used_rows and col not in used_cols:
            pairs.append((row, col))
            used_rows.add(row)
            used_cols.add(col)
    return sorted(pairs)


def box_motion(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The per-frame motion of a box, as the shift of its centre (``[dx, dy, dx, dy]``): a
    box's size changes with its mask's errors far more than with the object, so only the
    centre's move is carried on to the next frame.

    Example:
        >>> box_motion(np.array([0.0, 0, 10, 10]), np.array([2.0, 1, 10, 13]))
        array([1., 2., 1., 2.])
    """
    old = np.asarray(old, dtype=np.float64)
    new = np.asarray(new, dtype=np.float64)
    shift = (new[:2] + new[2:]) / 2 - (old[:2] + old[2:]) / 2
    return np.concatenate([shift, shift])


def predict_box(box: np.ndarray, motion: np.ndarray, steps: int = 1) -> np.ndarray:
    """Where a box is expected ``steps`` frames on, moving as it did last (``motion`` per frame).

    Example:
        >>> predict_box(np.array([0.0, 0, 10, 10]), np.array([2.0, 0, 2, 0]), 2)
        array([ 4.,  0., 14., 10.])
    """
    return np.asarray(box, dtype=np.float64) + steps * np.asarray(motion, dtype=np.float64)


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """The tight xyxy box (pixel edges) of a bool mask, ``None`` when it is empty.

    Example:
        >>> m = np.zeros((5, 6), bool); m[1:3, 2:5] = True
        >>> mask_box(m)
        array([2., 1., 5., 3.])
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)
