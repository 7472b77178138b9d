"""Detection and classification evaluation (SPEC §5): hand-computed cases, the THUMOS14
specifics, and agreement with a one-prediction-at-a-time ActivityNet loop."""

from __future__ import annotations

import numpy as np
import pytest

from hamnet_deploy.runtime.annotations import Annotations, VideoAnnotation, load_annotation_json
from hamnet_deploy.runtime.detections import Detections
from hamnet_deploy.runtime.errors import ConfigError, DataError
from hamnet_deploy.runtime.evaluation import (
    ACTIVITYNET_TIOU,
    THUMOS14_TIOU,
    average_precision,
    evaluate_classification,
    evaluate_detection,
    load_ambiguous,
    parse_thresholds,
)

CLASSES = ["run", "jump", "swim"]


def ann(videos: dict[str, list[tuple[float, float, int]]], subset: str = "test",
        classes: list[str] = CLASSES) -> Annotations:
    out = Annotations(list(classes))
    for name, segs in videos.items():
        seg = np.array([[s, e] for s, e, _ in segs], dtype=np.float64).reshape(-1, 2)
        lab = np.array([c for _, _, c in segs], dtype=np.int64)
        out.videos[name] = VideoAnnotation(name, subset, 100.0, seg, lab)
    return out


def dets(rows: list[tuple[str, int, float, float, float]], classes: list[str] = CLASSES) -> Detections:
    if not rows:
        return Detections.empty(classes)
    v, c, s, a, b = zip(*rows, strict=True)
    return Detections.from_arrays(classes, np.array(v, dtype=object), c, s, a, b)


def reference_ap(gt: Annotations, d: Detections, thresholds) -> np.ndarray:
    """One prediction at a time: best free ground truth by IoU (ties: listed first)."""
    out = np.full((len(thresholds), gt.num_classes), np.nan)
    for c in range(gt.num_classes):
        truth = [(name, s, e) for name, v in gt.videos.items() for (s, e), lab in zip(v.segments, v.labels, strict=True)
                 if lab == c]
        if not truth:
            continue
        mine = sorted((i for i in range(len(d)) if d.label[i] == c), key=lambda i: -d.score[i])
        for t, thr in enumerate(thresholds):
            free = [True] * len(truth)
            flags = []
            for i in mine:
                best, best_iou = -1, -1.0
                for j, (name, s, e) in enumerate(truth):
                    if name != d.video[i] or not free[j]:
                        continue
                    inter = max(0.0, min(e, d.t_end[i]) - max(s, d.t_start[i]))
                    union = (e - s) + (d.t_end[i] - d.t_start[i]) - inter
                    iou = inter / union if union > 0 else 0.0
                    if iou > best_iou:
                        best, best_iou = j, iou
                if best >= 0 and best_iou >= thr:
                    free[best] = False
                    flags.append(True)
                else:
                    flags.append(False)
            out[t, c] = average_precision(flags, len(truth))
    return out


# ----------------------------------------------------------------------------- AP

def test_average_precision_hand_computed():
    # precision 1, .5, 2/3 at recall .5, .5, 1 -> 0.5 * 1 + 0.5 * 2/3
    assert average_precision([True, False, True], 2) == pytest.approx(0.5 + 1 / 3)
    assert average_precision([True, True], 2) == 1.0
    assert average_precision([False, False], 2) == 0.0
    assert average_precision([], 3) == 0.0
    assert np.isnan(average_precision([True], 0))
    # a trailing false positive after full recall costs nothing
    assert average_precision([True, False], 1) == 1.0
    # precision is made monotone: the later higher precision lifts the earlier points
    assert average_precision([False, True, True], 2) == pytest.approx(2 / 3)
    # ignored predictions count as neither
    assert average_precision([False, True], 1, ignore=[True, False]) == 1.0


