"""Did the run learn anything? Signs of a dead model read off its own metrics log, and
the likely causes read off its settings and data, so a run that learned nothing says
so (in `metrics.jsonl` and at the end of `hamnet train`) instead of "done".

Signs (any one makes the run dead):
- the class loss (SAL, or BCL without SAL) ends near ln(C+1), the value of uniform
  class scores over C classes and background;
- the classification mAP on the test split is near chance (the expected AP of a
  random ranking, per class);
- post-processing finds no detection in the test split.
No PyTorch here: it works on the records the trainer writes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

UNIFORM_SHARE = 0.9  # class loss >= 90 % of ln(C+1): the class scores stayed (nearly) uniform
CHANCE_MARGIN = 0.1  # classification mAP within 10 % of the way from chance to 1
FEW_VIDEOS = 5  # fewer training videos than this for a class: it cannot be learned
STILL = 0.05  # the total loss moved by less than 5 % over the run
TREND_EPOCHS = 5  # fewer epochs say nothing about the loss's trend


@dataclass(frozen=True)
class Health:
    """The verdict on a finished run: `dead` when any sign holds, with the likely causes."""

    dead: bool
    signs: list[str] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"learned": not self.dead, "signs": list(self.signs), "causes": list(self.causes)}


def chance_ap(positives: int, videos: int) -> float:
    """Expected AP of a random ranking of `videos` items holding `positives` positives
    (AP = mean precision at each positive): (1/n) sum_i ((k-1)(i-1)/(n-1) + 1) / i."""
    n, k = videos, positives
    if k <= 0 or n <= 0:
        return 0.0
    if n == 1:
        return 1.0
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum(((k - 1) * (i - 1) / (n - 1) + 1) / i) / n)


def chance_classification_map(labels: np.ndarray) -> float:
    """Chance level of the classification mAP on videos with multi-hot `labels` (V, C):
    the mean expected random-ranking AP over classes with a positive video."""
    labels = np.asarray(labels) > 0
    counts = labels.sum(axis=0)
    aps = [chance_ap(int(k), len(labels)) for k in counts if k > 0]
    return float(np.mean(aps)) if aps else 0.0


def diagnose(records: Sequence[dict[str, Any]], num_classes: int, train_labels: np.ndarray,
             test_labels: np.ndarray | None, classes: Sequence[str], lr: float, epochs: int) -> Health:
    """The run's health from its per-epoch `records` (as in metrics.jsonl: `loss`, and
    `eval` with `classification_map` and `per_class` prediction counts where evaluated)."""
    losses = [r["loss"] for r in records if isinstance(r.get("loss"), dict)]
    signs: list[str] = []
    if losses:
        term = "sal" if "sal" in losses[-1] else "bcl" if "bcl" in losses[-1] else None
        uniform = math.log(num_classes + 1)
        if term is not None and losses[-1][term] >= UNIFORM_SHARE * uniform:
            where = "above" if losses[-1][term] > uniform else "near"
            signs.append(f"the class loss {term.upper()} ended at {losses[-1][term]:.3f}, {where} ln(C+1) = "
                         f"{uniform:.3f}, the loss of uniform class scores")
    evals = [r["eval"] for r in records if isinstance(r.get("eval"), dict)]
    if evals and test_labels is not None and len(test_labels):
        last = evals[-1]
        chance = chance_classification_map(test_labels)
        cls_map = last.get("classification_map")
        if isinstance(cls_map, int | float) and cls_map <= chance + CHANCE_MARGIN * (1 - chance):
            signs.append(f"the classification mAP on the test split is {100 * cls_map:.1f} %, near chance "
                         f"({100 * chance:.1f} %)")
        per_class = last.get("per_class")
        if isinstance(per_class, dict) and sum(c.get("predictions", 0) for c in per_class.values()) == 0:
            signs.append("post-processing found no detection in the test split")
    if not signs:
        return Health(False)
    return Health(True, signs, _causes(losses, train_labels, classes, lr, epochs))


def _causes(losses: list[dict[str, float]], train_labels: np.ndarray, classes: Sequence[str], lr: float,
            epochs: int) -> list[str]:
    causes: list[str] = []
    counts = (np.asarray(train_labels) > 0).sum(axis=0)
    if len(counts):
        few = int(np.argmin(counts))
        if counts[few] < FEW_VIDEOS:
            short = int(np.sum(counts < FEW_VIDEOS))
            causes.append(f"too few training videos per class: {int(counts[few])} for {classes[few]!r} ({short} of "
                          f"{len(counts)} classes have fewer than {FEW_VIDEOS}); add videos")
    totals = [x["total"] for x in losses if isinstance(x.get("total"), int | float)]
    if len(totals) >= TREND_EPOCHS:  # the mean of the first and of the last fifth of the epochs
        part = -(-len(totals) // 5)
        first, last = float(np.mean(totals[:part])), float(np.mean(totals[-part:]))
        if last > first:
            causes.append(f"the loss rose ({first:.3f} -> {last:.3f}): the learning rate optim.lr={lr:g} may be "
                          f"too high; try --set optim.lr={lr / 10:g}")
        elif first > 0 and (first - last) / first < STILL:
            causes.append(f"the loss barely moved ({first:.3f} -> {last:.3f}): the learning rate optim.lr={lr:g} "
                          f"may be too low; try --set optim.lr={lr * 10:g}")
    if epochs < 20:
        causes.append(f"only {epochs} epoch{'s' * (epochs != 1)}: train longer with --epochs")
    if not causes:
        causes.append("the features may not match the labels (check the dataset), or the settings need tuning")
    return causes
