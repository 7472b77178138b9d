"""Snippet sampling for training (SPEC §3): pick n of a video's T snippets.

`random_perturb` ("random perturb", the W-TALC/HAM-Net training sampler) splits [0, T)
into n equal bins at `floor(i T / n)` and draws one index per bin, in order. Two
settings say how, each defaulting to the released HAM-Net code (`data_loader/dataset.py`,
`random_perturb`), which draws for every video, whatever its length, exactly n indices:

`short` (videos with T < n; 85 % of THUMOS14 training videos at n = 500):
- `"released"`: n indices; a bin inside one snippet gives that snippet, a bin that
  straddles snippets s and s + 1 gives one of the two at random, so each snippet is
  repeated about n / T times (the released upsampling).
- `"mask"`: all T snippets, `arange(T)`; the trainer pads the batch and masks the
  padding, so top-k pooling sees the real T (k = T // r instead of n // r).
- `"repeat"`: n indices `floor(i T / n)`, the released upsampling without its jitter.

`bins` (videos with T > n):
- `"released"`: bin i draws from the closed range [floor(i T / n), floor((i + 1) T / n)],
  the last bin from [floor((n - 1) T / n), T - 1]: neighbours can draw the same snippet.
- `"disjoint"`: half-open bins [floor(i T / n), floor((i + 1) T / n)): exactly one
  index per bin, strictly increasing.

T == n gives `arange(n)` in every mode. `uniform_sample` takes each bin's start (the
released `uniform_sampling`, which repeats snippets of short videos the same way) or
its centre. Everything is vectorised: no Python loop over bins.
"""

from __future__ import annotations

import numpy as np

SHORT_MODES = ("released", "mask", "repeat")
BIN_MODES = ("released", "disjoint")
SAMPLE_MODES = ("random", "uniform", "all")


def _check(T: int, n: int, short: str, bins: str = "released") -> None:
    if int(T) < 1:
        raise ValueError(f"a video needs at least one snippet, got T = {T}")
    if int(n) < 1:
        raise ValueError(f"the number of sampled snippets must be >= 1, got n = {n}")
    if short not in SHORT_MODES:
        raise ValueError(f"short must be one of {SHORT_MODES}, got {short!r}")
    if bins not in BIN_MODES:
        raise ValueError(f"bins must be one of {BIN_MODES}, got {bins!r}")


def _bin_edges(T: int, n: int) -> np.ndarray:
    """(n + 1,) int64 edges floor(i T / n), i = 0..n (exact integer arithmetic; the
    released code's float `int(i * T / n)` is the same for any T, n below 2**26)."""
    return (np.arange(n + 1, dtype=np.int64) * int(T)) // int(n)


def _released(T: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """The released sampler for T != n: bin i draws uniformly from the closed range
    [edge_i, edge_{i+1}] (the last bin from [edge_{n-1}, T - 1]); a bin whose two
    edges are the same snippet gives that snippet."""
    edges = _bin_edges(T, n)
    high = edges[1:].copy()
    high[-1] = T - 1
    return rng.integers(edges[:-1], high, endpoint=True)


def random_perturb(T: int, n: int, rng: np.random.Generator | int | None = None,
                   short: str = "released", bins: str = "released") -> np.ndarray:
    """int64 snippet indices, in order: one uniform draw from each of n equal bins of
    [0, T), or for T < n with `short="mask"` all T snippets (see the module docstring).
    `rng` is a numpy Generator or a seed; the same seed gives the same indices."""
    _check(T, n, short, bins)
    if T == n:
        return np.arange(n, dtype=np.int64)
    if T < n and short != "released":
        return _short(T, n, short)
    generator = np.random.default_rng(rng)
    if T < n or bins == "released":
        return _released(T, n, generator)
    edges = _bin_edges(T, n)
    return generator.integers(edges[:-1], edges[1:])


def uniform_sample(T: int, n: int, where: str = "start", short: str = "released") -> np.ndarray:
    """Deterministic int64 indices, in order: each of n equal bins' start (or centre).

    `where="start"`: floor(i T / n), the released code's uniform sampling (for T < n it
    repeats snippets: `short="released"` and `"repeat"` are the same here);
    `where="centre"`: the middle snippet of each bin, lo + (hi - lo) // 2. `short="mask"`
    gives all T snippets of a shorter video."""
    _check(T, n, short)
    if where not in ("start", "centre", "center"):
        raise ValueError(f"where must be 'start' or 'centre', got {where!r}")
    if T == n:
        return np.arange(n, dtype=np.int64)
    if T < n:
        return _short(T, n, "repeat" if short == "released" else short)
    edges = _bin_edges(T, n)
    if where == "start":
        return edges[:-1]
    return edges[:-1] + (edges[1:] - edges[:-1]) // 2


def _short(T: int, n: int, short: str) -> np.ndarray:
    if short == "mask":
        return np.arange(T, dtype=np.int64)
    return _bin_edges(T, n)[:-1]


def sample_indices(T: int, n: int, rng: np.random.Generator | int | None = None, mode: str = "random",
                   short: str = "released", where: str = "start", bins: str = "released") -> np.ndarray:
    """Indices for `mode`: "random" (random_perturb), "uniform" (each bin's start, or its
    centre with `where="centre"`) or "all" (arange(T))."""
    if mode == "random":
        return random_perturb(T, n, rng, short, bins)
    if mode == "uniform":
        return uniform_sample(T, n, where=where, short=short)
    if mode == "all":
        _check(T, n, short, bins)
        return np.arange(T, dtype=np.int64)
    raise ValueError(f"mode must be one of {SAMPLE_MODES}, got {mode!r}")


def sample_features(features: np.ndarray, n: int, rng: np.random.Generator | int | None = None,
                    mode: str = "random", short: str = "released", where: str = "start",
                    bins: str = "released") -> np.ndarray:
    """The sampled rows of a T x D feature array: n rows, or T for mode="all" and for
    T < n with short="mask" (the trainer pads those)."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be T x D, got shape {features.shape}")
    return features[sample_indices(len(features), n, rng, mode, short, where, bins)]