def test_thresholds():
    assert THUMOS14_TIOU == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    assert ACTIVITYNET_TIOU == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    assert parse_thresholds("thumos") == THUMOS14_TIOU
    assert parse_thresholds("ActivityNet") == ACTIVITYNET_TIOU
    assert parse_thresholds("0.3, 0.5,0.7") == (0.3, 0.5, 0.7)
    for bad in ("", "0.5,x", "0", "1.5", "thumos15"):
        with pytest.raises(ConfigError):
            parse_thresholds(bad)


# ----------------------------------------------------------------------------- detection

def test_perfect_predictions_give_one():
    gt = ann({"a": [(0, 10, 0), (20, 30, 1)], "b": [(5, 6, 2)]})
    d = dets([("a", 0, 0.9, 0, 10), ("a", 1, 0.8, 20, 30), ("b", 2, 0.7, 5, 6)])
    res = evaluate_detection(gt, d, THUMOS14_TIOU)
    np.testing.assert_allclose(res.ap, 1.0)
    assert res.average_map == 1.0 and res.num_videos == 2
    assert res.num_ground_truth.tolist() == [1, 1, 1] and res.num_predictions.tolist() == [1, 1, 1]


def test_hand_computed_matching():
    gt = ann({"a": [(0, 10, 0), (20, 30, 0)]})
    d = dets([
        ("a", 0, 0.9, 0, 10),    # TP at every threshold (IoU 1)
        ("a", 0, 0.8, 0, 10),    # duplicate: its segment is taken -> FP
        ("a", 0, 0.7, 22, 30),   # IoU 0.8 with the second segment
    ])
    res = evaluate_detection(gt, d, [0.5, 0.8, 0.9])
    # thresholds .5, .8: TP FP TP -> 0.5 + 0.5 * 2/3; .9: TP FP FP -> 0.5
    np.testing.assert_allclose(res.ap[:, 0], [0.5 + 1 / 3, 0.5 + 1 / 3, 0.5])
    assert np.isnan(res.ap[:, 1:]).all()  # no ground truth for jump, swim
    np.testing.assert_allclose(res.map, res.ap[:, 0])


def test_takes_the_free_segment_with_the_highest_iou():
    gt = ann({"a": [(0, 10, 0), (2, 12, 0)]})
    # p1 [1.5, 11.5]: IoU 8.5/11.5 with the first segment, 9.5/10.5 with the second -> second.
    # p2 [2, 12]: IoU 1 with the second (taken), 8/12 with the first.
    d = dets([("a", 0, 0.9, 1.5, 11.5), ("a", 0, 0.8, 2, 12)])
    res = evaluate_detection(gt, d, [0.5, 0.7, 0.95])
    # 0.5: TP TP -> 1. 0.7: p1 takes the second, p2 is left with 0.667 -> TP FP -> 0.5
    # (had p1 taken the first, both would match). 0.95: p1 FP (0.905), p2 TP -> 0.25
    np.testing.assert_allclose(res.ap[:, 0], [1.0, 0.5, 0.25])


def test_threshold_is_inclusive():
    gt = ann({"a": [(0, 10, 0)]})
    d = dets([("a", 0, 1.0, 0, 5)])  # IoU exactly 0.5
    res = evaluate_detection(gt, d, [0.5, 0.6])
    np.testing.assert_allclose(res.ap[:, 0], [1.0, 0.0])


def test_equal_scores_keep_input_order():
    gt = ann({"a": [(0, 10, 0)]})
    first_fp = dets([("a", 0, 0.5, 50, 60), ("a", 0, 0.5, 0, 10)])
    first_tp = dets([("a", 0, 0.5, 0, 10), ("a", 0, 0.5, 50, 60)])
    assert evaluate_detection(gt, first_fp, [0.5]).ap[0, 0] == 0.5
    assert evaluate_detection(gt, first_tp, [0.5]).ap[0, 0] == 1.0


