"""Snippet sampling: the released HAM-Net sampler's rules (the default) for videos
shorter than, equal to and longer than n, checked over many seeds against the rules
written out bin by bin; the "disjoint" and "mask" variants; uniform sampling."""

import numpy as np
import pytest

from hamnet_deploy.training.sampling import (
    _bin_edges,
    random_perturb,
    sample_features,
    sample_indices,
    uniform_sample,
)

SIZES = [(10, 3), (500, 500 - 1), (2615, 500), (1001, 500), (37, 8), (9, 2), (501, 500)]


def _bins(T, n):
    edges = (np.arange(n + 1) * T) // n
    return edges[:-1], edges[1:]


def _released_choices(T, n):
    """The released rules, one bin at a time: position i may take any snippet of the
    closed range [int(i T / n), int((i + 1) T / n)] (float division, as the released
    code computes it); the last position [int((n - 1) T / n), T - 1]; T == n: i."""
    if T == n:
        return [[i] for i in range(n)]
    cuts = [int(i * T / n) for i in range(n)]
    out = []
    for i in range(n):
        top = cuts[i + 1] if i < n - 1 else T - 1
        out.append(list(range(cuts[i], max(top, cuts[i]) + 1)))
    return out


@pytest.mark.parametrize("T", [200, 500, 2000, 37, 501, 499])
def test_released_sampler_follows_the_released_rules(T):
    n = 500 if T >= 200 else 8
    choices = _released_choices(T, n)
    draws = np.stack([random_perturb(T, n, seed) for seed in range(300)])  # the default: released
    assert draws.shape == (300, n) and draws.dtype == np.int64
    offsets = draws - np.array([c[0] for c in choices])
    widths = np.array([len(c) for c in choices])
    assert (offsets >= 0).all() and (offsets < widths).all()  # every draw is one the rules allow
    assert (np.diff(draws, axis=1) >= 0).all()  # in order; neighbours may coincide
    for width in set(widths.tolist()) - {1}:
        # each allowed snippet equally likely: pooled over the positions with this many choices
        counts = np.bincount(offsets[:, widths == width].reshape(-1), minlength=width)
        share = counts / counts.sum()
        assert np.abs(share - 1 / width).max() < 0.02, (width, share)
    if T == n:
        assert (draws == np.arange(n)).all()
    elif T < n:  # upsampled: deterministic inside a snippet, one of two where a bin straddles
        assert set(widths.tolist()) <= {1, 2} and (widths == 2).any() and (widths == 1).any()
    else:  # closed ranges: neighbours share an edge, so a snippet can be drawn twice
        assert (np.diff(draws, axis=1) == 0).any()


def test_integer_bin_edges_equal_the_released_float_ones():
    for T, n in [(2615, 500), (200, 500), (7, 20), (100_003, 750), (1, 80), (12_345, 80)]:
        np.testing.assert_array_equal(_bin_edges(T, n)[:-1], (np.arange(n) * T / n).astype(int))


@pytest.mark.parametrize("T,n", SIZES)
def test_disjoint_bins_give_one_index_per_bin(T, n):
    rng = np.random.default_rng(0)
    lo, hi = _bins(T, n)
    for _ in range(5):
        idx = random_perturb(T, n, rng, bins="disjoint")
        assert idx.shape == (n,) and idx.dtype == np.int64
        assert (idx >= lo).all() and (idx < hi).all()  # exactly one index in each bin
        assert (np.diff(idx) > 0).all()  # sorted, no repeats
        assert idx[0] >= 0 and idx[-1] < T


def test_random_perturb_reaches_every_snippet_of_a_bin():
    rng = np.random.default_rng(1)
    draws = np.stack([random_perturb(12, 3, rng, bins="disjoint") for _ in range(400)])
    for b in range(3):
        assert set(draws[:, b].tolist()) == set(range(4 * b, 4 * b + 4))


def test_random_perturb_deterministic_for_a_seed():
    a = random_perturb(2615, 500, np.random.default_rng(7))
    b = random_perturb(2615, 500, np.random.default_rng(7))
    c = random_perturb(2615, 500, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, random_perturb(2615, 500, 7))  # int seed works too
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("short", ["released", "mask", "repeat"])
def test_uniform_when_T_equals_n(short):
    for fn in (lambda: random_perturb(50, 50, 0, short), lambda: uniform_sample(50, 50, short=short)):
        np.testing.assert_array_equal(fn(), np.arange(50))


def test_short_videos():
    # default (released): n indices, each snippet repeated about n / T times
    up = random_perturb(7, 20, 0)
    assert up.shape == (20,) and set(up.tolist()) <= set(range(7))
    # mask: all snippets, the trainer pads
    np.testing.assert_array_equal(random_perturb(7, 20, 0, short="mask"), np.arange(7))
    np.testing.assert_array_equal(uniform_sample(7, 20, short="mask"), np.arange(7))
    # repeat: the released upsampling without its random choice
    rep = random_perturb(7, 20, 0, short="repeat")
    assert rep.shape == (20,) and (np.diff(rep) >= 0).all()
    np.testing.assert_array_equal(rep, (np.arange(20) * 7) // 20)
    assert set(rep.tolist()) == set(range(7))
    np.testing.assert_array_equal(uniform_sample(7, 20, short="repeat"), rep)
    np.testing.assert_array_equal(uniform_sample(7, 20), rep)  # released uniform_sampling repeats too


@pytest.mark.parametrize("T,n", SIZES)
def test_uniform_sample_starts_and_centres(T, n):
    lo, hi = _bins(T, n)
    start = uniform_sample(T, n)
    np.testing.assert_array_equal(start, lo)
    centre = uniform_sample(T, n, where="centre")
    assert (centre >= lo).all() and (centre < hi).all() and (np.diff(centre) > 0).all()
    np.testing.assert_array_equal(uniform_sample(10, 5, where="centre"), [1, 3, 5, 7, 9])


def test_sample_features():
    feats = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    out = sample_features(feats, 8, np.random.default_rng(3))
    idx = random_perturb(40, 8, np.random.default_rng(3))
    np.testing.assert_array_equal(out, feats[idx])
    assert sample_features(feats, 8, mode="uniform").shape == (8, 3)
    assert sample_features(feats, 8, mode="all").shape == (40, 3)
    assert sample_features(feats, 100, short="mask").shape == (40, 3)
    assert sample_features(feats, 100).shape == (100, 3)
    assert sample_features(feats, 100, short="repeat").shape == (100, 3)
    np.testing.assert_array_equal(sample_indices(40, 8, mode="uniform"), np.arange(0, 40, 5))
    np.testing.assert_array_equal(sample_indices(40, 8, mode="uniform", where="centre"), np.arange(2, 40, 5))


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one snippet"):
        random_perturb(0, 5)
    with pytest.raises(ValueError, match="n = 0"):
        uniform_sample(5, 0)
    with pytest.raises(ValueError, match="mode"):
        sample_indices(5, 3, mode="dense")
    with pytest.raises(ValueError, match="short"):
        random_perturb(5, 3, short="pad")
    with pytest.raises(ValueError, match="bins"):
        random_perturb(5, 3, bins="open")
    with pytest.raises(ValueError, match="T x D"):
        sample_features(np.zeros(5), 3)
