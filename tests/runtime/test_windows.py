"""Exact chunking and batching (runtime.windows + runtime.inference) against a NumPy
network with HAM-Net's structure: two 3-tap convolutions with trained (non-zero) biases
and LeakyReLU, 1x1 heads, and optionally the ActivityNet average pool (radius 2, or 10
with the pool). Non-zero biases matter: they make zero-padded rows differ from the
network's own zero padding, which is exactly what the plan has to get right."""

from __future__ import annotations

import numpy as np
import pytest

from hamnet_deploy.runtime.errors import ConfigError, DataError
from hamnet_deploy.runtime.inference import Inference, infer_videos
from hamnet_deploy.runtime.windows import exact_range, plan_windows

D, C, H = 6, 3, 5


def conv3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[B, T, I] -> [B, T, O], kernel 3, zero padding 1."""
    p = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    return p[:, :-2] @ w[0] + p[:, 1:-1] @ w[1] + p[:, 2:] @ w[2] + b


def avg_pool(x: np.ndarray, k: int) -> np.ndarray:
    """Average pool over T, stride 1, zero padding counted (AvgPool1d count_include_pad)."""
    if k == 1:
        return x
    p = np.pad(x, ((0, 0), (k // 2, k // 2), (0, 0)))
    c = np.cumsum(p, axis=1)
    c = np.concatenate([np.zeros_like(c[:, :1]), c], axis=1)
    return (c[:, k:] - c[:, :-k]) / k


class NumpyNet:
    """A runner (contract of runtime.backends) computing a HAM-Net-shaped network in float64.

    Records every input shape; refuses inputs outside [min_t, max_t] / max_batch like a
    TensorRT profile."""

    name = "numpy"

    def __init__(self, pool: int = 1, seed: int = 0, max_t: int | None = None, max_batch: int | None = None,
                 min_t: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.w1, self.b1 = rng.normal(0, 0.5, (3, D, H)), rng.normal(0, 0.5, H)
        self.w2, self.b2 = rng.normal(0, 0.5, (3, H, H)), rng.normal(0, 0.5, H)
        self.wc, self.bc = rng.normal(0, 0.5, (H, C + 1)), rng.normal(0, 0.5, C + 1)
        self.wa, self.ba = rng.normal(0, 0.5, (H, 1)), rng.normal(0, 0.5, 1)
        self.pool = pool
        self.radius = 2 + pool // 2
        self.max_t, self.max_batch, self.min_t = max_t, max_batch, min_t
        self.input_dim = D
        self.shapes: list[tuple[int, ...]] = []

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert x.dtype == np.float32 and x.ndim == 3 and x.shape[2] == D
        if self.max_t is not None:
            assert self.min_t <= x.shape[1] <= self.max_t, x.shape
        if self.max_batch is not None:
            assert x.shape[0] <= self.max_batch, x.shape
        self.shapes.append(x.shape)
        h = x.astype(np.float64)
        h = conv3(h, self.w1, self.b1)
        h = np.where(h > 0, h, 0.2 * h)
        h = conv3(h, self.w2, self.b2)
        h = np.where(h > 0, h, 0.2 * h)
        cas = h @ self.wc + self.bc
        att = 1 / (1 + np.exp(-(h @ self.wa + self.ba)))
        return avg_pool(cas, self.pool).astype(np.float32), avg_pool(att, self.pool).astype(np.float32)

    def whole(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference: the whole video in one pass, batch 1."""
        cas, att = self.infer(x[None])
        return cas[0], att[0, :, 0]


def videos(lengths, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(t, D)).astype(np.float32) for t in lengths]


def assert_same(got, ref, atol=1e-6):
    assert len(got) == len(ref)
    for (c1, a1), (c2, a2) in zip(got, ref, strict=True):
        assert c1.shape == c2.shape and a1.shape == a2.shape
        np.testing.assert_allclose(c1, c2, rtol=0, atol=atol)
        np.testing.assert_allclose(a1, a2, rtol=0, atol=atol)


# ----------------------------------------------------------------- the plan itself
@pytest.mark.parametrize("short", ["bucket", "pad"])
@pytest.mark.parametrize("radius", [0, 2, 10])
def test_plans_tile_every_video_exactly_once(short, radius):
    rng = np.random.default_rng(radius)
    for _ in range(30):
        window = int(rng.integers(2 * radius + 1, 2 * radius + 40))
        lengths = rng.integers(1, 4 * window, size=int(rng.integers(1, 12)))
        batch = int(rng.integers(1, 6))
        plan = plan_windows(lengths, window, radius, batch, short)
        plan.validate()
        assert (plan.width <= window).all()
        assert all(1 <= b <= batch for b, _ in plan.batch_shapes())
        if short == "bucket":  # no padding anywhere: every window lies inside its video
            first, count, _ = plan.copy_ranges()
            assert (count == plan.width).all() and (plan.start >= 0).all()


def test_static_profile_plans_use_one_width():
    """A DLA-style engine takes only T = W: short videos are padded, tails left-padded."""
    lengths = np.array([25, 4, 5, 7, 19, 60])
    plan = plan_windows(lengths, 20, 2, 3, "bucket", min_width=20)
    plan.validate()
    assert set(plan.width.tolist()) == {20}
    with pytest.raises(DataError, match="too short for a fixed-length engine"):
        plan_windows([3], 20, 2, 1, min_width=20)


