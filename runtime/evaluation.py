"""Detection and classification evaluation (SPEC §5), the ActivityNet protocol HAM-Net
reported with, vectorised.

Detection: per class, predictions by descending score; each takes the unmatched
ground-truth segment of its class and video with the highest tIoU, if that tIoU >= the
threshold (true positive), else it is a false positive; AP is the area under the
interpolated precision-recall curve; mAP is the mean over classes that have ground
truth; the average mAP is the mean over thresholds. A class with ground truth but no
predictions has AP 0; a class without ground truth in the evaluated videos has no AP
(NaN) and does not count toward the mAP.

Ties: predictions of equal score keep their input order; a prediction whose best
tIoU is shared by several segments takes the one listed first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.annotations import Annotations
from hamnet_deploy.runtime.detections import Detections
from hamnet_deploy.runtime.errors import ConfigError, DataError
from hamnet_deploy.runtime.fileio import read_text

THUMOS14_TIOU: tuple[float, ...] = tuple(round(0.1 * i, 2) for i in range(1, 8))
ACTIVITYNET_TIOU: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
THRESHOLD_PRESETS = {"thumos": THUMOS14_TIOU, "thumos14": THUMOS14_TIOU,
                     "activitynet": ACTIVITYNET_TIOU, "anet": ACTIVITYNET_TIOU}


def parse_thresholds(text: str | Sequence[float]) -> tuple[float, ...]:
    """`thumos` (0.1:0.1:0.7), `activitynet` (0.5:0.05:0.95), or numbers separated by
    commas; each must lie in (0, 1]."""
    if isinstance(text, str):
        key = text.strip().lower()
        if key in THRESHOLD_PRESETS:
            return THRESHOLD_PRESETS[key]
        try:
            values = [float(x) for x in key.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"tIoU thresholds {text!r}: use 'thumos', 'activitynet' or numbers like 0.3,0.5,0.7") from None
    else:
        values = [float(x) for x in text]
    if not values:
        raise ConfigError("tIoU thresholds: give at least one threshold")
    for v in values:
        if not (math.isfinite(v) and 0 < v <= 1):
            raise ConfigError(f"tIoU threshold {v} must lie in (0, 1]")
    return tuple(values)


def load_ambiguous(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Ambiguous regions, one `video start end` (seconds) per line, as the THUMOS14
    `Ambiguous_test.txt`: {video: (N, 2) array}."""
    path = Path(path)
    text = read_text(path, "ambiguous-regions file")
    regions: dict[str, list[tuple[float, float]]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise DataError(f"{path}: line {number}: expected 'video start end', got {line.strip()!r}")
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            raise DataError(f"{path}: line {number}: start and end must be numbers, got {line.strip()!r}") from None
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise DataError(f"{path}: line {number}: [{start}, {end}] is not a valid region")
        regions.setdefault(fields[0], []).append((start, end))
    return {v: np.asarray(r, dtype=np.float64).reshape(-1, 2) for v, r in regions.items()}


def interpolated_ap(tp: np.ndarray, fp: np.ndarray, positives: int) -> np.ndarray:
    """Interpolated AP (ActivityNet / VOC 2011) of ranked predictions: `tp`, `fp` are
    (L, P) flags (0/1) in descending-score order, one row per threshold; a prediction
    that is neither (ignored) changes nothing. Precision is made monotone from the right
    and summed where recall changes. Returns (L,); NaN when `positives` is 0."""
    tp = np.atleast_2d(np.asarray(tp, dtype=np.float64))
    fp = np.atleast_2d(np.asarray(fp, dtype=np.float64))
    if positives <= 0:
        return np.full(tp.shape[0], np.nan)
    if tp.shape[1] == 0:
        return np.zeros(tp.shape[0])
    tp_cum = np.cumsum(tp, axis=1)
    fp_cum = np.cumsum(fp, axis=1)
    seen = tp_cum + fp_cum
    precision = np.divide(tp_cum, seen, out=np.zeros_like(tp_cum), where=seen > 0)
    recall = tp_cum / positives
    zeros = np.zeros((tp.shape[0], 1))
    mprec = np.concatenate((zeros, precision, zeros), axis=1)
    mrec = np.concatenate((zeros, recall, np.ones((tp.shape[0], 1))), axis=1)
    mprec = np.maximum.accumulate(mprec[:, ::-1], axis=1)[:, ::-1]
    return np.sum((mrec[:, 1:] - mrec[:, :-1]) * mprec[:, 1:], axis=1)


def average_precision(is_tp: Sequence[bool], positives: int, ignore: Sequence[bool] | None = None) -> float:
    """Interpolated AP of one ranked list (descending score): `is_tp` per prediction,
    `positives` ground-truth count; `ignore`d predictions count as neither."""
    tp = np.asarray(is_tp, dtype=bool)
    skip = np.zeros_like(tp) if ignore is None else np.asarray(ignore, dtype=bool)
    return float(interpolated_ap(tp[None], (~tp & ~skip)[None], positives)[0])


@dataclass
class DetectionResult:
    """AP per (threshold, class); mAP per threshold; their average."""

    thresholds: tuple[float, ...]
    classes: list[str]
    ap: np.ndarray  # (L, C); NaN for classes without ground truth
    num_ground_truth: np.ndarray  # (C,)
    num_predictions: np.ndarray  # (C,) predictions evaluated
    num_videos: int
    dropped_predictions: int = 0  # predictions of videos outside the evaluated subset/exclusions
    unknown_videos: list[str] = field(default_factory=list)  # predicted videos not in the annotations
    ambiguous_ignored: np.ndarray | None = None  # (L,) false positives forgiven for Ambiguous overlap

    @property
    def map(self) -> np.ndarray:
        """mAP per threshold over the classes that have ground truth."""
        scored = ~np.isnan(self.ap[0]) if self.ap.size else np.zeros(0, dtype=bool)
        if not scored.any():
            return np.full(len(self.thresholds), np.nan)
        return self.ap[:, scored].mean(axis=1)

    @property
    def average_map(self) -> float:
        return float(np.mean(self.map))

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 6)

        return {
            "thresholds": [float(t) for t in self.thresholds],
            "mAP": [num(x) for x in self.map],
            "average_mAP": num(self.average_map),
            "per_class": {c: {"AP": [num(x) for x in self.ap[:, i]],
                              "ground_truth": int(self.num_ground_truth[i]),
                              "predictions": int(self.num_predictions[i])}
                          for i, c in enumerate(self.classes)},
            "videos": self.num_videos,
            "dropped_predictions": self.dropped_predictions,
            "unknown_videos": list(self.unknown_videos),
            "ambiguous_ignored": None if self.ambiguous_ignored is None else [int(x) for x in self.ambiguous_ignored],
        }


