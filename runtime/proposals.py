"""Class-agnostic proposals and their outer-inner contrast scores (SPEC §4 steps 3-4),
vectorised: all thresholds at once, all classes at once, no loop over snippets or
proposals."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Runs(NamedTuple):
    """Maximal runs of snippets above each threshold, in (threshold, time) order."""

    threshold: np.ndarray  # (n,) int64 index into the thresholds
    start: np.ndarray  # (n,) int64 first snippet i
    end: np.ndarray  # (n,) int64 last snippet j (inclusive)


def find_runs(attention: np.ndarray, thresholds: np.ndarray) -> Runs:
    """Every maximal run [i, j] of consecutive snippets with `attention > theta`, for
    each theta. Rows of a zero-padded (L, T + 2) mask are laid end to end, so one
    `flatnonzero` of the flat difference finds every rise and fall: rises and falls
    alternate, rises first."""
    att = np.asarray(attention, dtype=np.float64).reshape(-1)
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    width = att.size + 2
    mask = np.zeros((thr.size, width), dtype=bool)
    np.greater(att, thr[:, None], out=mask[:, 1:-1])
    edges = np.flatnonzero(np.diff(mask.reshape(-1)))  # bool diff: True where the mask changes
    rises, falls = edges[0::2], edges[1::2]
    # A rise at flat k: padded column (k % width) + 1, i.e. snippet k % width, starts a run;
    # a fall at flat k: padded column k % width, i.e. snippet k % width - 1, ends it.
    end = falls % width
    end -= 1
    return Runs(rises // width, rises % width, end)


def contrast_scores(rows: np.ndarray, start: np.ndarray, end: np.ndarray,
                    outer_ratio: float = 0.25) -> np.ndarray:
    """Outer-inner contrast (K, n) of proposals [start, end] (inclusive snippet indices)
    on each row of `rows` (K, T; one attention-weighted CAS row per class): mean inside
    minus mean of the outer region, which is `floor(i - r*len) .. i-1` before and
    `j+1 .. floor(j + r*len)` after, clipped to the video (the released code: ceil(r*len)
    before, floor(r*len) after), and counts 0 when it holds no snippet. Every mean comes
    from one cumulative sum per row."""
    w = np.asarray(rows, dtype=np.float64)
    n = len(start)
    return contrast_scores_many(w[None], np.zeros(n, dtype=np.int64), start, end,
                                np.array([w.shape[1]]), outer_ratio)


def contrast_scores_many(rows: np.ndarray, video: np.ndarray, start: np.ndarray, end: np.ndarray,
                         lengths: np.ndarray, outer_ratio: float = 0.25) -> np.ndarray:
    """`contrast_scores` for proposals of several videos at once: `rows` (V, K, Tmax)
    holds each video's K rows (zero-padded past its length `lengths[v]`), `video` (n,)
    names each proposal's video, `start`/`end` are indices within that video. Each row
    has its own cumulative sum, so results do not depend on the other videos."""
    w = np.asarray(rows, dtype=np.float64)
    v, k, t_max = w.shape
    csum = np.zeros((v, k, t_max + 1), dtype=np.float64)
    np.cumsum(w, axis=2, out=csum[:, :, 1:])
    i = np.asarray(start, dtype=np.int64)
    j = np.asarray(end, dtype=np.int64)
    vid = np.asarray(video, dtype=np.int64)
    n = i.size
    length = j - i + 1
    reach = outer_ratio * length
    before = np.floor(i - reach).astype(np.int64)
    np.maximum(before, 0, out=before)
    after = np.floor(j + reach).astype(np.int64)
    np.minimum(after, np.asarray(lengths, dtype=np.int64).take(vid) - 1, out=after)
    # One gather for the four prefix sums each proposal needs, in every row of its video:
    # S[j+1], S[i], S[before], S[after+1].
    base = vid * (k * (t_max + 1))
    where = np.concatenate((j + 1, i, before, after + 1)) + np.tile(base, 4)
    where = where + (np.arange(k) * (t_max + 1))[:, None]  # (K, 4n)
    at = csum.reshape(-1).take(where).reshape(k, 4, n)
    inside, left, far_left, far_right = at[:, 0], at[:, 1], at[:, 2], at[:, 3]
    inner = (inside - left) / length
    count = (i - before) + (after - j)
    outer = ((left - far_left) + (far_right - inside)) / np.maximum(count, 1)
    inner -= outer
    return inner
