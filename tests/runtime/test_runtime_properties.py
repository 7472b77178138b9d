"""Property tests (hypothesis) of post-processing, NMS and evaluation."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hamnet_deploy.runtime.annotations import Annotations, VideoAnnotation
from hamnet_deploy.runtime.detections import Detections
from hamnet_deploy.runtime.evaluation import THUMOS14_TIOU, evaluate_detection
from hamnet_deploy.runtime.nms import hard_nms, soft_nms
from hamnet_deploy.runtime.postprocess import PostprocessConfig, localize, localize_many

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLASSES = ["a", "b", "c"]

times = st.floats(0, 100, allow_nan=False, allow_infinity=False)


@st.composite
def segments(draw, max_n=25):
    n = draw(st.integers(0, max_n))
    start = np.array(draw(st.lists(times, min_size=n, max_size=n)), dtype=np.float64)
    length = np.array(draw(st.lists(st.floats(0.01, 30), min_size=n, max_size=n)), dtype=np.float64)
    return np.stack([start, start + length], axis=1).reshape(-1, 2)


@st.composite
def ground_truth(draw):
    gt = Annotations(list(CLASSES))
    for v in range(draw(st.integers(1, 3))):
        seg = draw(segments(max_n=6))
        lab = np.array(draw(st.lists(st.integers(0, 2), min_size=len(seg), max_size=len(seg))), dtype=np.int64)
        gt.videos[f"v{v}"] = VideoAnnotation(f"v{v}", "test", 200.0, seg, lab)
    return gt


@st.composite
def predictions(draw, gt):
    seg = draw(segments(max_n=30))
    n = len(seg)
    vids = draw(st.lists(st.sampled_from(sorted(gt.videos)), min_size=n, max_size=n))
    lab = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    score = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    return Detections.from_arrays(CLASSES, np.array(vids, dtype=object), lab, score,
                                  seg[:, 0] if n else [], seg[:, 1] if n else [])


def _has_gt(gt: Annotations) -> bool:
    return any(v.labels.size for v in gt.videos.values())


@FAST
@given(st.data())
def test_ap_lies_in_unit_interval(data):
    gt = data.draw(ground_truth())
    if not _has_gt(gt):
        return
    res = evaluate_detection(gt, data.draw(predictions(gt)), THUMOS14_TIOU)
    scored = res.ap[~np.isnan(res.ap)]
    assert ((scored >= 0) & (scored <= 1)).all()
    assert 0 <= res.average_map <= 1


@FAST
@given(ground_truth())
def test_ground_truth_as_predictions_scores_one(gt):
    if not _has_gt(gt):
        return
    rows = [(name, int(c), float(s), float(e)) for name, v in gt.videos.items()
            for (s, e), c in zip(v.segments, v.labels, strict=True)]
    v, c, s, e = zip(*rows, strict=True)
    dets = Detections.from_arrays(CLASSES, np.array(v, dtype=object), c, np.ones(len(c)), s, e)
    res = evaluate_detection(gt, dets, THUMOS14_TIOU)
    scored = res.ap[~np.isnan(res.ap)]
    np.testing.assert_allclose(scored, 1.0)


@FAST
@given(st.data())
def test_a_detection_overlapping_no_ground_truth_never_raises_ap(data):
    gt = data.draw(ground_truth())
    if not _has_gt(gt):
        return
    dets = data.draw(predictions(gt))
    before = evaluate_detection(gt, dets, THUMOS14_TIOU)
    extra = Detections.from_arrays(CLASSES, [data.draw(st.sampled_from(sorted(gt.videos)))],
                                   [data.draw(st.integers(0, 2))], [data.draw(st.floats(0, 1))],
                                   [500.0], [data.draw(st.floats(500.5, 600))])  # far from every segment
    after = evaluate_detection(gt, Detections.concatenate([dets, extra]), THUMOS14_TIOU)
    ok = ~np.isnan(before.ap)
    assert (after.ap[ok] <= before.ap[ok] + 1e-12).all()


@FAST
@given(segments(), st.data(), st.booleans())
def test_nms_output_is_a_subset_with_no_score_raised(seg, data, legacy):
    n = len(seg)
    scores = np.array(data.draw(st.lists(st.floats(0, 10), min_size=n, max_size=n)), dtype=np.float64)
    out = soft_nms(seg, scores, sigma=data.draw(st.floats(0.05, 2)), legacy_length=legacy)
    assert out.shape == scores.shape and (out <= scores).all() and (out >= 0).all()
    keep = hard_nms(seg, scores, iou_threshold=data.draw(st.floats(0.05, 1)), legacy_length=legacy)
    assert keep.shape == scores.shape
    if n:
        assert keep[scores == scores.max()].any()  # a best one always survives


@st.composite
def network_outputs(draw):
    t = draw(st.integers(1, 60))
    c = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2 ** 31))
    rng = np.random.default_rng(seed)
    cas = rng.normal(0, 2, (t, c + 1))
    att = np.clip(np.convolve(rng.uniform(-0.5, 1.5, t + 4), np.ones(5) / 5, mode="valid"), 0, 1)
    return cas, att


@FAST
@given(network_outputs(), st.floats(0.1, 60), st.sampled_from(["soft", "hard", "none"]), st.booleans())
def test_segments_lie_within_the_video(outputs, duration, nms, legacy):
    cas, att = outputs
    cfg = PostprocessConfig(nms=nms, legacy_nms_length=legacy, class_threshold=0.0)
    dets = localize(cas, att, cfg, video="v", duration=duration)
    assert ((dets.t_start >= 0) & (dets.t_end <= duration) & (dets.t_end > dets.t_start)).all()
    assert np.isfinite(dets.score).all()


@FAST
@given(st.lists(network_outputs(), min_size=1, max_size=4), st.sampled_from(["soft", "hard"]))
def test_many_videos_at_once_equal_one_at_a_time(videos, nms):
    cfg = PostprocessConfig(nms=nms, class_threshold=0.1)
    if len({v[0].shape[1] for v in videos}) > 1:
        videos = [v for v in videos if v[0].shape[1] == videos[0][0].shape[1]]
    items = [(f"v{i}", cas, att) for i, (cas, att) in enumerate(videos)]
    many = localize_many(items, cfg)
    one = Detections.concatenate([localize(c, a, cfg, video=v) for v, c, a in items], many.classes)
    for f in ("video", "label", "score", "t_start", "t_end"):
        assert np.array_equal(getattr(many, f), getattr(one, f))
