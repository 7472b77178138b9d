"""Localization post-processing (SPEC §4): hand-computed cases for every step, the
settings dataclass, the result files, and agreement with the plain-Python reference in
bench/postprocess_speed.py."""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from hamnet_deploy.runtime.detections import Detections, read_results
from hamnet_deploy.runtime.errors import ConfigError, DataError
from hamnet_deploy.runtime.postprocess import (
    PostprocessConfig,
    cas_foreground,
    localize,
    localize_and_score,
    localize_many,
    thresholds_paper,
    thresholds_released,
    video_scores,
)
from hamnet_deploy.runtime.proposals import contrast_scores, find_runs

ROOT = Path(__file__).resolve().parents[2]
C_SELF = math.exp(-1 / 0.3)  # soft-NMS factor between identical segments (IoU 1)


def _bench():
    spec = importlib.util.spec_from_file_location("postprocess_speed", ROOT / "bench" / "postprocess_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------- settings

def test_defaults_are_the_released_code():
    cfg = PostprocessConfig()
    assert cfg.topk_ratio == 10 and cfg.class_threshold == 0.2 and cfg.outer_ratio == 0.25
    assert cfg.score_weight == 0.2 and cfg.nms == "soft" and cfg.nms_sigma == 0.3
    assert cfg.legacy_nms_length is False and cfg.max_detections is None and cfg.snippet_seconds == 0.64
    assert cfg.attention_source == "attention"
    assert cfg.action_thresholds == tuple(np.linspace(0.1, 0.9, 10)) == thresholds_released()
    assert PostprocessConfig.activitynet().topk_ratio == 20
    paper = thresholds_paper()
    assert len(paper) == 17 and paper[0] == 0.1 and paper[-1] == 0.9 and paper[1] == 0.15


def test_config_round_trips_through_json():
    cfg = PostprocessConfig(nms="hard", nms_iou=0.4, max_detections=100, legacy_nms_length=True,
                            action_thresholds=(0.2, 0.5), attention_source="cas")
    assert cfg.to_dict()["attention_source"] == "cas"
    back = PostprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert isinstance(back.action_thresholds, tuple)
    assert PostprocessConfig.from_dict({}) == PostprocessConfig()


@pytest.mark.parametrize("bad", [
    {"nms": "gaussian"}, {"nms_sigma": 0}, {"nms_iou": 1.5}, {"class_threshold": 2},
    {"action_thresholds": []}, {"action_thresholds": "0.5"}, {"action_thresholds": [0.1, float("nan")]},
    {"max_detections": 0}, {"max_detections": 2.5}, {"topk_ratio": -1}, {"snippet_seconds": 0},
    {"legacy_nms_length": "yes"}, {"score_weight": "x"}, {"outer_ratio": -0.1},
    {"attention_source": "CAS"}, {"attention_source": None},
])
def test_bad_settings_raise_config_error(bad):
    with pytest.raises(ConfigError):
        PostprocessConfig(**bad)


def test_unknown_setting_is_named():
    with pytest.raises(ConfigError, match="nms_thresh"):
        PostprocessConfig.from_dict({"nms_thresh": 0.5})
    with pytest.raises(ConfigError):
        PostprocessConfig.from_dict([1, 2])


# ----------------------------------------------------------------------------- steps

def test_video_scores_hand_computed():
    cas = np.array([[1, 0, 0], [3, 1, 0], [0, 2, 0], [2, 0, 0]], dtype=np.float32)
    att = np.array([1, 0.5, 1, 0.5])
    # weighted: [[1,0,0],[1.5,.5,0],[0,2,0],[1,0,0]]; k = 4 // 2 = 2: means 1.25, 1.25, 0.
    p = video_scores(cas, att, PostprocessConfig(topk_ratio=2))
    e = math.exp(1.25)
    np.testing.assert_allclose(p, [e / (2 * e + 1)] * 2)
    # k never drops below 1
    p1 = video_scores(cas[:1], att[:1], PostprocessConfig(topk_ratio=10))
    np.testing.assert_allclose(p1, [math.e / (math.e + 2), 1 / (math.e + 2)])


def test_runs_for_every_threshold_including_both_ends():
    att = np.array([0.95, 0.5, 0.05, 0.5, 0.95, 0.95])
    runs = find_runs(att, np.array([0.1, 0.6]))
    assert runs.threshold.tolist() == [0, 0, 1, 1]
    assert runs.start.tolist() == [0, 3, 0, 4]
    assert runs.end.tolist() == [1, 5, 0, 5]
    empty = find_runs(np.zeros(5), np.array([0.1, 0.5]))
    assert empty.start.size == 0
    one = find_runs(np.array([0.7]), np.array([0.5, 0.9]))
    assert one.start.tolist() == [0] and one.end.tolist() == [0]
    # strictly greater than the threshold
    assert find_runs(np.array([0.5]), np.array([0.5])).start.size == 0


def test_contrast_hand_computed():
    row = np.arange(1.0, 13.0)[None]  # values 1..12 at snippets 0..11
    start = np.array([4, 0, 10, 0, 2])
    end = np.array([8, 1, 11, 11, 2])
    got = contrast_scores(row, start, end, 0.25)[0]
    # [4..8] len 5: inner 7; outer ceil(1.25)=2 before (snippets 2,3: 3,4), floor(1.25)=1 after (9: 10) -> 17/3
    # [0..1] len 2: touches the start; before clipped away, after floor(0.5)=0 -> empty outer -> 0
    # [10..11] len 2: touches the end; before ceil(0.5)=1 (snippet 9: 10), after clipped -> 10
    # [0..11] the whole video: no outer region -> 0
    # [2..2] len 1: before ceil(0.25)=1 (snippet 1: 2), after floor(0.25)=0 -> 2
    np.testing.assert_allclose(got, [7 - 17 / 3, 1.5, 11.5 - 10, 6.5, 3 - 2])


# A small video worked by hand (see the comments).
T8_CAS = np.array([[0, 2], [4, 0], [2, 0], [0, 2], [0, 2], [1, 0], [1, 0], [3, 0]], dtype=np.float64)
T8_ATT = np.array([0.05, 0.95, 0.95, 0.05, 0.05, 0.55, 0.55, 0.95])
T8_CFG = PostprocessConfig(action_thresholds=(0.5, 0.9))


def _t8_expected():
    # weighted class column: [0, 3.8, 1.9, 0, 0, .55, .55, 2.85]; background max 0.1; k = 1
    p = 1 / (1 + math.exp(0.1 - 3.8))
    bonus = 0.2 * p
    a = 2.85 + bonus  # [1..2] at 0.5 and again at 0.9 (C): outer = snippet 0 only = 0
    b = (0.55 + 0.55 + 2.85) / 3 + bonus  # [5..7]: outer = snippet 4 = 0, nothing after the end
    d = 2.85 - 0.55 + bonus  # [7..7] at 0.9: outer = snippet 6 = .55
    iou_bd = 0.64 / 1.92
    return p, a, b, d, iou_bd


def test_localize_hand_computed_soft_nms():
    p, a, b, d, iou_bd = _t8_expected()
    np.testing.assert_allclose(video_scores(T8_CAS, T8_ATT, T8_CFG), [p])
    dets = localize(T8_CAS, T8_ATT, T8_CFG, video="v", classes=["jump"])
    # A and C are the same segment with the same score: A (given first) keeps it, C is
    # decayed by exp(-1/0.3); D beats B, which is decayed by exp(-(1/3)^2 / 0.3).
    np.testing.assert_allclose(dets.score, [a, d, b * math.exp(-iou_bd ** 2 / 0.3), a * C_SELF])
    np.testing.assert_allclose(dets.t_start, [0.64, 4.48, 3.2, 0.64])
    np.testing.assert_allclose(dets.t_end, [1.92, 5.12, 5.12, 1.92])
    assert dets.label.tolist() == [0, 0, 0, 0] and dets.label_names == ["jump"] * 4
    assert dets.video.tolist() == ["v"] * 4


def test_localize_hand_computed_hard_and_none_and_legacy():
    _, a, b, d, _ = _t8_expected()
    hard = localize(T8_CAS, T8_ATT, PostprocessConfig(action_thresholds=(0.5, 0.9), nms="hard"))
    np.testing.assert_allclose(hard.score, [a, d, b])  # C dropped (IoU 1 with A); B kept (IoU 1/3 < 0.5)
    none = localize(T8_CAS, T8_ATT, PostprocessConfig(action_thresholds=(0.5, 0.9), nms="none"))
    np.testing.assert_allclose(none.score, [a, a, d, b])
    legacy = localize(T8_CAS, T8_ATT, PostprocessConfig(action_thresholds=(0.5, 0.9), legacy_nms_length=True))
    iou = (0.64 + 1) / ((1.92 + 1) + (0.64 + 1) - (0.64 + 1))
    self_iou = (1.28 + 1) / (1.28 + 1)
    np.testing.assert_allclose(legacy.score, [a, d, b * math.exp(-iou ** 2 / 0.3), a * math.exp(-self_iou / 0.3)])


def test_duration_clips_and_top_n():
    _, a, b, d, iou_bd = _t8_expected()
    dets = localize(T8_CAS, T8_ATT, T8_CFG, duration=5.0)
    assert dets.t_end.max() == 5.0 and dets.t_start.min() >= 0
    np.testing.assert_allclose(dets.t_end, [1.92, 5.0, 5.0, 1.92])
    top = localize(T8_CAS, T8_ATT, PostprocessConfig(action_thresholds=(0.5, 0.9), max_detections=2))
    np.testing.assert_allclose(top.score, [a, d])
    # a duration shorter than a proposal's start drops it
    short = localize(T8_CAS, T8_ATT, T8_CFG, duration=1.0)
    assert (short.t_end <= 1.0).all() and len(short) == 2


def test_one_snippet_video():
    cas = np.array([[2.0, 0.0]])
    att = np.array([0.95])
    dets = localize(cas, att, PostprocessConfig(), duration=0.5)
    p = math.exp(1.9) / (math.exp(1.9) + 1)
    s = 1.9 + 0.2 * p  # empty outer region
    # ten identical proposals (one per threshold): each pick decays the rest by exp(-1/0.3)
    np.testing.assert_allclose(dets.score, [s * C_SELF ** i for i in range(10)])
    assert (dets.t_start == 0).all() and (dets.t_end == 0.5).all()


def test_no_class_above_threshold_gives_no_detections():
    cas = np.zeros((20, 4))
    cas[:, -1] = 5.0  # background dominates: every class score is tiny
    att = np.full(20, 0.95)
    dets = localize(cas, att, PostprocessConfig(), video="v", classes=["a", "b", "c"])
    assert len(dets) == 0 and dets.classes == ("a", "b", "c")
    assert dets.to_results_json()["results"] == {}


def test_no_proposal_gives_no_detections():
    cas = np.zeros((10, 3))
    cas[:, 0] = 3.0
    dets = localize(cas, np.full(10, 0.05), PostprocessConfig())
    assert len(dets) == 0


def test_several_kept_classes_share_the_proposals():
    rng = np.random.default_rng(3)
    cas = rng.normal(0, 0.1, (40, 4))
    cas[10:20, 0] += 4
    cas[10:20, 2] += 4
    cas[:, -1] = 0
    att = np.where((np.arange(40) >= 10) & (np.arange(40) < 20), 0.95, 0.02)
    dets = localize(cas, att, PostprocessConfig())
    assert sorted(set(dets.label.tolist())) == [0, 2]
    for c in (0, 2):
        mine = dets.select(dets.label == c)
        assert (np.diff(mine.score) <= 0).all()  # descending within a class
    assert dets.label.tolist() == sorted(dets.label.tolist())  # class order


@pytest.mark.parametrize("cas,att,match", [
    (np.zeros((5,)), np.zeros(5), "shape"),
    (np.zeros((5, 1)), np.zeros(5), "shape"),
    (np.zeros((0, 3)), np.zeros(0), "no snippets"),
    (np.zeros((5, 3)), np.zeros(4), "attention"),
    (np.zeros((5, 3)), np.zeros((5, 2)), "attention"),
    (np.full((5, 3), np.nan), np.zeros(5), "NaN"),
    (np.zeros((5, 3)), np.full(5, np.inf), "attention contains NaN"),
    (np.array([[np.inf, -np.inf, 0.0]] * 5), np.ones(5), "CAS contains NaN"),
    (np.full((5, 3), 1e300), np.full(5, 1e300), "overflows"),
    (np.array([["a", "b"]]), np.zeros(1), "numeric"),
])
def test_bad_inputs_raise_data_error(cas, att, match):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error, not a NumPy warning before it
        with pytest.raises(DataError, match=match):
            localize(cas, att, PostprocessConfig(), video="v")


def test_a_bad_video_in_a_batch_is_named():
    good = (np.zeros((4, 3)), np.full(4, 0.5))
    with pytest.raises(DataError, match="video 'b': attention contains NaN"):
        localize_many([("a", *good), ("b", np.zeros((4, 3)), np.array([0.1, np.nan, 0.2, 0.3]))])


def test_attention_column_vector_and_class_names():
    att = T8_ATT[:, None]
    assert len(localize(T8_CAS, att, T8_CFG)) == 4
    with pytest.raises(DataError, match="class names"):
        localize(T8_CAS, T8_ATT, T8_CFG, classes=["a", "b"])
    with pytest.raises(DataError, match="duration"):
        localize(T8_CAS, T8_ATT, T8_CFG, duration=-1)


def test_matches_the_plain_python_reference():
    bench = _bench()
    rng = np.random.default_rng(11)
    for cfg in (PostprocessConfig(), PostprocessConfig(legacy_nms_length=True), PostprocessConfig(nms="hard"),
                PostprocessConfig(action_thresholds=thresholds_paper(), outer_ratio=0.3)):
        for _ in range(4):
            cas, att = bench.make_video(rng, t=int(rng.integers(30, 200)))
            dets = localize(cas, att, cfg)
            assert bench.same_detections(bench.reference_localize(cas, att, cfg), dets)


def test_localize_many_equals_one_call_per_video():
    bench = _bench()
    rng = np.random.default_rng(5)
    items = []
    for i in range(7):
        cas, att = bench.make_video(rng, t=int(rng.integers(1, 150)), kept=tuple(range(i % 3)))
        items.append((f"v{i}", cas, att, float(len(att)) * 0.6))
    items.append(("flat", np.zeros((12, 21)), np.zeros(12), None))
    for cfg in (PostprocessConfig(), PostprocessConfig(nms="hard", legacy_nms_length=True),
                PostprocessConfig(max_detections=5), PostprocessConfig(nms="none")):
        many = localize_many(items, cfg)
        singles = [localize(c, a, cfg, video=v, duration=d) for v, c, a, d in items]
        joined = Detections.concatenate(singles)
        for f in ("video", "label", "score", "t_start", "t_end"):
            assert np.array_equal(getattr(many, f), getattr(joined, f)), f
    with pytest.raises(DataError):
        localize_many([])
    assert len(localize_many([], classes=["a"])) == 0


def test_localize_and_score_gives_both_from_one_pass():
    bench = _bench()
    rng = np.random.default_rng(4)
    items = [(f"v{i}", *bench.make_video(rng, t=int(rng.integers(5, 120)), kept=tuple(range(i % 3)))) for i in range(5)]
    cfg = PostprocessConfig()
    dets, probs = localize_and_score(items, cfg)
    many = localize_many(items, cfg)
    for f in ("video", "label", "score", "t_start", "t_end"):
        assert np.array_equal(getattr(dets, f), getattr(many, f)), f
    assert probs.shape == (5, 20)
    for row, (_, cas, att) in zip(probs, items, strict=True):
        assert np.array_equal(row, video_scores(cas, att, cfg))
    empty, none = localize_and_score([], classes=["a", "b"])
    assert len(empty) == 0 and none.shape == (0, 2)


def test_large_batches_rank_like_small_ones():
    # Past a few thousand detections the output order comes from one integer sort
    # instead of a lexsort. Periodic videos (the same action every 20 snippets, flat
    # CAS) give equal scores to different segments, which must keep proposal order.
    bench = _bench()
    rng = np.random.default_rng(8)
    items = [(f"v{i}", *bench.make_video(rng, t=int(rng.integers(150, 300)), kept=(2, 5))) for i in range(12)]
    periodic = np.where(np.arange(200) % 20 < 5, 0.9, 0.1)
    flat_cas = np.zeros((200, 21))
    flat_cas[:, 3] = 5.0
    items += [(f"p{i}", flat_cas, periodic) for i in range(12)]
    for cfg in (PostprocessConfig(nms="none"), PostprocessConfig()):
        many = localize_many(items, cfg)
        assert len(many) > 2048
        joined = Detections.concatenate([localize(c, a, cfg, video=v) for v, c, a in items])
        for f in ("video", "label", "score", "t_start", "t_end"):
            assert np.array_equal(getattr(many, f), getattr(joined, f)), f
        tied = np.flatnonzero((np.diff(many.score) == 0) & (np.diff(many.t_start) != 0))
        assert tied.size  # equal scores, different segments: their order is tested


# ----------------------------------------------------------------------------- attention source

def test_cas_foreground_hand_computed_and_stable():
    cas = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, math.log(2.0)], [1000.0, -1000.0, 1000.0]])
    # softmax background share: 1/3; 2 / (e^2 + 1 + 2); 1/2 (huge logits must not overflow)
    want = [2 / 3, 1 - 2 / (math.exp(2) + 3), 0.5]
    np.testing.assert_allclose(cas_foreground(cas), want, rtol=1e-12)
    with pytest.raises(ConfigError, match="attention_source"):
        PostprocessConfig.from_dict({"attention_source": "both"})


