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
    flat = mask.reshape(-1)
    edges = np.not_equal(flat[1:], flat[:-1]).nonzero()[0]  # where the mask changes
    rises, falls = edges[0::2], edges[1::2]
    # A rise at flat k: padded column (k % width) + 1, i.e. snippet k % width, starts a run;
    # a fall at flat k: padded column k % width, i.e. snippet k % width - 1, ends it.
    end = falls % width
    end -= 1
    return Runs(rises // width, rises % width, end)


def row_prefix_sums(rows: np.ndarray) -> np.ndarray:
    """(K, T + 1) prefix sums of each row of `rows` (K, T), starting at 0: the one
    cumulative sum per row that every contrast score of the row is read from."""
    w = np.asarray(rows, dtype=np.float64)
    out = np.zeros((w.shape[0], w.shape[1] + 1), dtype=np.float64)
    np.cumsum(w, axis=1, out=out[:, 1:])
    return out


def contrast_scores(rows: np.ndarray, start: np.ndarray, end: np.ndarray,
                    outer_ratio: float = 0.25) -> np.ndarray:
    """Outer-inner contrast (K, n) of proposals [start, end] (inclusive snippet indices)
    on each row of `rows` (K, T; one attention-weighted CAS row per class): mean inside
    minus mean of the outer region, which is `floor(i - r*len) .. i-1` before and
    `j+1 .. floor(j + r*len)` after, clipped to the video (the released code: ceil(r*len)
    before, floor(r*len) after), and counts 0 when it holds no snippet."""
    prefix = row_prefix_sums(rows)
    k, width = prefix.shape
    n = len(start)
    offsets = (np.arange(k) * width)[:, None]
    return contrast_scores_prefix(prefix.reshape(-1), offsets, start, end, np.full(n, width - 1), outer_ratio)


def contrast_scores_prefix(prefix: np.ndarray, offsets: np.ndarray, start: np.ndarray, end: np.ndarray,
                           length: np.ndarray, outer_ratio: float = 0.25) -> np.ndarray:
    """`contrast_scores` read from prefix sums laid end to end, for proposals of any
    number of videos and rows at once: `prefix` is the flat concatenation of
    `row_prefix_sums` rows, `offsets` (K, n) (or (K, 1) for all proposals alike) where
    the row of each (row slot, proposal) starts in it, `start`/`end` (n,) snippet
    indices within the proposal's video and `length` (n,) that video's T. No padding to
    the longest video: the cost is that of the proposals, and each row's sums are its
    own, so results do not depend on which videos are computed together."""
    i = np.asarray(start, dtype=np.int64)
    j = np.asarray(end, dtype=np.int64)
    n = i.size
    size = j - i + 1
    reach = outer_ratio * size
    before = np.floor(i - reach).astype(np.int64)
    np.maximum(before, 0, out=before)
    after = np.floor(j + reach).astype(np.int64)
    np.minimum(after, np.asarray(length, dtype=np.int64) - 1, out=after)
    # One gather for the four prefix sums each proposal needs, in every row: S[j+1], S[i],
    # S[before], S[after+1].
    where = np.concatenate((j + 1, i, before, after + 1)).reshape(4, n)
    at = prefix.take(offsets[:, None, :] + where)  # (K, 4, n)
    inside, left, far_left, far_right = at[:, 0], at[:, 1], at[:, 2], at[:, 3]
    inner = (inside - left) / size
    count = (i - before) + (after - j)
    outer = ((left - far_left) + (far_right - inside)) / np.maximum(count, 1)
    inner -= outer
    return inner
