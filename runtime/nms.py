"""Temporal non-maximum suppression: Gaussian soft-NMS (the released HAM-Net code) and
greedy hard NMS, for one set of segments scored by one or several classes at once.

Both are the classic greedy loops (pick the highest remaining score, then decay or
drop the rest by their IoU with it), computed exactly but batched:

* Segments split into connected groups whose members overlap, directly or through
  others. Members of different groups never interact (IoU 0, weight exactly 1), so
  all groups, and all classes, run their greedy loops side by side: the Python loop
  has as many steps as the largest group, not as the number of detections.
* Pairwise weights inside each group are computed once, up front.

Ties go to the segment given first (ties matter only between equal scores).
`legacy_length=True` reproduces the released code, which measures a segment as
`end - start + 1` although times are in seconds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from runtime.errors import DataError


def segment_iou(a: np.ndarray, b: np.ndarray, legacy_length: bool = False) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of segments given as (N, 2) [start, end] rows.
    A pair whose union is empty (two zero-length segments) has IoU 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    s1, e1 = a[:, 0][:, None], a[:, 1][:, None]
    s2, e2 = b[:, 0][None, :], b[:, 1][None, :]
    return _iou(s1, e1, s2, e2, e1 - s1, e2 - s2, legacy_length)


def _iou(s1, e1, s2, e2, len1, len2, legacy: bool) -> np.ndarray:
    """IoU of broadcast segments, the released code's formula: intersection
    `max(0, min(e) - max(s) [+ 1])`, union `len1 + len2 - intersection` where a
    length is `e - s [+ 1]` (the `+ 1` only with `legacy`)."""
    inter = np.minimum(e1, e2)
    inter -= np.maximum(s1, s2)
    if legacy:
        inter += 1.0
        len1 = len1 + 1.0
        len2 = len2 + 1.0
    np.maximum(inter, 0.0, out=inter)
    union = len1 + len2
    union -= inter
    if legacy or (union > 0).all():
        inter /= union
        return inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class _Groups(NamedTuple):
    table: np.ndarray  # (G, M) member indices per group, 0 for padding; members in input order
    pad: np.ndarray  # (G, M) True where the table is padding
    size: np.ndarray  # (G,) members per group
    rows: np.ndarray  # (N,) row g * M + p of each member (member p of group g), in `members` order
    pos: np.ndarray  # (N,) p of each member, same order
    iou: np.ndarray  # (N, M) IoU of each member with the members of its group (padding: anything)


def _groups(start: np.ndarray, end: np.ndarray, legacy: bool) -> _Groups:
    """Connected groups of overlapping segments (overlap as the IoU formula sees it),
    padded to the largest group's size, with each member's IoU to its group."""
    n = start.shape[0]
    by_start = np.argsort(start, kind="stable")
    reach = np.maximum.accumulate(end[by_start])
    new = np.empty(n, dtype=bool)
    new[0] = True
    # Same expression as the intersection in _iou: <= 0 means no earlier segment touches.
    gap = reach[:-1] - start[by_start[1:]]
    if legacy:
        gap += 1.0
    np.less_equal(gap, 0.0, out=new[1:])
    gid = np.empty(n, dtype=np.int64)
    gid[by_start] = np.cumsum(new) - 1
    members = np.argsort(gid, kind="stable")  # grouped; input order inside a group
    size = np.bincount(gid)
    g_of = gid[members]
    pos = np.arange(n) - (np.cumsum(size) - size)[g_of]
    width = int(size.max())
    table = np.zeros((size.size, width), dtype=np.int64)
    pad = np.ones(table.shape, dtype=bool)
    table[g_of, pos] = members
    pad[g_of, pos] = False
    length = end - start
    partners = table[g_of]  # (N, M)
    iou = _iou(start[members][:, None], end[members][:, None], start.take(partners), end.take(partners),
               length[members][:, None], length.take(partners), legacy)
    return _Groups(table, pad, size, g_of * width + pos, pos, iou)


def _check(segments, scores, name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    seg = np.asarray(segments, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    if seg.ndim != 2 or seg.shape[1] != 2:
        raise DataError(f"{name}: segments must have shape (N, 2), got {seg.shape}")
    single = sc.ndim == 1
    sc2 = sc[None, :] if single else sc
    if sc2.ndim != 2 or sc2.shape[1] != seg.shape[0]:
        raise DataError(f"{name}: scores must have shape (N,) or (K, N) with N = {seg.shape[0]}, got {sc.shape}")
    if not (np.isfinite(seg).all() and np.isfinite(sc2).all()):
        raise DataError(f"{name}: segments and scores must be finite")
    if (seg[:, 1] < seg[:, 0]).any():
        raise DataError(f"{name}: a segment ends before it starts")
    return seg, sc2, single


class _Batch(NamedTuple):
    cur: np.ndarray  # (K*G, M) current scores, row = (class, group); -inf for padding
    flat_rows: np.ndarray  # (K*G,) row * M, to address cur.ravel()
    pair_rows: np.ndarray  # (K*G,) group * M, to address the (G*M, M) pair tables


def _batch(g: _Groups, scores: np.ndarray) -> _Batch:
    k = scores.shape[0]
    n_groups, width = g.table.shape
    cur = scores[:, g.table]  # (K, G, M)
    cur[:, g.pad] = -np.inf
    return _Batch(cur.reshape(k * n_groups, width), np.arange(k * n_groups) * width,
                  np.tile(np.arange(n_groups) * width, k))


def soft_nms(segments, scores, sigma: float = 0.3, legacy_length: bool = False) -> np.ndarray:
    """Gaussian soft-NMS. `segments` (N, 2) seconds; `scores` (N,) or (K, N), one row
    per class over the same segments. Returns the decayed scores, same shape: every
    detection is kept; when one is picked, each remaining score is multiplied by
    exp(-IoU^2 / sigma). A score is final when its detection is picked.

    Scores are multiplied, as in the released code, so a negative score moves toward 0."""
    seg, sc, single = _check(segments, scores, "soft-NMS")
    if not sigma > 0:
        raise DataError(f"soft-NMS: sigma={sigma} must be > 0")
    out = _soft_nms(np.ascontiguousarray(seg[:, 0]), np.ascontiguousarray(seg[:, 1]), sc,
                    float(sigma), legacy_length)
    return out[0] if single else out


def _soft_nms(start: np.ndarray, end: np.ndarray, sc: np.ndarray, sigma: float, legacy: bool) -> np.ndarray:
    """soft_nms without the checks: start, end (N,) float64 contiguous; sc (K, N)."""
    if start.shape[0] == 0 or sc.shape[0] == 0:
        return sc.copy()
    g = _groups(start, end, legacy)
    n_groups, width = g.table.shape
    # Row g * M + p: the factors applied when member p of group g is picked. Floored at
    # the smallest normal float so -inf (picked, padding) never meets 0.
    weight = np.ones((n_groups * width, width), dtype=np.float64)
    weight[g.rows] = np.maximum(np.exp(-(g.iou * g.iou) / sigma), np.finfo(np.float64).tiny)
    b = _batch(g, sc)
    cur = b.cur
    flat = cur.reshape(-1)
    picks = np.empty((width, cur.shape[0]), dtype=np.int64)
    values = np.empty((width, cur.shape[0]), dtype=np.float64)
    for step in range(width):
        idx = cur.argmax(axis=1)
        where = b.flat_rows + idx
        values[step] = flat.take(where)
        picks[step] = idx
        cur *= weight.take(b.pair_rows + idx, axis=0)
        flat[where] = -np.inf
    # Row r = (class r // G, group r % G) picked its member picks[s, r] at step s; steps
    # past the group's size picked padding (a -inf) and are skipped.
    done = values > -np.inf
    member = g.table.reshape(-1).take(b.pair_rows + picks)
    cls_offset = np.repeat(np.arange(sc.shape[0]) * sc.shape[1], n_groups)
    out = sc.copy()
    out.reshape(-1)[(cls_offset + member)[done]] = values[done]
    return out


def hard_nms(segments, scores, iou_threshold: float = 0.5, legacy_length: bool = False) -> np.ndarray:
    """Greedy NMS. `segments` (N, 2); `scores` (N,) or (K, N). Returns a boolean keep
    mask of the scores' shape: the highest remaining detection is kept and every
    remaining one with IoU >= iou_threshold to it is dropped."""
    seg, sc, single = _check(segments, scores, "NMS")
    if not 0 < iou_threshold <= 1:
        raise DataError(f"NMS: iou_threshold={iou_threshold} must lie in (0, 1]")
    keep = _hard_nms(np.ascontiguousarray(seg[:, 0]), np.ascontiguousarray(seg[:, 1]), sc,
                     float(iou_threshold), legacy_length)
    return keep[0] if single else keep


def _hard_nms(start: np.ndarray, end: np.ndarray, sc: np.ndarray, iou_threshold: float,
              legacy: bool) -> np.ndarray:
    """hard_nms without the checks: start, end (N,) float64 contiguous; sc (K, N)."""
    keep = np.zeros(sc.shape, dtype=bool)
    if start.shape[0] == 0 or sc.shape[0] == 0:
        return keep
    g = _groups(start, end, legacy)
    n_groups, width = g.table.shape
    drop = np.zeros((n_groups * width, width), dtype=bool)
    drop[g.rows] = g.iou >= iou_threshold
    drop[g.rows, g.pos] = True  # the kept one itself
    b = _batch(g, sc)
    cur = b.cur
    flat = cur.reshape(-1)
    table = g.table.reshape(-1)
    cls_offset = np.repeat(np.arange(sc.shape[0]) * sc.shape[1], n_groups)
    out = keep.reshape(-1)
    for _ in range(width):
        idx = cur.argmax(axis=1)
        live = flat.take(b.flat_rows + idx) > -np.inf
        if not live.any():
            break
        rows = b.pair_rows + idx
        out[(cls_offset + table.take(rows))[live]] = True
        cur[drop.take(rows, axis=0) & live[:, None]] = -np.inf
    return keep
