"""Plots people read: the best detections per class with their scores, true and false
positives by the evaluator's matching, a row for every ground-truth class (detected or
not), labelled thresholds, the class-probability panel, a width that grows with the
video, and an index.html that links every PNG."""

from __future__ import annotations

import html
from types import SimpleNamespace

import numpy as np
import pytest

from hamnet_deploy.runtime.detections import Detections
from hamnet_deploy.runtime.evaluation import evaluate_detection, interpolated_ap, true_positives
from hamnet_deploy.runtime.plotting import figure_width, plot_video, top_per_class

pytest.importorskip("matplotlib", reason="matplotlib is a dev dependency: pip install -e '.[dev]'")

CLASSES = ("Jump", "Run", "Swim")


def _dets(rows):
    video, label, score, a, b = zip(*rows, strict=True)
    return Detections.from_arrays(CLASSES, list(video), label, score, a, b)


def test_top_per_class_keeps_the_best_of_each_class():
    dets = _dets([("v", c, s, 0.0, 1.0) for c in (0, 1) for s in (0.1, 0.9, 0.5, 0.7)])
    chosen = top_per_class(dets, [0, 1], top=2)
    assert sorted(zip(dets.label[chosen].tolist(), dets.score[chosen].tolist(), strict=True)) == [(0, 0.7), (0, 0.9),
                                                                                      (1, 0.7), (1, 0.9)]
    assert top_per_class(dets, [1], top=10).size == 4


def test_true_positives_agree_with_the_evaluator():
    from hamnet_deploy.runtime.annotations import Annotations, build_video

    rng = np.random.default_rng(0)
    starts = rng.uniform(0, 90, 40)
    dets = _dets([("v", int(c), float(s), float(a), float(a + w)) for c, s, a, w in
                  zip(rng.integers(0, 3, 40), rng.uniform(0, 1, 40), starts, rng.uniform(1, 10, 40), strict=True)])
    segments = np.array([[5.0, 12.0], [30.0, 41.0], [60.0, 64.0], [70.0, 90.0]])
    labels = np.array([0, 1, 1, 2])
    tp = true_positives(segments, labels, dets, 0.3)
    video = build_video("v", "test", 100.0, segments.tolist(), [CLASSES[c] for c in labels],
                        {c: i for i, c in enumerate(CLASSES)})
    gt = Annotations(list(CLASSES), {"v": video})
    result = evaluate_detection(gt, dets, [0.3])
    assert tp.any()
    for c in range(3):  # the AP the evaluator reports, recomputed from these flags
        mine = np.flatnonzero(dets.label == c)
        order = mine[np.argsort(-dets.score[mine], kind="stable")]
        ap = interpolated_ap(tp[order][None], ~tp[order][None], int((labels == c).sum()))
        assert ap[0] == pytest.approx(result.ap[0, c], abs=1e-12), c


def test_plot_rows_marks_and_width(tmp_path):
    T = 500
    rng = np.random.default_rng(1)
    cas, att = rng.normal(size=(T, 4)), rng.uniform(size=T)
    dets = _dets([("v", 0, 0.9, 10.0, 20.0), ("v", 0, 0.8, 50.0, 55.0), ("v", 0, 0.2, 100.0, 110.0),
                  ("v", 1, 0.6, 200.0, 230.0)])
    gt = SimpleNamespace(segments=np.array([[10.0, 21.0], [150.0, 160.0], [300.0, 310.0]]),
                         labels=np.array([0, 0, 2]))
    summary = plot_video(tmp_path / "v.png", "v", cas, att, dets, 0.64, ground_truth=gt,
                         thresholds=[0.1, 0.5, 0.9], class_probs=[0.9, 0.3, 0.6], class_threshold=0.2, top=2)
    assert (tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"
    assert summary.classes == ["Jump", "Run", "Swim"]  # Swim: in the ground truth, not detected: a row
    assert summary.missed_classes == ["Swim"] and summary.drawn == 3 and summary.detections == 4
    assert summary.true_positives == 1  # Jump 0.9 matches [10, 21]; Jump 0.8 and Run 0.6 do not
    assert (summary.top_class, summary.top_probability, summary.ground_truth) == ("Jump", 0.9, 3)
    assert figure_width(30) == 12 and figure_width(1200) == 30 and figure_width(10_000) == 40


def test_index_links_every_plot_and_escapes_names(tmp_path):
    from hamnet_deploy.runtime.plot_index import write_index
    from hamnet_deploy.runtime.plotting import PlotSummary

    odd = 'a <b> & "c"'
    plots = [PlotSummary("v1", "v1.png", 10, 6.4, 3, ["Jump"], 1, 3, 2, ["Run"], "Jump", 0.75),
             PlotSummary(odd, "a b#c.png", 5, 3.2, 0)]
    page = write_index(tmp_path, plots).read_text()
    assert 'href="v1.png"' in page and 'href="a%20b%23c.png"' in page
    assert html.escape(odd) in page and odd not in page
    assert "1 of 3" in page and "Run" in page and "Jump (0.75)" in page