def test_cas_source_replaces_the_attention_everywhere():
    bench = _bench()
    rng = np.random.default_rng(3)
    cas_cfg = PostprocessConfig(attention_source="cas", class_threshold=0.0)
    att_cfg = PostprocessConfig(class_threshold=0.0)
    items = []
    for i in range(4):
        cas, att = bench.make_video(rng, t=int(rng.integers(20, 120)))
        fg = cas_foreground(cas)
        assert ((fg > 0) & (fg < 1)).all()
        junk = rng.random(len(att))  # what an untrained attention branch gives: ignored
        np.testing.assert_array_equal(video_scores(cas, junk, cas_cfg), video_scores(cas, fg, att_cfg))
        a, b = localize(cas, junk, cas_cfg, video="v"), localize(cas, fg, att_cfg, video="v")
        assert len(a) > 0
        for f in ("label", "score", "t_start", "t_end"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), f
        items.append((f"v{i}", cas, junk))
    many = localize_many(items, cas_cfg)
    ref = localize_many([(v, c, cas_foreground(c)) for v, c, _ in items], att_cfg)
    for f in ("video", "label", "score", "t_start", "t_end"):
        assert np.array_equal(getattr(many, f), getattr(ref, f)), f
    # the default source uses the given attention, so the junk changes the result
    assert not np.array_equal(localize(cas, junk, att_cfg).score, localize(cas, fg, att_cfg).score)
    # shapes are still checked
    with pytest.raises(DataError, match="attention"):
        localize(cas, junk[:-1], cas_cfg)


