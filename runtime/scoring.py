"""Model outputs -> detections -> mAP: the one way every caller scores a model (the
trainer's evaluation, `hamnet eval RUN --data`, the export's accuracy guard, the demo).

`outputs` maps each video to its (cas (T, C+1), attention (T,)) from the one inference
path (`runtime.inference`); the post-processing is `runtime.postprocess`, the protocol
`runtime.evaluation` (SPEC §4-5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hamnet_deploy.runtime.annotations import Annotations
from hamnet_deploy.runtime.detections import Detections
from hamnet_deploy.runtime.evaluation import (
    ACTIVITYNET_TIOU,
    THUMOS14_TIOU,
    DetectionResult,
    evaluate_classification,
    evaluate_detection,
)
from hamnet_deploy.runtime.postprocess import PostprocessConfig, localize_and_score

Outputs = Mapping[str, tuple[np.ndarray, np.ndarray]]


def thresholds_for(recipe: str) -> tuple[float, ...]:
    """tIoU thresholds of the protocol that matches a recipe name."""
    return tuple(ACTIVITYNET_TIOU if str(recipe).startswith("activitynet") else THUMOS14_TIOU)


def detect_outputs(outputs: Outputs, post: PostprocessConfig, classes: Sequence[str],
                   durations: Mapping[str, float | None] | None = None) -> tuple[Detections, dict[str, np.ndarray]]:
    """Detections of every video (times clipped to its duration when known) and its
    video-level class probabilities, in the order of `outputs`."""
    durations = durations or {}
    items = [(v, cas, att, durations.get(v)) for v, (cas, att) in outputs.items()]
    if not items:
        return Detections.empty(classes), {}
    dets, probs = localize_and_score(items, post, classes=classes)
    return dets, dict(zip(outputs, probs, strict=True))


@dataclass
class EvalSummary:
    """Detection mAP per tIoU, its average, and classification mAP of one model."""

    detection: DetectionResult
    classification_map: float
    detections: Detections
    name: str = ""

    @property
    def average(self) -> float:
        return float(self.detection.average_map)

    def to_dict(self) -> dict[str, Any]:
        out = self.detection.to_dict()
        out["classification_map"] = float(self.classification_map)
        return out


def evaluate_outputs(ann: Annotations, outputs: Outputs, post: PostprocessConfig,
                     thresholds: Sequence[float] = THUMOS14_TIOU, classes: Sequence[str] | None = None,
                     name: str = "") -> EvalSummary:
    """Score the outputs of the annotated videos in `outputs` against `ann`: only those
    videos are evaluated (their durations clip the detections)."""
    videos = [v for v in outputs if v in ann.videos]
    subset = ann.select(None, [v for v in ann.videos if v not in set(videos)])
    durations = {v: ann.videos[v].duration for v in videos}
    dets, scores = detect_outputs({v: outputs[v] for v in videos}, post, classes or ann.classes, durations)
    result = evaluate_detection(subset, dets, thresholds)
    return EvalSummary(result, float(evaluate_classification(subset, scores)), dets, name)
