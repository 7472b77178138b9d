"""Soft-NMS and hard NMS: hand-computed cases and agreement with a one-at-a-time loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hamnet_deploy.runtime.errors import DataError
from hamnet_deploy.runtime.nms import _hard_nms, _soft_nms, hard_nms, segment_iou, soft_nms


def loop_soft(seg, scores, sigma=0.3, legacy=False):
    """Pick the best remaining (ties: earlier start, then input order), decay the rest."""
    seg = np.asarray(seg, float)
    out = np.array(scores, float)
    off = 1.0 if legacy else 0.0
    left = sorted(range(len(seg)), key=lambda i: (seg[i, 0], i))
    while left:
        best = max(left, key=lambda i: (out[i], -left.index(i)))
        left.remove(best)
        for i in left:
            inter = max(0.0, min(seg[best, 1], seg[i, 1]) - max(seg[best, 0], seg[i, 0]) + off)
            union = (seg[best, 1] - seg[best, 0] + off) + (seg[i, 1] - seg[i, 0] + off) - inter
            iou = inter / union if union > 0 else 0.0
            out[i] *= math.exp(-(iou * iou) / sigma)
    return out


def loop_hard(seg, scores, thr=0.5, legacy=False):
    seg = np.asarray(seg, float)
    off = 1.0 if legacy else 0.0
    left = sorted(range(len(seg)), key=lambda i: (seg[i, 0], i))
    left.sort(key=lambda i: -scores[i])  # stable: ties keep (start, input) order
    keep = np.zeros(len(seg), bool)
    while left:
        best = left.pop(0)
        keep[best] = True
        rest = []
        for i in left:
            inter = max(0.0, min(seg[best, 1], seg[i, 1]) - max(seg[best, 0], seg[i, 0]) + off)
            union = (seg[best, 1] - seg[best, 0] + off) + (seg[i, 1] - seg[i, 0] + off) - inter
            if (inter / union if union > 0 else 0.0) < thr:
                rest.append(i)
        left = rest
    return keep


def test_iou_hand_computed():
    iou = segment_iou([[0, 2], [10, 11]], [[1, 3], [0, 2], [2, 4], [5, 5]])
    np.testing.assert_allclose(iou, [[1 / 3, 1, 0, 0], [0, 0, 0, 0]])
    legacy = segment_iou([[0, 2]], [[1, 3], [2.5, 3]], legacy_length=True)
    np.testing.assert_allclose(legacy, [[2 / 4, 0.5 / 4]])  # +1 on lengths and intersection
    assert segment_iou([[1, 1]], [[1, 1]])[0, 0] == 0  # empty union


def test_soft_nms_hand_computed():
    seg = [[0, 2], [1, 3], [10, 11]]
    out = soft_nms(seg, [1.0, 0.8, 0.5])
    np.testing.assert_allclose(out, [1.0, 0.8 * math.exp(-(1 / 9) / 0.3), 0.5])
    legacy = soft_nms(seg, [1.0, 0.8, 0.5], legacy_length=True)
    np.testing.assert_allclose(legacy, [1.0, 0.8 * math.exp(-0.25 / 0.3), 0.5])
    # legacy makes segments 0.5 s apart interact
    gap = [[0, 1], [1.5, 2.5]]
    np.testing.assert_allclose(soft_nms(gap, [1.0, 1.0]), [1.0, 1.0])
    np.testing.assert_allclose(soft_nms(gap, [1.0, 1.0], legacy_length=True),
                               [1.0, math.exp(-(1 / 7) ** 2 / 0.3)])


def test_soft_nms_order_matters():
    # B outranks A only after C (picked first) decays A.
    seg = [[0, 4], [3, 7], [0, 3.5]]
    out = soft_nms(seg, [0.9, 0.85, 1.0])
    w_ca = math.exp(-(3.5 / 4) ** 2 / 0.3)
    w_cb = math.exp(-(0.5 / 7) ** 2 / 0.3)
    w_ab = math.exp(-(1 / 7) ** 2 / 0.3)
    b_after_c = 0.85 * w_cb
    a_after_c = 0.9 * w_ca
    assert b_after_c > a_after_c
    np.testing.assert_allclose(out, [a_after_c * w_ab, b_after_c, 1.0])


def test_duplicates_and_equal_scores():
    seg = [[1, 2], [1, 2], [1, 2]]
    c = math.exp(-1 / 0.3)
    np.testing.assert_allclose(soft_nms(seg, [2.0, 2.0, 2.0]), [2.0, 2 * c, 2 * c * c])
    assert hard_nms(seg, [2.0, 2.0, 2.0]).tolist() == [True, False, False]
    # equal scores, different segments: the earlier start wins
    seg2 = [[1, 3], [0, 2]]
    assert hard_nms(seg2, [1.0, 1.0], iou_threshold=0.3).tolist() == [False, True]
    np.testing.assert_allclose(soft_nms(seg2, [1.0, 1.0]), [math.exp(-(1 / 3) ** 2 / 0.3), 1.0])


def test_hard_nms_hand_computed():
    seg = [[0, 2], [1, 3], [0.2, 2.2], [10, 12]]
    keep = hard_nms(seg, [1.0, 0.8, 0.9, 0.1])
    assert keep.tolist() == [True, True, False, True]  # IoU 1/3 < 0.5 stays; 1.8/2.2 goes
    assert hard_nms(seg, [1.0, 0.8, 0.9, 0.1], iou_threshold=1 / 3).tolist() == [True, False, False, True]


def test_negative_scores_move_toward_zero_as_in_the_released_code():
    out = soft_nms([[0, 2], [0, 2]], [-1.0, -2.0])
    np.testing.assert_allclose(out, [-1.0, -2.0 * math.exp(-1 / 0.3)])
    assert abs(out[1]) < 2.0


def test_several_classes_at_once_and_empty():
    seg = [[0, 2], [1, 3], [10, 11]]
    scores = np.array([[1.0, 0.8, 0.5], [0.1, 0.9, 0.3]])
    out = soft_nms(seg, scores)
    np.testing.assert_allclose(out[0], soft_nms(seg, scores[0]))
    np.testing.assert_allclose(out[1], soft_nms(seg, scores[1]))
    assert soft_nms(np.zeros((0, 2)), np.zeros(0)).shape == (0,)
    assert hard_nms(np.zeros((0, 2)), np.zeros((2, 0))).shape == (2, 0)


@pytest.mark.parametrize("legacy", [False, True])
def test_matches_one_at_a_time_loop(legacy):
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 40))
        start = np.round(rng.uniform(0, 30, n), 1 if trial % 2 else 6)
        seg = np.stack([start, start + np.round(rng.uniform(0, 8, n), 1)], axis=1)
        scores = np.round(rng.uniform(-0.5, 2, n), 1 if trial % 3 == 0 else 9)  # some exact ties
        np.testing.assert_allclose(soft_nms(seg, scores, legacy_length=legacy), loop_soft(seg, scores, legacy=legacy),
                                   rtol=1e-12, atol=1e-12)
        for thr in (0.3, 0.5, 1.0):
            assert np.array_equal(hard_nms(seg, scores, thr, legacy), loop_hard(seg, scores, thr, legacy))


def test_sets_keep_videos_apart_and_absent_pairs_stay():
    # the same times in two sets never interact; -inf marks absent (class, segment) pairs
    start = np.array([0.0, 1.0, 0.0, 1.0])
    end = np.array([2.0, 3.0, 2.0, 3.0])
    sets = np.array([0, 0, 1, 1])
    scores = np.array([[1.0, 0.8, 0.7, 0.9], [0.5, -np.inf, -np.inf, 0.4]])
    out = _soft_nms(start, end, scores, 0.3, False, sets)
    w = math.exp(-(1 / 9) / 0.3)
    np.testing.assert_allclose(out, [[1.0, 0.8 * w, 0.7 * w, 0.9], [0.5, -np.inf, -np.inf, 0.4]])
    keep = _hard_nms(start, end, scores, 0.3, False, sets)
    assert keep.tolist() == [[True, False, False, True], [True, False, False, True]]


def test_many_groups_use_several_buckets():
    rng = np.random.default_rng(2)
    parts, sets = [], []
    for v in range(60):
        n = int(rng.integers(1, 30))
        s = rng.uniform(0, 100, n)
        parts.append(np.stack([s, s + rng.uniform(0, 20, n)], axis=1))
        sets.append(np.full(n, v))
    seg = np.concatenate(parts)
    sets = np.concatenate(sets)
    scores = rng.uniform(0, 1, (2, len(seg)))
    out = _soft_nms(seg[:, 0].copy(), seg[:, 1].copy(), scores, 0.3, False, sets)
    for v in range(60):
        m = sets == v
        for k in range(2):
            np.testing.assert_allclose(out[k, m], loop_soft(seg[m], scores[k, m]), rtol=1e-12)


@pytest.mark.parametrize("seg,scores", [
    (np.zeros((3, 3)), np.zeros(3)),
    (np.zeros((3, 2)), np.zeros(4)),
    (np.array([[1.0, 0.0]]), np.zeros(1)),
    (np.array([[0.0, np.nan]]), np.zeros(1)),
])
def test_bad_inputs(seg, scores):
    with pytest.raises(DataError):
        soft_nms(seg, scores)
    with pytest.raises(DataError):
        hard_nms(seg, scores)


def test_bad_parameters():
    with pytest.raises(DataError):
        soft_nms([[0, 1]], [1.0], sigma=0)
    with pytest.raises(DataError):
        hard_nms([[0, 1]], [1.0], iou_threshold=0)