# ----------------------------------------------------------------------------- files

def _sample() -> Detections:
    return Detections.from_arrays(["a", "b"], np.array(["v1", "v1", "v2"], dtype=object), [0, 1, 1],
                                  [0.9, 0.5, 0.25], [0.0, 1.5, 2.0], [1.0, 3.0, 4.5])


def test_results_json_format_and_round_trip(tmp_path):
    dets = _sample()
    obj = dets.to_results_json()
    assert obj["results"]["v1"][0] == {"label": "a", "score": 0.9, "segment": [0.0, 1.0]}
    assert len(obj["results"]["v2"]) == 1
    dets.write_json(tmp_path / "r.json")
    back = read_results(tmp_path / "r.json", ["a", "b"])
    for f in ("label", "score", "t_start", "t_end"):
        assert np.array_equal(getattr(back, f), getattr(dets, f))
    assert back.video.tolist() == ["v1", "v1", "v2"]
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left


def test_files_hold_tidy_numbers_and_every_video(tmp_path):
    """Scores to 9 significant digits, times to the microsecond (never
    `0.30000000000000004`); videos without detections and failed inputs are listed, and
    reading the file back gives the detections alone."""
    dets = Detections.from_arrays(["a"], "v", [0], [1 / 3], [0.1 + 0.2], [math.pi])
    context = {"videos": ["v", "empty"], "failed": [("bad.npy", "bad.npy: not a .npy file")]}
    dets.write(tmp_path / "r.csv", **context)
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines == ["video,label,score,t_start,t_end,class_score,status", "v,a,0.333333333,0.3,3.141593,,ok",
                     "empty,,,,,,none", "bad.npy,,,,,,failed: bad.npy: not a .npy file"]
    dets.write(tmp_path / "r.json", **context)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["results"] == {"v": [{"label": "a", "score": 0.333333333, "segment": [0.3, 3.141593]}], "empty": []}
    assert doc["failed"] == [{"input": "bad.npy", "reason": "bad.npy: not a .npy file"}]
    for name in ("r.csv", "r.json"):
        back = read_results(tmp_path / name, ["a"])
        assert len(back) == 1 and back.score[0] == 0.333333333 and back.t_start[0] == 0.3