def test_class_without_ground_truth_and_class_without_predictions():
    gt = ann({"a": [(0, 10, 0), (20, 30, 1)]})
    d = dets([("a", 0, 0.9, 0, 10), ("a", 2, 0.95, 20, 30)])  # swim has no ground truth anywhere
    res = evaluate_detection(gt, d, [0.5])
    assert res.ap[0, 0] == 1.0
    assert res.ap[0, 1] == 0.0  # jump: ground truth, no prediction
    assert np.isnan(res.ap[0, 2])  # swim: no ground truth -> not scored
    assert res.map[0] == 0.5
    # a prediction of a class whose ground truth is in another video is a false positive
    gt2 = ann({"a": [(0, 10, 0)], "b": [(0, 10, 1)]})
    res2 = evaluate_detection(gt2, dets([("a", 1, 0.9, 0, 10), ("b", 1, 0.5, 0, 10)]), [0.5])
    assert res2.ap[0, 1] == 0.5 and res2.ap[0, 0] == 0.0


def test_cliff_diving_never_counts_as_diving():
    classes = ["CliffDiving", "Diving"]
    gt = ann({"v": [(5, 9, 0), (5, 9, 1)]}, classes=classes)  # THUMOS14 lists both
    res = evaluate_detection(gt, dets([("v", 0, 0.9, 5, 9)], classes), [0.5])
    assert res.ap[0, 0] == 1.0 and res.ap[0, 1] == 0.0


def test_no_predictions_at_all():
    gt = ann({"a": [(0, 10, 0)]})
    res = evaluate_detection(gt, dets([]), THUMOS14_TIOU)
    assert (res.map == 0).all() and res.average_map == 0.0


def test_subset_exclude_and_unknown_videos():
    gt = ann({"a": [(0, 10, 0)], "b": [(0, 10, 0)]})
    gt.videos.update(ann({"val": [(0, 10, 0)]}, subset="validation").videos)
    d = dets([("a", 0, 0.9, 0, 10), ("b", 0, 0.8, 0, 10), ("val", 0, 0.99, 0, 10), ("ghost", 0, 0.95, 0, 10)])
    res = evaluate_detection(gt, d, [0.5], subset="test", exclude=["b"])
    # "val" (other subset) and "b" (excluded) are dropped; "ghost" is unknown: a false positive
    assert res.num_videos == 1 and res.dropped_predictions == 2 and res.unknown_videos == ["ghost"]
    assert res.ap[0, 0] == 0.5  # ghost (0.95) ranks above the hit on "a"
    with pytest.raises(DataError, match="subset"):
        evaluate_detection(gt, d, [0.5], subset="nope")


def test_ambiguous_regions_forgive_false_positives_only():
    gt = ann({"a": [(0, 10, 0)]})
    d = dets([("a", 0, 0.9, 40, 45), ("a", 0, 0.8, 0, 10), ("a", 0, 0.7, 70, 75)])
    amb = {"a": np.array([[44.0, 50.0]]), "other": np.array([[0.0, 100.0]])}
    plain = evaluate_detection(gt, d, [0.5])
    forgiven = evaluate_detection(gt, d, [0.5], ambiguous=amb)
    assert plain.ap[0, 0] == 0.5
    assert forgiven.ap[0, 0] == 1.0 and forgiven.ambiguous_ignored.tolist() == [1]
    # a true positive that overlaps an ambiguous region still counts
    tp_amb = evaluate_detection(gt, d, [0.5], ambiguous={"a": np.array([[5.0, 6.0]])})
    assert tp_amb.ap[0, 0] == 0.5 and tp_amb.ambiguous_ignored.tolist() == [0]


def test_unknown_label_and_no_ground_truth():
    gt = ann({"a": [(0, 10, 0)]})
    with pytest.raises(DataError, match="not in the annotation class list"):
        evaluate_detection(gt, dets([("a", 0, 1, 0, 1)], ["dance"]), [0.5])
    empty = ann({"a": []})
    with pytest.raises(DataError, match="no ground-truth"):
        evaluate_detection(empty, dets([]), [0.5])


