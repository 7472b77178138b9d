"""HAM-Net losses: every term against an independent NumPy computation (T = 6, C = 2)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from hamnet_deploy.training.config import ABLATIONS, LossConfig, apply_ablation
from hamnet_deploy.training.losses import (
    HamNetLoss,
    bcl_loss,
    drop_masks,
    guide_loss,
    hal_loss,
    mil_loss,
    min_logit_multiply,
    sal_loss,
    sparsity_loss,
    ssal_loss,
    topk_k,
    topk_mil_pool,
)

# One video, T = 6 snippets, C = 2 classes + background (last column).
S = np.array(
    [
        [1.0, -0.5, 0.2],
        [2.0, 0.0, -1.0],
        [-1.0, 1.5, 0.5],
        [0.5, 0.3, 1.0],
        [0.0, -2.0, 0.8],
        [1.2, 0.7, -0.3],
    ]
)
A = np.array([0.8, 0.1, 0.5, 0.05, 0.7, 0.3])
Y = np.array([1.0, 0.0])
R = 3  # k = floor(6 / 3) = 2
GAMMA = 0.6  # relative: g = 0.6 * 0.8 = 0.48 -> drops snippets 0, 2, 4


# ------------------------------ NumPy reference ------------------------------ #
def np_mil(z: np.ndarray, y: np.ndarray, bg: float, k: int, eps: float = 0.0) -> float:
    v = np.sort(z, axis=0)[::-1][:k].mean(axis=0)
    logp = v - np.log(np.exp(v).sum())
    t = np.append(y, bg)
    t = t / (t.sum() + eps)  # the released code: eps = 1e-4
    return float(-(t * logp).sum())


def np_minmul(m: np.ndarray, s: np.ndarray) -> np.ndarray:
    mn = s.min(axis=1, keepdims=True)
    return m[:, None] * (s - mn) + mn


def np_terms(s, a, y, r, gamma, mode="relative", keep_min=True, sparsity="mean", eps=0.0):
    t = s.shape[0]
    k = max(1, t // r)
    g = gamma * a.max() if mode == "relative" else gamma
    hard = (a < g).astype(float)
    semi = a * hard
    if keep_min:
        z_ssal, z_hal = np_minmul(semi, s), np_minmul(hard, s)
    else:
        z_ssal, z_hal = semi[:, None] * s, hard[:, None] * s
    e = np.exp(s)
    bgp = e[:, -1] / e.sum(axis=1)
    return {
        "bcl": np_mil(s, y, 1.0, k, eps),
        "sal": np_mil(a[:, None] * s, y, 0.0, k, eps),
        "ssal": np_mil(z_ssal, y, 0.0, k, eps),
        "hal": np_mil(z_hal, y, 1.0, k, eps),
        "sparsity": a.mean() if sparsity == "mean" else a.sum(),
        "guide": float(np.abs(1.0 - a - bgp).mean()),
    }


def tt(x) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=torch.float64)


def one():
    """The hand-made video as a batch of 1: cas [1,6,3], attention [1,6,1], labels [1,2]."""
    return tt(S)[None], tt(A)[None, :, None], tt(Y)[None]


# ------------------------------- top-k pooling ------------------------------- #
def test_topk_k_rule():
    assert topk_k(6, 3) == 2
    assert topk_k(500, 10) == 50
    assert topk_k(80, 20) == 4
    assert topk_k(29, 10) == 2
    assert topk_k(5, 10) == 1  # T < r
    assert topk_k(1, 20) == 1


def test_topk_pool_hand_values():
    cas, _, _ = one()
    v = topk_mil_pool(cas, 2)[0].numpy()
    # column 0: 2.0, 1.2; column 1: 1.5, 0.7; column 2: 1.0, 0.8
    np.testing.assert_allclose(v, [1.6, 1.1, 0.9])


def test_bcl_hand_value():
    cas, _, y = one()
    v = np.array([1.6, 1.1, 0.9])
    lse = math.log(np.exp(v).sum())
    expected = lse - 0.5 * (1.6 + 0.9)  # target [1/2, 0, 1/2]
    assert float(bcl_loss(cas, y, R)) == pytest.approx(expected, rel=1e-12)
    assert float(mil_loss(cas, y, 1.0, R)) == pytest.approx(expected, rel=1e-12)


def test_topk_at_short_video_is_max_pooling():
    cas, _, y = one()
    # r = 10 > T = 6: k = 1, i.e. max over time.
    v = S.max(axis=0)
    expected = math.log(np.exp(v).sum()) - 0.5 * (v[0] + v[2])
    assert float(mil_loss(cas, y, 1.0, 10)) == pytest.approx(expected, rel=1e-12)


def test_multi_label_target_is_normalised():
    cas, _, _ = one()
    y = tt([[1.0, 1.0]])
    v = np.array([1.6, 1.1, 0.9])
    logp = v - math.log(np.exp(v).sum())
    assert float(mil_loss(cas, y, 0.0, R)) == pytest.approx(-(logp[0] + logp[1]) / 2)
    assert float(mil_loss(cas, y, 1.0, R)) == pytest.approx(-logp.sum() / 3)


# -------------------------------- drop masks -------------------------------- #
def test_drop_masks_relative():
    _, a, _ = one()
    semi, hard = drop_masks(a, GAMMA, "relative")
    # g = 0.48: kept (not dropped) are the snippets below it: 0.1, 0.05, 0.3
    np.testing.assert_array_equal(hard[0, :, 0].numpy(), [0, 1, 0, 1, 0, 1])
    np.testing.assert_allclose(semi[0, :, 0].numpy(), [0, 0.1, 0, 0.05, 0, 0.3])
    assert semi.shape == a.shape and hard.shape == a.shape


def test_drop_masks_absolute():
    _, a, _ = one()
    semi, hard = drop_masks(a, GAMMA, "absolute")
    # g = 0.6: 0.5 is now below the threshold too
    np.testing.assert_array_equal(hard[0, :, 0].numpy(), [0, 1, 1, 1, 0, 1])
    np.testing.assert_allclose(semi[0, :, 0].numpy(), [0, 0.1, 0.5, 0.05, 0, 0.3])
    # [B, T] attention works too
    semi2, hard2 = drop_masks(a[..., 0], GAMMA, "absolute")
    assert torch.equal(hard2, hard[..., 0])


def test_drop_masks_relative_is_per_video_and_ignores_padding():
    a = tt([[0.8, 0.1, 0.5, 0.05, 0.0, 0.0], [0.2, 0.15, 0.1, 0.05, 0.9, 0.9]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    _, hard = drop_masks(a, 0.6, "relative", mask)
    # video 0: g = 0.48; video 1: g = 0.6 * 0.2 = 0.12 (padded 0.9 must not count)
    np.testing.assert_array_equal(hard.numpy(), [[0, 1, 0, 1, 0, 0], [0, 0, 1, 1, 0, 0]])


def test_min_logit_multiply_hand_values():
    s = tt([[[1.0, -0.5, 0.2], [2.0, 0.0, -1.0]]])
    m = tt([[[0.0], [0.5]]])
    out = min_logit_multiply(m, s)[0].numpy()
    np.testing.assert_allclose(out[0], [-0.5, -0.5, -0.5])  # dropped: the row's min logit
    np.testing.assert_allclose(out[1], [0.5 * 3.0 - 1.0, 0.5 * 1.0 - 1.0, -1.0])
    np.testing.assert_allclose(min_logit_multiply(torch.ones(1, 2, 1, dtype=s.dtype), s), s)


# ------------------------------ each loss term ------------------------------ #
@pytest.mark.parametrize("mode", ["relative", "absolute"])
@pytest.mark.parametrize("keep_min", [True, False])
def test_each_term_matches_numpy(mode, keep_min):
    cas, a, y = one()
    ref = np_terms(S, A, Y, R, GAMMA, mode, keep_min)
    semi, hard = drop_masks(a, GAMMA, mode)
    got = {
        "bcl": bcl_loss(cas, y, R),
        "sal": sal_loss(cas, a, y, R),
        "ssal": ssal_loss(cas, semi, y, R, keep_min_logit=keep_min),
        "hal": hal_loss(cas, hard, y, R, keep_min_logit=keep_min),
        "sparsity": sparsity_loss(a),
        "guide": guide_loss(cas, a),
    }
    for name, value in got.items():
        assert float(value) == pytest.approx(ref[name], rel=1e-10), name


def test_sal_uses_plain_product_and_hal_min_logit_changes_value():
    cas, a, y = one()
    k = 2
    assert float(sal_loss(cas, a, y, R)) == pytest.approx(np_mil(A[:, None] * S, Y, 0.0, k))
    _, hard = drop_masks(a, GAMMA)
    with_min = float(hal_loss(cas, hard, y, R, keep_min_logit=True))
    plain = float(hal_loss(cas, hard, y, R, keep_min_logit=False))
    assert with_min != pytest.approx(plain)


def test_sparsity_sum_and_guide_hand_value():
    cas, a, _ = one()
    assert float(sparsity_loss(a, reduce="sum")) == pytest.approx(A.sum())
    assert float(sparsity_loss(a)) == pytest.approx(A.mean())
    # guide, snippet 0 by hand: softmax([1, -0.5, 0.2])[2]
    e = [math.exp(1.0), math.exp(-0.5), math.exp(0.2)]
    g0 = abs(1 - 0.8 - e[2] / sum(e))
    per = guide_loss(cas[:, :1], a[:, :1], reduction="none")
    assert float(per[0]) == pytest.approx(g0)


# -------------------------------- gradients --------------------------------- #
def _leaves():
    cas = tt(S)[None].requires_grad_(True)
    att = tt(A)[None, :, None].requires_grad_(True)
    return cas, att, tt(Y)[None]


def test_sal_and_ssal_train_the_attention():
    cas, att, y = _leaves()
    (g,) = torch.autograd.grad(sal_loss(cas, att, y, R), att)
    assert g.abs().sum() > 0
    cas, att, y = _leaves()
    semi, _ = drop_masks(att, GAMMA)
    (g,) = torch.autograd.grad(ssal_loss(cas, semi, y, R), att)
    assert g.abs().sum() > 0
    # only the kept (below-threshold) snippets can receive SSAL gradient
    assert torch.all(g[0, [0, 2, 4], 0] == 0)


def test_hal_gives_no_gradient_to_attention():
    cas, att, y = _leaves()
    _, hard = drop_masks(att, GAMMA)
    loss = hal_loss(cas, hard, y, R)
    g_att, g_cas = torch.autograd.grad(loss, [att, cas], allow_unused=True)
    assert g_att is None or torch.all(g_att == 0)
    assert g_cas.abs().sum() > 0


def test_bcl_and_hal_alone_give_no_gradient_to_attention():
    cas, att, y = _leaves()
    cfg = dataclasses.replace(
        LossConfig(r=R, gamma=GAMMA),
        use_sal=False,
        use_ssal=False,
        use_sparsity=False,
        use_guide=False,
    )
    total, _ = HamNetLoss(cfg)(cas, att, y)
    g = torch.autograd.grad(total, att, allow_unused=True)[0]
    assert g is None or torch.all(g == 0)


# ------------------------------- total loss --------------------------------- #
def test_total_weighting_matches_formula():
    cas, a, y = one()
    cfg = LossConfig(alpha=0.3, beta=0.7, lm1=0.25, lm2=2.0, p=0.4, gamma=GAMMA, r=R)
    assert cfg.label_eps == 1e-4  # the released code's target: labels / (sum + 1e-4)
    total, terms = HamNetLoss(cfg)(cas, a, y)
    ref = np_terms(S, A, Y, R, GAMMA, eps=1e-4)
    expected = (
        0.25 * (0.6 * ref["bcl"] + 0.4 * ref["hal"])
        + 2.0 * (0.6 * ref["sal"] + 0.4 * ref["ssal"])
        + 0.3 * ref["sparsity"]
        + 0.7 * ref["guide"]
    )
    assert float(total) == pytest.approx(expected, rel=1e-10)
    assert set(terms) == {"bcl", "sal", "ssal", "hal", "sparsity", "guide", "total"}
    for name in ref:
        assert float(terms[name]) == pytest.approx(ref[name], rel=1e-10)
    assert not terms["total"].requires_grad
    exact, _ = HamNetLoss(dataclasses.replace(cfg, label_eps=0.0))(cas, a, y)
    assert float(exact) != pytest.approx(float(total), rel=1e-6)  # the epsilon is seen


def test_paper_lambdas_of_thumos_defaults():
    # paper: lambda0 = lambda1 = 0.8, lambda2 = lambda3 = 0.2 for THUMOS14
    assert LossConfig().paper_lambdas() == pytest.approx((0.8, 0.8, 0.2, 0.2))


@pytest.mark.parametrize("term", ["bcl", "sal", "ssal", "hal", "sparsity", "guide"])
def test_switched_off_term_contributes_zero(term):
    cas, a, y = one()
    base = LossConfig(gamma=GAMMA, r=R)
    full, full_terms = HamNetLoss(base)(cas, a, y)
    off = dataclasses.replace(base, **{f"use_{term}": False})
    total, terms = HamNetLoss(off)(cas, a, y)
    assert term not in terms
    w = base.weights()[term]
    assert off.weights()[term] == 0.0
    # no renormalisation: the other weights are unchanged
    assert float(total) == pytest.approx(float(full) - w * float(full_terms[term]), rel=1e-10)


def test_ablation_presets_follow_table_1():
    expect = {
        "exp1": {"bcl"},
        "exp2": {"bcl", "sal"},
        "exp5": {"bcl", "sal", "sparsity", "guide"},
        "exp9": {"bcl", "sal", "hal", "sparsity", "guide"},
        "exp10": {"bcl", "sal", "ssal", "sparsity", "guide"},
        "exp11": {"bcl", "sal", "ssal", "hal", "sparsity", "guide"},
    }
    for name, terms in expect.items():
        assert isinstance(ABLATIONS[name]["description"], str) and ABLATIONS[name]["description"]
        cfg = apply_ablation(LossConfig(), name)
        assert set(cfg.active_terms()) == terms, name
    cas, a, y = one()
    total, terms = HamNetLoss(apply_ablation(LossConfig(r=R), "exp1"))(cas, a, y)
    assert set(terms) == {"bcl", "total"}
    assert float(total) == pytest.approx(0.8 * np_terms(S, A, Y, R, 0.2, eps=1e-4)["bcl"])


# ------------------------------ padded batches ------------------------------ #
def test_padded_batch_equals_per_video():
    rng = np.random.default_rng(0)
    lens = [6, 4, 9, 1]
    tmax = max(lens)
    c1 = 3
    cas = np.full((len(lens), tmax, c1), 50.0)  # padding that would win any top-k
    att = np.full((len(lens), tmax, 1), 0.99)  # and any max / mean
    labels = np.array([[1, 0], [0, 1], [1, 1], [1, 0]], dtype=float)
    vids = []
    for b, n in enumerate(lens):
        s = rng.normal(size=(n, c1))
        a = rng.uniform(0.01, 0.99, size=n)
        cas[b, :n] = s
        att[b, :n, 0] = a
        vids.append((s, a))
    mask = torch.tensor(np.arange(tmax)[None] < np.array(lens)[:, None])
    cfg = LossConfig(alpha=0.3, beta=0.7, lm1=0.5, lm2=1.5, p=0.3, gamma=0.5, r=3)
    crit = HamNetLoss(cfg)
    total, terms = crit(tt(cas), tt(att), tt(labels), mask=mask)
    total_l, terms_l = crit(tt(cas), tt(att), tt(labels), lengths=torch.tensor(lens))
    assert float(total_l) == pytest.approx(float(total), rel=1e-12)
    per_video = []
    for b, (s, a) in enumerate(vids):
        t_b, terms_b = crit(tt(s)[None], tt(a)[None, :, None], tt(labels[b])[None])
        per_video.append((float(t_b), {k: float(v) for k, v in terms_b.items()}))
        ref = np_terms(s, a, labels[b], 3, 0.5, eps=1e-4)
        for name in ref:  # also against NumPy, per video
            assert per_video[-1][1][name] == pytest.approx(ref[name], rel=1e-10), (b, name)
    assert float(total) == pytest.approx(np.mean([t for t, _ in per_video]), rel=1e-10)
    for name in ("bcl", "sal", "ssal", "hal", "sparsity", "guide"):
        expected = np.mean([d[name] for _, d in per_video])
        assert float(terms[name]) == pytest.approx(expected, rel=1e-10), name


def test_padded_pool_with_mask_and_per_video_k():
    z = tt([[[1.0], [3.0], [2.0], [9.0]], [[5.0], [4.0], [0.0], [7.0]]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    v = topk_mil_pool(z, torch.tensor([2, 3]), mask)
    np.testing.assert_allclose(v[:, 0].numpy(), [2.5, 16.0 / 3.0])