@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"),
    ('{"database": {}}', "results"),
    ('{"results": {"v": {}}}', "list"),
    ('{"results": {"v": [{"label": "a", "score": 1}]}}', "segment"),
    ('{"results": {"v": [{"label": "zzz", "score": 1, "segment": [0, 1]}]}}', "zzz"),
    ('{"results": {"v": [{"label": "a", "score": "high", "segment": [0, 1]}]}}', "score"),
    ('{"results": {"v": [{"label": "a", "score": 1, "segment": [2, 1]}]}}', "ends before"),
    ('{"results": {"v": [{"label": "a", "score": 1, "segment": [0]}]}}', "segment"),
    ('{"results": {"v": [{"label": "a", "score": NaN, "segment": [0, 1]}]}}', "finite"),
    ("video,label\nv,a\n", "header"),
    ("video,label,score,t_start,t_end\nv,a,1,0\n", "line 2"),
    ("video,label,score,t_start,t_end\nv,b,1,0,1\n", "'b'"),
    ("video,label,score,t_start,t_end\nv,a,x,0,1\n", "score"),
])
def test_malformed_results_raise_data_error(tmp_path, text, match):
    path = tmp_path / "r.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        read_results(path, ["a"])


def test_missing_results_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_results(tmp_path / "nope.json", ["a"])


def test_detections_helpers():
    dets = _sample()
    assert dets.videos() == ["v1", "v2"]
    assert len(dets.for_video("v2")) == 1
    np.testing.assert_array_equal(dets.segments, [[0, 1], [1.5, 3], [2, 4.5]])
    shuffled = dets.select([2, 1, 0]).sorted()
    assert shuffled.video.tolist() == ["v2", "v1", "v1"] and shuffled.score.tolist() == [0.25, 0.9, 0.5]
    with pytest.raises(DataError):
        Detections.concatenate([dets, Detections.empty(["x"])])
    with pytest.raises(DataError):
        Detections.from_arrays(["a"], "v", [3], [1], [0], [1])