def test_matches_the_one_at_a_time_loop():
    rng = np.random.default_rng(4)
    for _ in range(15):
        videos = {}
        for v in range(int(rng.integers(1, 5))):
            n = int(rng.integers(0, 6))
            s = rng.uniform(0, 50, n)
            videos[f"v{v}"] = [(a, a + w, int(c)) for a, w, c in zip(s, rng.uniform(1, 10, n), rng.integers(0, 3, n),
                                                                        strict=True)]
        gt = ann(videos)
        rows = []
        for _ in range(int(rng.integers(0, 40))):
            v = f"v{int(rng.integers(0, len(videos) + 1))}"  # sometimes an unknown video
            a = float(rng.uniform(0, 55))
            rows.append((v, int(rng.integers(0, 3)), float(np.round(rng.uniform(), 1)), a, a + float(rng.uniform(0.5, 12))))
        d = dets(rows)
        if all(not s for s in videos.values()):
            continue
        res = evaluate_detection(gt, d, THUMOS14_TIOU)
        np.testing.assert_allclose(res.ap, reference_ap(gt, d, THUMOS14_TIOU), atol=1e-12)


def test_ground_truth_as_predictions_on_thumos14(thumos_dir):
    gt = load_annotation_json(thumos_dir / "thumos14-reduced.json").select("test")
    rows = [(name, int(c), 1.0, float(s), float(e)) for name, v in gt.videos.items()
            for (s, e), c in zip(v.segments, v.labels, strict=True)]
    res = evaluate_detection(gt, dets(rows, gt.classes), THUMOS14_TIOU, subset="test")
    assert res.num_videos == 212
    np.testing.assert_allclose(res.ap, 1.0)


def test_to_dict_is_json_ready():
    import json

    gt = ann({"a": [(0, 10, 0)]})
    res = evaluate_detection(gt, dets([("a", 0, 1, 0, 10)]), [0.5, 0.7])
    obj = json.loads(json.dumps(res.to_dict()))
    assert obj["mAP"] == [1.0, 1.0] and obj["average_mAP"] == 1.0
    assert obj["per_class"]["jump"]["AP"] == [None, None]


# ----------------------------------------------------------------------------- ambiguous file

def test_load_ambiguous_thumos(thumos_dir):
    regions = load_ambiguous(thumos_dir / "Ambiguous_test.txt")
    np.testing.assert_allclose(regions["video_test_0000278"], [[0.0, 1.4], [95.7, 97.2]])
    assert all(r.shape[1] == 2 for r in regions.values())


@pytest.mark.parametrize("text,match", [("v 1\n", "line 1"), ("v a b\n", "numbers"), ("v 3 1\n", "valid")])
def test_load_ambiguous_errors(tmp_path, text, match):
    path = tmp_path / "amb.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        load_ambiguous(path)
    with pytest.raises(DataError, match="not found"):
        load_ambiguous(tmp_path / "nope.txt")


# ----------------------------------------------------------------------------- classification

def test_classification_map_hand_computed():
    gt = ann({"a": [(0, 1, 0)], "b": [(0, 1, 1)], "c": [(0, 1, 0), (2, 3, 1)]}, classes=["x", "y"])
    scores = {"a": [0.9, 0.2], "b": [0.8, 0.1], "c": [0.3, 0.7]}
    # x: ranking a(+), b(-), c(+) -> (1 + 2/3) / 2; y: c(+), a(-), b(+) -> (1 + 2/3) / 2
    assert evaluate_classification(gt, scores) == pytest.approx(5 / 6)
    with pytest.raises(DataError, match="no annotation"):
        evaluate_classification(gt, {"zzz": [0.1, 0.2]})
    with pytest.raises(DataError, match="classes"):
        evaluate_classification(gt, {"a": [0.1]})
