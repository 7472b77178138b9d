"""One PNG per video, like Figure 5 of the HAM-Net paper: attention over time, the class
activation of the detected classes, the detections and (when known) the ground truth.

matplotlib is imported lazily (`hamnet detect --plot` only) and drawn with the Agg
canvas directly, never through pyplot, so no GUI backend is touched and the global
matplotlib backend is left alone. Files are written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.detections import Detections
from hamnet_deploy.runtime.errors import ConfigError
from hamnet_deploy.runtime.fileio import write_bytes_atomic

PLOT_MISSING = "--plot needs matplotlib: pip install 'hamnet-deploy[plot]'"
CAS_MODES = ("softmax", "sigmoid")
MAX_CLASSES = 5
"""At most this many detected classes are drawn per video (by best detection score)."""


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


def plot_video(path: str | os.PathLike, video: str, cas: np.ndarray, attention: np.ndarray,
               dets: Detections, snippet_seconds: float, *, ground_truth: Any = None,
               thresholds: Sequence[float] = (), cas_mode: str = "softmax", dpi: int = 100) -> Path:
    """Draw one video's figure into `path` (PNG).

    Args:
        cas: (T, C+1) logits; attention: (T,) or (T, 1); dets: this video's detections.
        ground_truth: a `runtime.annotations.VideoAnnotation` (segments, labels) or None.
        thresholds: attention thresholds to mark (the post-processing's).
    """
    Figure, FigureCanvasAgg = require_matplotlib()
    att = np.asarray(attention, dtype=np.float64).reshape(-1)
    T = att.size
    times = (np.arange(T) + 0.5) * snippet_seconds
    end = T * snippet_seconds
    classes = list(dets.classes)
    show = shown_classes(dets)
    if ground_truth is not None:
        for c in np.asarray(ground_truth.labels, dtype=np.int64).tolist():
            if c not in show and len(show) < MAX_CLASSES:
                show.append(int(c))
    probs = class_activation(cas, cas_mode)
    colors = [f"C{i}" for i in range(len(show))]

    fig = Figure(figsize=(12, 6.5), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax_att, ax_cas, ax_det = fig.subplots(3, 1, sharex=True, height_ratios=[1, 1.2, 1.1])
    fig.suptitle(f"{video}: {len(dets)} detections, T = {T} ({end:.1f} s)", fontsize=11)

    ax_att.plot(times, att, color="black", lw=1.0)
    ax_att.fill_between(times, att, color="0.6", alpha=0.4, lw=0)
    for th in thresholds:
        ax_att.axhline(th, color="0.7", lw=0.5, ls=":")
    ax_att.set_ylim(0, 1.02)
    ax_att.set_ylabel("attention")

    for c, color in zip(show, colors, strict=True):
        ax_cas.plot(times, probs[:, c], color=color, lw=1.0, label=classes[c])
    ax_cas.set_ylim(0, 1.02)
    ax_cas.set_ylabel("CAS (softmax)" if cas_mode == "softmax" else "CAS (sigmoid)")
    if show:
        ax_cas.legend(loc="upper right", fontsize=8, ncol=min(len(show), 3), frameon=False)

    rows: list[str] = []
    if ground_truth is not None:
        gt_seg = np.asarray(ground_truth.segments, dtype=np.float64).reshape(-1, 2)
        gt_lab = np.asarray(ground_truth.labels, dtype=np.int64)
        y = len(rows)
        rows.append("ground truth")
        for (a, b), c in zip(gt_seg.tolist(), gt_lab.tolist(), strict=True):
            color = colors[show.index(c)] if c in show else "0.5"
            ax_det.broken_barh([(a, b - a)], (y - 0.35, 0.7), facecolors=color, alpha=0.9)
    top = float(dets.score.max()) if len(dets) else 1.0
    low = float(dets.score.min()) if len(dets) else 0.0
    for c, color in zip(show, colors, strict=True):
        mine = dets.select(dets.label == c)
        if len(mine) == 0:
            continue
        y = len(rows)
        rows.append(f"{classes[c]}")
        # stronger detections are drawn more opaque
        alpha = 0.25 + 0.75 * (mine.score - low) / (top - low) if top > low else np.ones(len(mine))
        for a, b, al in zip(mine.t_start.tolist(), mine.t_end.tolist(), np.asarray(alpha).tolist(), strict=True):
            ax_det.broken_barh([(a, b - a)], (y - 0.35, 0.7), facecolors=color, alpha=al, edgecolor="none")
    ax_det.set_yticks(range(len(rows)), rows, fontsize=8)
    ax_det.set_ylim(-0.6, max(len(rows), 1) - 0.4)
    ax_det.invert_yaxis()
    ax_det.set_xlim(0, end)
    ax_det.set_xlabel("time (s)")
    ax_det.set_ylabel("detections")

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    path = Path(path)
    write_bytes_atomic(path, buf.getvalue())
    return path