def test_long_video_windows_step_and_overlap():
    plan = plan_windows([30], window=10, radius=2)
    plan.validate()
    # step W - 2r = 6; the last window ends exactly at T
    assert plan.start.tolist() == [0, 6, 12, 18, 20]
    assert plan.lo.tolist() == [0, 8, 14, 20, 22] and plan.hi.tolist() == [8, 14, 20, 22, 30]
    assert (plan.width == 10).all() and plan.computed_snippets == 50


def test_exact_range_rule():
    lo, hi = exact_range(np.array([0, 5, -3, 0]), np.array([10, 10, 10, 12]), np.array([10, 30, 12, 8]), 2)
    assert lo.tolist() == [0, 7, 2, 0]  # true start, interior, left padding, true start
    assert hi.tolist() == [10, 13, 5, 6]  # true end, interior, interior, right padding


def test_bad_settings():
    with pytest.raises(ConfigError, match="twice the receptive radius"):
        plan_windows([50], window=4, radius=2)
    with pytest.raises(ConfigError, match="short-video mode"):
        plan_windows([5], window=10, short="squeeze")
    with pytest.raises(DataError, match="at least one snippet"):
        plan_windows([5, 0], window=10)


# ------------------------------------------------------------ exactness end to end
@pytest.mark.parametrize("pool", [1, 17])
def test_zero_padding_is_not_exact_but_windows_are(pool):
    """Sanity: padding a video with zero rows changes its last outputs (so a naive padded
    batch would be wrong), while the planned windows are exact."""
    net = NumpyNet(pool)
    (x,) = videos([40])
    cas, _ = net.whole(x)
    padded, _ = net.infer(np.concatenate([x, np.zeros((8, D), np.float32)])[None])
    assert np.abs(padded[0, 39] - cas[39]).max() > 1e-3
    np.testing.assert_allclose(padded[0, : 40 - net.radius], cas[: 40 - net.radius], atol=1e-6)


@pytest.mark.parametrize("pool", [1, 17])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_chunked_equals_unchunked(pool, batch_size):
    net = NumpyNet(pool)
    W = 32 if pool == 1 else 48
    lengths = [3 * W, W + 1, W, W - 1, 5, 1]
    feats = videos(lengths)
    ref = [net.whole(x) for x in feats]
    net.shapes.clear()
    got = infer_videos(net, feats, net.radius, max_t=W, batch_size=batch_size)
    assert_same(got, ref)
    assert max(s[1] for s in net.shapes) <= W and max(s[0] for s in net.shapes) <= batch_size
    # the 3W video really ran in chunks
    assert sum(1 for s in net.shapes if s[1] == W) >= 3 // batch_size


@pytest.mark.parametrize("short", ["bucket", "pad"])
def test_batched_mixed_lengths_equal_one_at_a_time(short):
    net = NumpyNet(17, seed=3)
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 150, size=25).tolist() + [9, 9, 9, 20, 20]
    feats = videos(lengths, seed=2)
    ref = [net.whole(x) for x in feats]
    net.shapes.clear()
    infer = Inference(net, net.radius, max_t=64, batch_size=5, short=short)
    got = infer.run(feats)
    assert_same(got, ref)
    assert max(s[0] for s in net.shapes) == 5  # real batches happened
    assert infer.stats.videos == len(lengths) and infer.stats.batches == len(net.shapes)


def test_runner_limits_cap_the_plan():
    """A TensorRT-like profile (max T 40, max batch 2) caps --max-t and --batch-size; a
    static profile (min T = max T) pads short videos and still gives exact outputs."""
    feats = videos([100, 7, 39, 40, 41, 4, 12])  # a static engine needs T >= 2r
    ref = [NumpyNet(1).whole(x) for x in feats]
    net = NumpyNet(1, max_t=40, max_batch=2)
    got = Inference(net, net.radius, max_t=500, batch_size=8).run(feats)
    assert_same(got, ref)
    static = NumpyNet(1, max_t=16, max_batch=4, min_t=16)
    got = Inference(static, static.radius, batch_size=8).run(feats)
    assert_same(got, ref)
    assert {s[1] for s in static.shapes} == {16}


def test_stream_groups_keep_keys_and_order_independence():
    net = NumpyNet(1)
    lengths = [50, 3, 77, 12, 12, 200, 1]
    feats = videos(lengths)
    ref = {f"v{i}": net.whole(x) for i, x in enumerate(feats)}
    infer = Inference(net, net.radius, max_t=32, batch_size=3, group_snippets=60)
    seen = {}
    for key, cas, att in infer.stream((f"v{i}", x) for i, x in enumerate(feats)):
        assert key not in seen
        seen[key] = (cas, att)
    assert sorted(seen) == sorted(ref)
    assert_same([seen[k] for k in sorted(ref)], [ref[k] for k in sorted(ref)])


def test_whole_videos_without_a_limit_are_not_copied():
    net = NumpyNet(1)
    feats = videos([30, 30, 31])
    got = Inference(net, net.radius, batch_size=4).run(feats)
    assert_same(got, [net.whole(x) for x in feats])
    assert sorted(s[:2] for s in net.shapes[:2]) == [(1, 31), (2, 30)]
