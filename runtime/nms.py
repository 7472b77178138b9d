"""Temporal non-maximum suppression: Gaussian soft-NMS (the released HAM-Net code) and
greedy hard NMS, for one set of segments scored by one or several classes at once.

Both are the classic greedy loops (pick the highest remaining score, then decay or
drop the rest by their IoU with it), computed exactly but batched:

* Segments split into connected groups whose members overlap, directly or through
  others. Members of different groups never interact (IoU 0, weight exactly 1), so
  all groups, all classes and (with `sets`) all videos run their greedy loops side by
  side: the Python loop has as many steps as the largest group, not as the number of
  detections. Groups of one member need no loop at all.
* Groups are padded to a common width; when many groups are batched (many videos),
  they are split into a few buckets of similar size so padding stays cheap.
* Pairwise weights inside each group are computed once, up front.

Ties between equal scores go to the segment that starts first, then to the one given
first. `legacy_length=True` reproduces the released code, which measures a segment as
`end - start + 1` although times are in seconds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hamnet_deploy.runtime.errors import DataError

_TINY = float(np.finfo(np.float64).tiny)
# A bucket of small groups joins a wider one when (rows x width) stays below this: one
# more Python step costs about as much as this many padded elements.
_MERGE_ELEMENTS = 4096
# Bucket widths grow by this factor (less padding than powers of two, few extra steps).
_BUCKET_GROWTH = 1.3


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


class _Bucket(NamedTuple):
    """Groups of one width, and the pair tables of their real members (row by row: group
    0's members, then group 1's, ...)."""

    members: np.ndarray  # (G, W) member indices, by start then input order; padding holds N
    first: np.ndarray  # (G,) table row of each group's first member
    member: np.ndarray  # (n,) member index of each table row
    column: np.ndarray  # (n,) position p of each table row's member in its group
    iou: np.ndarray  # (n, W) IoU of each real member with its group's members (padding: any)


def _buckets(start: np.ndarray, end: np.ndarray, legacy: bool, sets: np.ndarray | None,
             classes: int) -> tuple[list[_Bucket], np.ndarray]:
    """Groups of two or more overlapping segments, in buckets; plus the indices of the
    segments that overlap nothing (their own group of one)."""
    n = start.shape[0]
    if sets is not None and n:
        # Shift each set past the previous one (gap of 2 s > the legacy `+ 1`), so one
        # sort orders by (set, start) and the running reach never crosses sets. Rounding
        # in the shift can only split pairs whose IoU is ~1e-10, whose weight is 1.0 anyway.
        shift = sets * (float(end.max()) - float(min(start.min(), 0.0)) + 2.0)
        key_start, key_end = start + shift, end + shift
    else:
        key_start, key_end = start, end
    order = np.argsort(key_start, kind="stable")
    if n < 2:
        return [], order
    # Same expression as the intersection in _iou: <= 0 means no earlier segment of the
    # group touches this one, which then starts a new group.
    gap = np.maximum.accumulate(key_end.take(order))[:-1] - key_start.take(order)[1:]
    if legacy:
        gap += 1.0
    first = (gap <= 0.0).nonzero()[0]
    first += 1
    bounds = np.concatenate(([0], first, [n]))
    size = np.subtract(bounds[1:], bounds[:-1])
    first = bounds[:-1]
    single = order.take(first[size == 1])
    multi = (size > 1).nonzero()[0]
    if multi.size == 0:
        return [], single

    sizes = size.take(multi)
    widest = int(sizes.max())
    if classes * multi.size * widest <= _MERGE_ELEMENTS:
        plan = [np.arange(multi.size)]
    else:
        # Bucket the groups by width (a geometric ladder), widest first; a bucket that is
        # small next to the one before joins it.
        width_class = np.ceil(np.log(sizes) / np.log(_BUCKET_GROWTH)).astype(np.int64)
        by_class = np.argsort(-width_class, kind="stable")
        cuts = np.flatnonzero(np.diff(width_class.take(by_class))) + 1
        plan = []
        for chunk in np.split(by_class, cuts):
            if plan:
                width = int(sizes.take(plan[-1]).max())
                if classes * (plan[-1].size + chunk.size) * width <= _MERGE_ELEMENTS:
                    plan[-1] = np.concatenate((plan[-1], chunk))
                    continue
            plan.append(chunk)

    s_sorted = start.take(order)
    e_sorted = end.take(order)
    length_sorted = e_sorted - s_sorted
    buckets = []
    for chunk in plan:
        g_first = first.take(multi.take(chunk))
        width = int(sizes.take(chunk).max())
        slots = g_first[:, None] + np.arange(width)  # (G, W) positions in sorted order
        g_size = sizes.take(chunk)
        real = slots < (g_first + g_size)[:, None]
        group_of, column = np.nonzero(real)  # group and position of each real member
        gs = s_sorted.take(slots, mode="clip")
        ge = e_sorted.take(slots, mode="clip")
        gl = length_sorted.take(slots, mode="clip")
        at = slots[real]
        iou = _iou(s_sorted.take(at)[:, None], e_sorted.take(at)[:, None], gs.take(group_of, axis=0),
                   ge.take(group_of, axis=0), length_sorted.take(at)[:, None], gl.take(group_of, axis=0), legacy)
        members = order.take(slots, mode="clip")
        members[~real] = n
        table_first = np.cumsum(g_size) - g_size
        buckets.append(_Bucket(members, table_first, order.take(at), column, iou))
    return buckets, single


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


def _each_bucket(buckets: list[_Bucket], sc: np.ndarray, absent: bool):
    """Per bucket: the bucket, the current scores (R, W) of its rows (a row is one
    (class, group) pair; with `absent`, rows whose members are all -inf are left out),
    each row's class, and the pair-table row of each row's first member (a row picks
    member p: its table row is that plus p)."""
    if not buckets:
        return
    k = sc.shape[0]
    padded = np.empty((k, sc.shape[1] + 1), dtype=np.float64)
    padded[:, :-1] = sc
    padded[:, -1] = -np.inf
    for b in buckets:
        n_groups, width = b.members.shape
        cur = padded.take(b.members, axis=1).reshape(k * n_groups, width)
        if absent:  # only many videos at once leave whole rows absent
            live = (cur.max(axis=1) > -np.inf).nonzero()[0]
            cur = cur.take(live, axis=0)
        else:
            live = np.arange(k * n_groups)
        cls, group = np.divmod(live, n_groups)
        yield b, cur, cls, b.first.take(group)


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


def _soft_nms(start: np.ndarray, end: np.ndarray, sc: np.ndarray, sigma: float, legacy: bool,
              sets: np.ndarray | None = None) -> np.ndarray:
    """soft_nms without the checks: start, end (N,) float64; sc (K, N), where -inf
    marks an absent (class, segment) pair. Segments of different `sets` never interact."""
    out = sc.copy()
    if start.shape[0] == 0 or sc.shape[0] == 0:
        return out
    buckets, _ = _buckets(start, end, legacy, sets, sc.shape[0])
    flat_out = out.reshape(-1)
    n = sc.shape[1]
    for b, cur, cls, pair_rows in _each_bucket(buckets, sc, sets is not None):
        width = b.members.shape[1]
        # Table row first[g] + p: the factors applied when member p of group g is picked. Floored
        # at the smallest normal float so -inf (picked, padding) never meets 0.
        weight = b.iou * b.iou
        weight /= -sigma
        np.exp(weight, out=weight)
        np.maximum(weight, _TINY, out=weight)
        flat = cur.reshape(-1)
        rows = cur.shape[0]
        flat_rows = np.arange(0, rows * width, width)
        # Every step writes into buffers made here: argmax, take and add with `out=`
        # allocate nothing (mode="clip": `take` into `out` unbuffered; the indices are
        # valid), and seven calls a step is what bounds the loop.
        picks = np.empty((width, rows), dtype=np.intp)
        values = np.empty((width, rows), dtype=np.float64)
        where = np.empty(rows, dtype=np.intp)
        pair = np.empty(rows, dtype=np.intp)
        factor = np.empty_like(cur)
        for step in range(width):
            idx = cur.argmax(axis=1, out=picks[step])
            np.add(flat_rows, idx, out=where)
            flat.take(where, out=values[step], mode="clip")
            np.add(pair_rows, idx, out=pair)
            weight.take(pair, axis=0, out=factor, mode="clip")
            cur *= factor
            flat[where] = -np.inf
        # Row r picked member picks[s, r] of its group at step s; a value of -inf is
        # padding or an absent pair and changes nothing.
        done = values > -np.inf
        target = b.member.take(pair_rows + picks)
        target += cls * n
        flat_out[target[done]] = values[done]
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
              legacy: bool, sets: np.ndarray | None = None) -> np.ndarray:
    """hard_nms without the checks: start, end (N,) float64; sc (K, N), where -inf
    marks an absent (class, segment) pair (never kept)."""
    present = sc > -np.inf
    keep = np.zeros(sc.shape, dtype=bool)
    if start.shape[0] == 0 or sc.shape[0] == 0:
        return keep
    buckets, single = _buckets(start, end, legacy, sets, sc.shape[0])
    keep[:, single] = present[:, single]
    flat_keep = keep.reshape(-1)
    n = sc.shape[1]
    for b, cur, cls, pair_rows in _each_bucket(buckets, sc, sets is not None):
        width = b.members.shape[1]
        drop = b.iou >= iou_threshold
        drop[np.arange(drop.shape[0]), b.column] = True  # the kept one itself
        flat = cur.reshape(-1)
        flat_rows = np.arange(0, cur.shape[0] * width, width)
        members = b.member
        offset = cls * n
        for _ in range(width):
            idx = cur.argmax(axis=1)
            live = flat.take(flat_rows + idx) > -np.inf
            if not live.any():
                break
            pair = pair_rows + idx
            flat_keep[(offset + members.take(pair))[live]] = True
            cur[drop.take(pair, axis=0) & live[:, None]] = -np.inf
    return keep
