"""The order and the trimming of the detections `runtime.postprocess` keeps: per video,
per class in class order, by descending score (ties: proposal order); then clipped to
each video's duration, `min_score`, and the top N per class and per video."""

from __future__ import annotations

import numpy as np


def by_group_then_score(group: np.ndarray, score: np.ndarray, tie: np.ndarray, span: int) -> np.ndarray:
    """Indices that order rows by (group, descending score, tie), every tie value in
    [0, span): one three-key lexsort, or for many rows the same order from one sort of
    unique integer keys (the dense rank of the score between group and tie), which is
    faster."""
    m = score.size
    if m > 2048 and (int(group.max()) + 1) * m * span < 2 ** 62:
        by_value = np.argsort(-score)
        sorted_values = score.take(by_value)
        step = np.empty(m, dtype=np.int64)
        step[0] = 0
        np.not_equal(sorted_values[1:], sorted_values[:-1], out=step[1:])
        rank = np.empty(m, dtype=np.int64)
        rank[by_value] = np.cumsum(step, out=step)
        return np.argsort((group * m + rank) * span + tie)
    return np.lexsort((tie, -score, group))


def ranked(scores: np.ndarray, labels: np.ndarray, vid: np.ndarray):
    """Surviving (video slot, class, score, column) per video, per class in class order,
    by descending score (ties: proposal order): one sort of the surviving (slot,
    proposal) pairs by (video, slot, -score, column), no padding per video."""
    k, n = scores.shape
    flat = scores.reshape(-1)
    keep = (flat > -np.inf).nonzero()[0]
    slot, col = np.divmod(keep, n)
    part = vid.take(col)
    value = flat.take(keep)
    order = by_group_then_score(part * k + slot, value, col, n)
    slot, col, part = slot.take(order), col.take(order), part.take(order)
    return part, labels[slot, part], value.take(order), col


def trim(video_index: np.ndarray, label: np.ndarray, score: np.ndarray, t_start: np.ndarray, t_end: np.ndarray,
         durations: np.ndarray, min_score: float | None, max_per_class: int | None, max_detections: int | None):
    """Clip times to [0, duration], drop what the clipping empties and what scores below
    `min_score`, keep the top N per class and per video (by score; ties: earlier in the
    output) in output order."""
    cols = (video_index, label, score, t_start, t_end)
    limit = durations.take(video_index)
    if np.isfinite(limit).any():
        np.clip(t_start, 0.0, limit, out=t_start)
        np.clip(t_end, 0.0, limit, out=t_end)
        ok = t_end > t_start
        if not ok.all():
            cols = tuple(x[ok] for x in cols)
    if min_score is not None:
        ok = cols[2] >= min_score
        cols = tuple(x[ok] for x in cols)
    if max_per_class is not None:
        num_classes = int(cols[1].max()) + 1 if cols[1].size else 1
        cols = _top_n(cols, cols[0] * num_classes + cols[1], max_per_class)
    if max_detections is not None:
        cols = _top_n(cols, cols[0], max_detections)
    return cols


def _top_n(cols: tuple, group: np.ndarray, n: int) -> tuple:
    """The `n` best-scored rows of each `group` (ties: earlier first), in output order."""
    score = cols[2]
    if score.size <= n:
        return cols
    by_score = by_group_then_score(group, score, np.arange(score.size), score.size)
    ranked = group[by_score]
    first = np.searchsorted(ranked, ranked, side="left")
    chosen = np.sort(by_score[(np.arange(score.size) - first) < n])
    return tuple(x[chosen] for x in cols)
