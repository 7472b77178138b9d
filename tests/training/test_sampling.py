import numpy as np
import pytest

from hamnet_deploy.training.sampling import (
    random_perturb,
    sample_features,
    sample_indices,
    uniform_sample,
)

SIZES = [(10, 3), (500, 500 - 1), (2615, 500), (1001, 500), (37, 8), (9, 2), (501, 500)]


def _bins(T, n):
    edges = (np.arange(n + 1) * T) // n
    return edges[:-1], edges[1:]


@pytest.mark.parametrize("T,n", SIZES)
def test_random_perturb_one_index_per_bin(T, n):
    rng = np.random.default_rng(0)
    lo, hi = _bins(T, n)
    for _ in range(5):
        idx = random_perturb(T, n, rng)
        assert idx.shape == (n,) and idx.dtype == np.int64
        assert (idx >= lo).all() and (idx < hi).all()  # exactly one index in each bin
        assert (np.diff(idx) > 0).all()  # sorted, no repeats
        assert idx[0] >= 0 and idx[-1] < T


def test_random_perturb_reaches_every_snippet_of_a_bin():
    rng = np.random.default_rng(1)
    draws = np.stack([random_perturb(12, 3, rng) for _ in range(400)])
    for b in range(3):
        assert set(draws[:, b].tolist()) == set(range(4 * b, 4 * b + 4))


def test_random_perturb_deterministic_for_a_seed():
    a = random_perturb(2615, 500, np.random.default_rng(7))
    b = random_perturb(2615, 500, np.random.default_rng(7))
    c = random_perturb(2615, 500, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, random_perturb(2615, 500, 7))  # int seed works too
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("short", ["all", "repeat"])
def test_uniform_when_T_equals_n(short):
    for fn in (lambda: random_perturb(50, 50, 0, short), lambda: uniform_sample(50, 50, short=short)):
        np.testing.assert_array_equal(fn(), np.arange(50))


def test_short_videos():
    # default: all snippets, the trainer pads
    np.testing.assert_array_equal(random_perturb(7, 20, 0), np.arange(7))
    np.testing.assert_array_equal(uniform_sample(7, 20), np.arange(7))
    # released-code convention: n indices, each snippet repeated
    rep = random_perturb(7, 20, 0, short="repeat")
    assert rep.shape == (20,) and (np.diff(rep) >= 0).all()
    np.testing.assert_array_equal(rep, (np.arange(20) * 7) // 20)
    assert set(rep.tolist()) == set(range(7))
    np.testing.assert_array_equal(uniform_sample(7, 20, short="repeat"), rep)


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
    assert sample_features(feats, 100).shape == (40, 3)
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
    with pytest.raises(ValueError, match="T x D"):
        sample_features(np.zeros(5), 3)
