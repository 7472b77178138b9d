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
    t = att.size
    width = t + 2
    mask = np.zeros((thr.size, width), dtype=np.int8)
    mask[:, 1:-1] = att[None, :] > thr[:, None]
    edges = np.flatnonzero(np.diff(mask.reshape(-1)))
    rises, falls = edges[0::2], edges[1::2]
    row = rises // width
    start = rises - row * width  # rise at flat k: padded column k+1 is the first snippet, index k
    end = falls - row * width - 1  # fall at flat k: padded column k is the last snippet, index k-1
    return Runs(row.astype(np.int64), start.astype(np.int64), end.astype(np.int64))


def contrast_scores(weighted: np.ndarray, start: np.ndarray, end: np.ndarray,
                    outer_ratio: float = 0.25) -> np.ndarray:
    """Outer-inner contrast (n, K) of proposals [start, end] (inclusive snippet indices)
    on the columns of `weighted` (T, K): mean inside minus mean of the outer region,
    which is `floor(i - r*len) .. i-1` before and `j+1 .. floor(j + r*len)` after,
    clipped to the video (the released code: ceil(r*len) before, floor(r*len) after),
    and counts 0 when it holds no snippet. Means come from one cumulative sum."""
    w = np.asarray(weighted, dtype=np.float64)
    t, k = w.shape
    n = len(start)
    csum = np.zeros((t + 1, k), dtype=np.float64)
    np.cumsum(w, axis=0, out=csum[1:])
    i = np.asarray(start, dtype=np.int64)
    j = np.asarray(end, dtype=np.int64)
    length = j - i + 1
    reach = outer_ratio * length
    before = np.floor(i - reach).astype(np.int64)
    np.maximum(before, 0, out=before)
    after = np.floor(j + reach).astype(np.int64)
    np.minimum(after, t - 1, out=after)
    # One gather for the four prefix sums each proposal needs: S[j+1], S[i], S[before], S[after+1].
    at = csum.take(np.concatenate((j + 1, i, before, after + 1)), axis=0).reshape(4, n, k)
    inner = (at[0] - at[1]) / length[:, None]
    count = (i - before) + (after - j)
    outer = ((at[1] - at[2]) + (at[3] - at[0])) / np.maximum(count, 1)[:, None]
    inner -= outer
    return inner
