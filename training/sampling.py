"""Snippet sampling for training (SPEC §3): pick n of a video's T snippets.

`random_perturb` ("random perturb", the W-TALC/HAM-Net training sampler): split [0, T)
into n equal bins and draw one index per bin, sorted. Bin i is the integer range
[floor(i T / n), floor((i + 1) T / n)); for T > n every bin holds at least one snippet,
so the n indices are strictly increasing. (The released code draws from the closed range
[floor(i T / n), floor((i + 1) T / n)], so two neighbours can coincide; we use half-open
bins, exactly one index per bin.)

`uniform_sample`: the same bins, deterministic: each bin's start (the released code's
`uniform_sampling`) or its centre.

Videos with T <= n (85 % of THUMOS14 training videos at n = 500):
- `short="all"` (default): return all T snippets, `arange(T)`; the trainer pads the batch
  to n and masks the padding, so top-k pooling sees the real T.
- `short="repeat"`: return n indices `floor(i T / n)` (each snippet repeated about n / T
  times): the length-n sequence the released HAM-Net code trains on (it upsamples short
  videos this way, with slight jitter where bins straddle a snippet boundary).
For T == n both give `arange(n)`. Everything is vectorised: no Python loop over bins.
"""

from __future__ import annotations

import numpy as np

SHORT_MODES = ("all", "repeat")
SAMPLE_MODES = ("random", "uniform", "all")


def _check(T: int, n: int, short: str) -> None:
    if int(T) < 1:
        raise ValueError(f"a video needs at least one snippet, got T = {T}")
    if int(n) < 1:
        raise ValueError(f"the number of sampled snippets must be >= 1, got n = {n}")
    if short not in SHORT_MODES:
        raise ValueError(f"short must be one of {SHORT_MODES}, got {short!r}")


def _bin_edges(T: int, n: int) -> np.ndarray:
    """(n + 1,) int64 edges floor(i T / n), i = 0..n (exact integer arithmetic)."""
    return (np.arange(n + 1, dtype=np.int64) * int(T)) // int(n)


def random_perturb(T: int, n: int, rng: np.random.Generator | int | None = None,
                   short: str = "all") -> np.ndarray:
    """Sorted int64 snippet indices: one uniform draw from each of n equal bins of [0, T).

    T > n: n strictly increasing indices in [0, T). T <= n: see the module docstring
    (`short="all"` gives `arange(T)`, `short="repeat"` gives n indices `floor(i T / n)`).
    `rng` is a numpy Generator or a seed; the same seed gives the same indices.
    """
    _check(T, n, short)
    if T <= n:
        return _short(T, n, short)
    edges = _bin_edges(T, n)
    return np.random.default_rng(rng).integers(edges[:-1], edges[1:])


def uniform_sample(T: int, n: int, where: str = "start", short: str = "all") -> np.ndarray:
    """Deterministic sorted int64 indices: each of n equal bins' start (or centre) snippet.

    `where="start"`: floor(i T / n), the released code's uniform sampling;
    `where="centre"`: the middle snippet of each bin, lo + (hi - lo) // 2. T <= n: as
    `random_perturb`.
    """
    _check(T, n, short)
    if where not in ("start", "centre", "center"):
        raise ValueError(f"where must be 'start' or 'centre', got {where!r}")
    if T <= n:
        return _short(T, n, short)
    edges = _bin_edges(T, n)
    if where == "start":
        return edges[:-1]
    return edges[:-1] + (edges[1:] - edges[:-1]) // 2


def _short(T: int, n: int, short: str) -> np.ndarray:
    if short == "all" or T == n:
        return np.arange(T, dtype=np.int64)
    return _bin_edges(T, n)[:-1]


def sample_indices(T: int, n: int, rng: np.random.Generator | int | None = None, mode: str = "random",
                   short: str = "all", where: str = "start") -> np.ndarray:
    """Indices for `mode`: "random" (random_perturb), "uniform" (each bin's start, or its
    centre with `where="centre"`) or "all" (arange(T))."""
    if mode == "random":
        return random_perturb(T, n, rng, short)
    if mode == "uniform":
        return uniform_sample(T, n, where=where, short=short)
    if mode == "all":
        _check(T, n, short)
        return np.arange(T, dtype=np.int64)
    raise ValueError(f"mode must be one of {SAMPLE_MODES}, got {mode!r}")


def sample_features(features: np.ndarray, n: int, rng: np.random.Generator | int | None = None,
                    mode: str = "random", short: str = "all", where: str = "start") -> np.ndarray:
    """The sampled rows of a T x D feature array: (n' x D) with n' = n, or T when short="all"
    and T <= n (the trainer pads), or T for mode="all"."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be T x D, got shape {features.shape}")
    return features[sample_indices(len(features), n, rng, mode, short, where)]
