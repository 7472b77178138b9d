"""One PNG per video, made to be read: attention with its labelled thresholds, the class
activation of the classes that matter, the top detections of each class with their
scores (true and false positives marked when ground truth is given, a row for every
ground-truth class, detected or not), and the video-level class probabilities beside.
The figure grows wider with the video. `runtime.plot_index` writes the `index.html`.

matplotlib is imported lazily (`hamnet detect --plot` only) and drawn with the Agg
canvas directly, never through pyplot, so no GUI backend is touched and the global
matplotlib backend is left alone. Files are written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.detections import Detections
from hamnet_deploy.runtime.errors import ConfigError
from hamnet_deploy.runtime.evaluation import true_positives
from hamnet_deploy.runtime.fileio import write_bytes_atomic

PLOT_MISSING = "--plot needs matplotlib: pip install 'hamnet-deploy[plot]'"
CAS_MODES = ("softmax", "sigmoid")
MAX_CLASSES = 5
"""Detected classes drawn per video (by best detection score); ground-truth classes always are."""
TOP_PER_CLASS = 5
"""Detections drawn per class row (the best by score); the title says how many there are."""
TP_TIOU = 0.5
"""tIoU at which a drawn detection counts as a true positive (the evaluator's matching)."""
PROB_ROWS = 10
"""Classes in the video-level probability panel (the most probable)."""
TP_EDGE, FP_EDGE = "#1a9850", "#d73027"


def require_matplotlib() -> tuple[Any, Any]:
    """(Figure, FigureCanvasAgg), or ConfigError telling how to install matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(PLOT_MISSING) from None
    return Figure, FigureCanvasAgg


def class_activation(cas: np.ndarray, mode: str = "softmax") -> np.ndarray:
    """(T, C+1) logits -> (T, C+1) per-snippet probabilities: softmax over the classes
    (background included) or an independent sigmoid per class."""
    if mode not in CAS_MODES:
        raise ConfigError(f"CAS mode {mode!r}: choose one of {', '.join(CAS_MODES)}")
    x = np.asarray(cas, dtype=np.float64)
    if mode == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    x = x - x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


def shown_classes(dets: Detections, limit: int = MAX_CLASSES) -> list[int]:
    """Labels of the detected classes, best detection first, at most `limit`."""
    if len(dets) == 0:
        return []
    order = np.argsort(-dets.score, kind="stable")
    labels = dets.label[order]
    _, first = np.unique(labels, return_index=True)
    return [int(c) for c in labels[np.sort(first)][:limit]]


def top_per_class(dets: Detections, classes: Sequence[int], top: int = TOP_PER_CLASS) -> np.ndarray:
    """Indices into `dets` of the `top` best detections of each class in `classes`."""
    order = np.lexsort((-dets.score, dets.label))  # by class, best first
    labels = dets.label[order]
    start = np.searchsorted(labels, labels, side="left")
    rank_in_class = np.arange(len(labels)) - start
    keep = (rank_in_class < top) & np.isin(labels, np.asarray(list(classes), dtype=np.int64))
    return order[keep]


def figure_width(seconds: float) -> float:
    """Inches: 12 for short videos, one more per minute beyond two, at most 40."""
    return float(np.clip(10.0 + seconds / 60.0, 12.0, 40.0))


@dataclass
class PlotSummary:
    """What one plot shows, for the index page."""

    video: str
    file: str
    snippets: int
    seconds: float
    detections: int
    classes: list[str] = field(default_factory=list)  # the rows drawn
    true_positives: int | None = None  # of the drawn detections (None: no ground truth)
    drawn: int = 0
    ground_truth: int | None = None  # segments
    missed_classes: list[str] = field(default_factory=list)  # ground-truth classes with no detection
    top_class: str = ""
    top_probability: float | None = None


def plot_video(path: str | os.PathLike, video: str, cas: np.ndarray, attention: np.ndarray,
               dets: Detections, snippet_seconds: float, *, ground_truth: Any = None,
               thresholds: Sequence[float] = (), cas_mode: str = "softmax", class_probs: Any = None,
               class_threshold: float | None = None, top: int = TOP_PER_CLASS, dpi: int = 100) -> PlotSummary:
    """Draw one video's figure into `path` (PNG) and say what it shows.

    Args:
        cas: (T, C+1) logits; attention: (T,) or (T, 1); dets: this video's detections.
        ground_truth: a `runtime.annotations.VideoAnnotation` (segments, labels) or None.
        thresholds: attention thresholds to mark (the post-processing's).
        class_probs: (C,) video-level class probabilities (the right-hand panel), or None.
        class_threshold: the video-level threshold that picks the classes to localize.
        top: detections drawn per class.
    """
    Figure, FigureCanvasAgg = require_matplotlib()
    att = np.asarray(attention, dtype=np.float64).reshape(-1)
    T = att.size
    times = (np.arange(T) + 0.5) * snippet_seconds
    end = T * snippet_seconds
    classes = list(dets.classes)
    gt_seg = np.zeros((0, 2)) if ground_truth is None else np.asarray(ground_truth.segments, np.float64).reshape(-1, 2)
    gt_lab = np.zeros(0, np.int64) if ground_truth is None else np.asarray(ground_truth.labels, np.int64).reshape(-1)
    known = gt_lab >= 0  # a class the model does not know is not drawn
    gt_seg, gt_lab = gt_seg[known], gt_lab[known]
    gt_classes = list(dict.fromkeys(gt_lab.tolist()))
    detected = shown_classes(dets, len(classes))
    rows = [c for c in detected if c in gt_classes]
    rows += [c for c in detected if c not in gt_classes][:max(MAX_CLASSES - len(rows), 0)]
    rows += [c for c in gt_classes if c not in detected]
    color = {c: f"C{i % 10}" for i, c in enumerate(rows)}
    chosen = top_per_class(dets, rows, top)
    drawn = dets.select(chosen)
    tp = None if ground_truth is None else true_positives(gt_seg, gt_lab, dets, TP_TIOU)[chosen]

    fig = Figure(figsize=(figure_width(end), 4.0 + 0.7 * max(len(rows), 1)), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 2, width_ratios=[figure_width(end) - 3.2, 3.2],
                            height_ratios=[1.0, 1.2, 0.3 + 0.6 * max(len(rows), 1)])
    ax_att = fig.add_subplot(grid[0, 0])
    ax_cas = fig.add_subplot(grid[1, 0], sharex=ax_att)
    ax_det = fig.add_subplot(grid[2, 0], sharex=ax_att)
    ax_prob = fig.add_subplot(grid[0:2, 1])
    more = f", the best {top} per class drawn" if len(drawn) < len(dets) else ""
    fig.suptitle(f"{video}: {len(dets)} detections{more}; T = {T} snippets ({end:.1f} s)", fontsize=11)

    _attention(ax_att, times, att, thresholds)
    for c in rows:
        ax_cas.plot(times, class_activation(cas, cas_mode)[:, c], color=color[c], lw=1.0, label=classes[c])
    ax_cas.set_ylim(0, 1.02)
    ax_cas.set_ylabel("CAS (softmax)" if cas_mode == "softmax" else "CAS (sigmoid)")
    if rows:
        ax_cas.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, title="classes",
                      title_fontsize=8)
    _detections(ax_det, rows, classes, color, drawn, tp, gt_seg, gt_lab, ground_truth is not None, end)
    probs = None if class_probs is None else np.asarray(class_probs, dtype=np.float64).reshape(-1)
    _probabilities(ax_prob, probs, classes, set(gt_classes), color, class_threshold)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    path = Path(path)
    write_bytes_atomic(path, buf.getvalue())
    best = int(np.argmax(probs)) if probs is not None and probs.size else None
    return PlotSummary(video, path.name, T, end, len(dets), [classes[c] for c in rows],
                       None if tp is None else int(tp.sum()), len(drawn), None if ground_truth is None else len(gt_lab),
                       [classes[c] for c in gt_classes if c not in detected],
                       classes[best] if best is not None else (classes[detected[0]] if detected else ""),
                       None if best is None else float(probs[best]))


def _attention(ax: Any, times: np.ndarray, att: np.ndarray, thresholds: Sequence[float]) -> None:
    ax.plot(times, att, color="black", lw=1.0)
    ax.fill_between(times, att, color="0.6", alpha=0.4, lw=0)
    thresholds = sorted(float(t) for t in thresholds)
    for th in thresholds:
        ax.axhline(th, color="0.55", lw=0.6, ls=":")
    labelled = thresholds if len(thresholds) <= 4 else [thresholds[0], thresholds[-1]]
    for th in labelled:
        ax.text(1.003, th, f"{th:.2g}", transform=ax.get_yaxis_transform(), fontsize=7, va="center", color="0.3")
    if thresholds:
        what = (f"dotted: the {len(thresholds)} thresholds {thresholds[0]:.2g} to {thresholds[-1]:.2g}"
                if len(thresholds) > 1 else f"dotted: the threshold {thresholds[0]:.2g}")
        ax.text(1.0, 1.03, what, transform=ax.transAxes, fontsize=7, color="0.3", ha="right", va="bottom")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("attention")
    ax.tick_params(labelbottom=False)


def _detections(ax: Any, rows: list[int], classes: list[str], color: dict[int, str], drawn: Detections,
                tp: np.ndarray | None, gt_seg: np.ndarray, gt_lab: np.ndarray, with_gt: bool, end: float) -> None:
    from matplotlib.patches import Patch

    for y, c in enumerate(rows):
        # a row (y grows downwards): ground truth band, scores, detection bars
        for a, b in gt_seg[gt_lab == c].tolist():
            ax.broken_barh([(a, b - a)], (y - 0.45, 0.2), facecolors=color[c], alpha=0.35, hatch="////",
                           edgecolor=color[c], lw=0.5)
        mine = np.flatnonzero(drawn.label == c)
        for i in mine.tolist():
            a, b, s = float(drawn.t_start[i]), float(drawn.t_end[i]), float(drawn.score[i])
            edge = "none" if tp is None else (TP_EDGE if tp[i] else FP_EDGE)
            ax.broken_barh([(a, b - a)], (y + 0.02, 0.38), facecolors=color[c], alpha=0.85, edgecolor=edge,
                           lw=0 if tp is None else 1.8, linestyle="-" if tp is None or tp[i] else "--")
            ax.text((a + b) / 2, y, f"{s:.2f}", ha="center", va="bottom", fontsize=7, clip_on=True)
    labels = [classes[c] + ("" if (drawn.label == c).any() else "\n(not detected)") for c in rows]
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    for tick, c in zip(ax.get_yticklabels(), rows, strict=True):
        tick.set_color(color[c])
    ax.set_ylim(len(rows) - 0.5 if rows else 0.6, -0.55)
    ax.set_xlim(0, end)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("detections")
    if not rows:
        ax.text(0.5, 0.5, "no detections", transform=ax.transAxes, ha="center", va="center", color="0.4")
    handles = [Patch(facecolor="0.6", label="detection (score above)")]
    if with_gt:
        handles = [Patch(facecolor="0.8", hatch="////", edgecolor="0.5", label="ground truth"),
                   Patch(facecolor="0.6", edgecolor=TP_EDGE, lw=1.8, label=f"true positive (tIoU >= {TP_TIOU:g})"),
                   Patch(facecolor="0.6", edgecolor=FP_EDGE, lw=1.8, ls="--", label="false positive")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)


def _probabilities(ax: Any, probs: np.ndarray | None, classes: list[str], gt: set[int], color: dict[int, str],
                   class_threshold: float | None) -> None:
    ax.set_title("video-level class probability", fontsize=9)
    if probs is None or probs.size == 0:
        ax.axis("off")
        return
    order = np.argsort(-probs, kind="stable")[:PROB_ROWS]
    ax.barh(range(len(order)), probs[order], color=[color.get(int(c), "0.7") for c in order])
    ax.set_yticks(range(len(order)), [classes[c] + (" *" if c in gt else "") for c in order.tolist()], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.tick_params(axis="x", labelsize=7)
    notes = []
    if class_threshold is not None:
        ax.axvline(class_threshold, color="0.3", lw=0.8, ls="--")
        notes.append(f"dashed: class threshold {class_threshold:g}")
    if gt:
        notes.append("* in the ground truth")
    ax.set_xlabel("\n".join(notes), fontsize=7)