def _label_map(det_classes: Sequence[str], gt_classes: Sequence[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(gt_classes)}
    missing = [c for c in det_classes if c not in index]
    if missing:
        raise DataError(f"prediction classes {missing[:5]} are not in the annotation class list; "
                        f"use the annotations the model was trained with")
    return np.array([index[c] for c in det_classes], dtype=np.int64)


def _pairs(left_key: np.ndarray, right_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) with left_key[i] == right_key[j]; -1 keys never pair."""
    order = np.argsort(right_key, kind="stable")
    sorted_keys = right_key.take(order)
    lo = np.searchsorted(sorted_keys, left_key, side="left")
    hi = np.searchsorted(sorted_keys, left_key, side="right")
    counts = np.where(left_key >= 0, hi - lo, 0)
    total = int(counts.sum())
    left = np.repeat(np.arange(left_key.size), counts)
    within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    right = order.take(np.repeat(lo, counts) + within)
    return left, right


def _tiou(s1: np.ndarray, e1: np.ndarray, s2: np.ndarray, e2: np.ndarray) -> np.ndarray:
    inter = np.clip(np.minimum(e1, e2) - np.maximum(s1, s2), 0.0, None)
    with np.errstate(over="ignore", invalid="ignore"):
        union = (e1 - s1) + (e2 - s2) - inter
        if not np.isfinite(union).all():  # times near float's limit: the sum overflows, the span does not
            union = np.where(np.isfinite(union), union, np.maximum(e1, e2) - np.minimum(s1, s2))
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _greedy_match(pred: np.ndarray, gt: np.ndarray, iou: np.ndarray, num_pred: int, num_gt: int) -> np.ndarray:
    """Serial greedy matching, computed in parallel rounds. Candidate pairs (pred, gt,
    iou) are all valid; `pred` values are ranks (lower = earlier). Each prediction in
    turn takes its highest-IoU free ground truth (ties: lower gt index). Returns the
    matched flag per rank.

    A round settles every prediction whose current first choice no earlier unsettled
    prediction can still take (that is, no earlier unsettled prediction has it among
    its free candidates); the earliest unsettled prediction always qualifies, so the
    result is the serial one, usually in a handful of rounds."""
    matched = np.zeros(num_pred, dtype=bool)
    if pred.size == 0:
        return matched
    # Preference order: by prediction, then IoU descending, then gt index.
    order = np.lexsort((gt, -iou, pred))
    pred, gt = pred.take(order), gt.take(order)
    locked = np.zeros(num_gt, dtype=bool)
    settled = np.zeros(num_pred, dtype=bool)
    while pred.size:
        alive = ~(locked.take(gt) | settled.take(pred))
        pred, gt = pred[alive], gt[alive]
        if pred.size == 0:
            break
        head = np.ones(pred.size, dtype=bool)
        head[1:] = pred[1:] != pred[:-1]
        # Earliest prediction that still wants each ground truth.
        earliest = np.full(num_gt, num_pred, dtype=np.int64)
        np.minimum.at(earliest, gt, pred)
        choice_pred, choice_gt = pred[head], gt[head]
        safe = earliest.take(choice_gt) == choice_pred
        locked[choice_gt[safe]] = True
        settled[choice_pred[safe]] = True
        matched[choice_pred[safe]] = True
    return matched


def true_positives(segments: np.ndarray, labels: np.ndarray, dets: Detections, tiou: float = 0.5) -> np.ndarray:
    """Which of one video's detections the evaluator counts as true positives at `tiou`
    against its ground truth (`segments` (N, 2) seconds, `labels` (N,) class indices in
    `dets.classes`): per class by descending score, each takes its best free segment."""
    n = len(dets)
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    order = np.lexsort((np.arange(n), -dets.score, dets.label))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    pi, gi = _pairs(dets.label, labels)
    iou = _tiou(dets.t_start.take(pi), dets.t_end.take(pi), segments[gi, 0], segments[gi, 1])
    ok = iou >= tiou
    matched = _greedy_match(rank.take(pi[ok]), gi[ok], iou[ok], n, labels.size)
    return matched.take(rank)


def evaluate_detection(gt: Annotations, dets: Detections, thresholds: Sequence[float] = THUMOS14_TIOU,
                       subset: str | None = None, exclude: Iterable[str] = (),
                       ambiguous: Mapping[str, np.ndarray] | None = None) -> DetectionResult:
    """Detection AP of `dets` against `gt` (SPEC §5). `subset` and `exclude` choose the
    videos; predictions of other annotated videos are dropped, predictions of videos the
    annotations do not know count as false positives (listed in `unknown_videos`).
    `ambiguous` ({video: (N, 2)}): a false positive that overlaps an Ambiguous region
    is not counted (THUMOS14 evaluation kit)."""
    thr = np.asarray(parse_thresholds(list(thresholds)), dtype=np.float64)
    selected = gt.select(subset, exclude)
    if not selected.videos:
        raise DataError(f"no annotated videos to evaluate (subset {subset!r}, {len(set(exclude))} excluded; "
                        f"subsets in the file: {', '.join(gt.subsets()) or 'none'})")
    num_classes = gt.num_classes
    names = list(selected.videos)
    vindex = {v: i for i, v in enumerate(names)}

    # Ground truth as columns.
    g_vid = np.concatenate([np.full(v.labels.size, i) for i, v in enumerate(selected.videos.values())]).astype(np.int64)
    g_lab = np.concatenate([v.labels for v in selected.videos.values()]).astype(np.int64)
    g_seg = np.concatenate([v.segments for v in selected.videos.values()]).reshape(-1, 2)
    npos = np.bincount(g_lab, minlength=num_classes)

    # Predictions: known videos, dropped (annotated but not selected), unknown.
    label = _label_map(dets.classes, gt.classes).take(dets.label) if len(dets) else np.zeros(0, np.int64)
    video_names = dets.video.tolist()
    p_vid = np.fromiter((vindex.get(v, -1) for v in video_names), dtype=np.int64, count=len(dets))
    annotated = set(gt.videos)
    other = np.fromiter((v in annotated for v in video_names), dtype=bool, count=len(dets)) & (p_vid < 0)
    unknown = sorted({v for v, i, o in zip(video_names, p_vid, other, strict=True) if i < 0 and not o})
    keep = ~other
    label, p_vid = label[keep], p_vid[keep]
    score, p_s, p_e = dets.score[keep], dets.t_start[keep], dets.t_end[keep]
    num_pred = label.size

    # Rank: class, then descending score; ties keep input order.
    order = np.lexsort((np.arange(num_pred), -score, label))
    rank = np.empty(num_pred, dtype=np.int64)
    rank[order] = np.arange(num_pred)

    # Candidate pairs: same class and video.
    p_key = np.where(p_vid >= 0, label * len(names) + p_vid, -1)
    pi, gi = _pairs(p_key, g_lab * len(names) + g_vid)
    iou = _tiou(p_s.take(pi), p_e.take(pi), g_seg[gi, 0], g_seg[gi, 1])
    ok = iou >= thr.min()
    pi, gi, iou = pi[ok], gi[ok], iou[ok]

    # All thresholds at once: (threshold, prediction) and (threshold, gt) get their own ids.
    n_gt = g_lab.size
    tp = np.zeros((thr.size, num_pred), dtype=bool)
    if pi.size:
        valid = iou[None, :] >= thr[:, None]
        level, which = np.nonzero(valid)
        matched = _greedy_match(level * num_pred + rank.take(pi.take(which)), level * n_gt + gi.take(which),
                                iou.take(which), thr.size * num_pred, thr.size * n_gt)
        tp = matched.reshape(thr.size, num_pred)  # columns in rank order
    fp = ~tp
    ignored = None
    if ambiguous:
        overlap = _overlaps_ambiguous(names, ambiguous, p_vid, p_s, p_e).take(order)
        forgiven = fp & overlap[None, :]
        fp &= ~forgiven
        ignored = forgiven.sum(axis=1)

    ap = np.full((thr.size, num_classes), np.nan)
    bounds = np.searchsorted(label.take(order), np.arange(num_classes + 1))
    for c in range(num_classes):
        a, b = bounds[c], bounds[c + 1]
        ap[:, c] = interpolated_ap(tp[:, a:b], fp[:, a:b], int(npos[c]))
    if np.isnan(ap[0]).all():
        raise DataError("the evaluated videos have no ground-truth segments; check --subset and the annotation file")
    return DetectionResult(tuple(float(t) for t in thr), list(gt.classes), ap, npos,
                           np.bincount(label, minlength=num_classes), len(names),
                           int((~keep).sum()), unknown, ignored)


def _overlaps_ambiguous(names: list[str], ambiguous: Mapping[str, np.ndarray], p_vid: np.ndarray,
                        p_s: np.ndarray, p_e: np.ndarray) -> np.ndarray:
    """Per prediction: does it intersect (positive length) an Ambiguous region of its video?"""
    regions = [(i, np.asarray(ambiguous[v], dtype=np.float64).reshape(-1, 2))
               for i, v in enumerate(names) if v in ambiguous]
    out = np.zeros(p_vid.size, dtype=bool)
    if not regions or p_vid.size == 0:
        return out
    a_vid = np.concatenate([np.full(r.shape[0], i) for i, r in regions]).astype(np.int64)
    a_seg = np.concatenate([r for _, r in regions])
    pi, ai = _pairs(p_vid, a_vid)
    hit = np.minimum(p_e.take(pi), a_seg[ai, 1]) - np.maximum(p_s.take(pi), a_seg[ai, 0]) > 0
    out[pi[hit]] = True
    return out


def evaluate_classification(gt: Annotations, video_scores: Mapping[str, Any], subset: str | None = None,
                            exclude: Iterable[str] = ()) -> float:
    """Classification mAP in [0, 1] (released code's `getClassificationMAP` / 100): per
    class, videos by descending score, AP = mean precision at each positive video;
    mean over classes with at least one positive. Videos of `video_scores` outside the
    subset or excluded are ignored; a video the annotations do not know is an error."""
    selected = gt.select(subset, exclude)
    unknown = [v for v in video_scores if v not in gt.videos]
    if unknown:
        raise DataError(f"video {unknown[0]!r} has scores but no annotation ({len(unknown)} such videos); "
                        f"use the matching annotation file")
    names = [v for v in video_scores if v in selected.videos]
    if not names:
        raise DataError("no scored video is in the evaluated subset; check --subset")
    scores = np.stack([np.asarray(video_scores[v], dtype=np.float64).reshape(-1) for v in names])
    if scores.shape[1] != gt.num_classes:
        raise DataError(f"video scores have {scores.shape[1]} classes but the annotations have {gt.num_classes}")
    labels = np.stack([selected.videos[v].multi_hot(gt.num_classes) for v in names]).astype(bool)
    aps = []
    for c in range(gt.num_classes):
        npos = int(labels[:, c].sum())
        if npos == 0:
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        hits = labels[order, c]
        precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
        aps.append(float(precision[hits].sum() / npos))
    if not aps:
        raise DataError("no evaluated video has a label; classification mAP is undefined")
    return float(np.mean(aps))
