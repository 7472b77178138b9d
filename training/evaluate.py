"""Evaluate a PyTorch HAM-Net on a dataset split through the NumPy runtime
(post-processing + ActivityNet-protocol mAP), as the trainer and `hamnet eval` do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console

from hamnet_deploy.runtime.detections import Detections
from hamnet_deploy.runtime.evaluation import (
    ACTIVITYNET_TIOU,
    THUMOS14_TIOU,
    DetectionResult,
    evaluate_classification,
    evaluate_detection,
)
from hamnet_deploy.runtime.postprocess import PostprocessConfig
from hamnet_deploy.runtime.report import map_table
from hamnet_deploy.training.data import WtalDataset
from hamnet_deploy.training.inference import detect_dataset


def thresholds_for(recipe: str) -> tuple[float, ...]:
    """tIoU thresholds of the protocol that matches the recipe."""
    return tuple(ACTIVITYNET_TIOU if recipe.startswith("activitynet") else THUMOS14_TIOU)


@dataclass
class EvalSummary:
    """Detection mAP per tIoU, its average, and classification mAP."""

    detection: DetectionResult
    classification_map: float
    detections: Detections

    @property
    def average(self) -> float:
        return float(self.detection.average_map)

    def to_dict(self) -> dict[str, Any]:
        out = self.detection.to_dict()
        out["classification_map"] = float(self.classification_map)
        return out


def evaluate_model(model: torch.nn.Module, data: WtalDataset, post: PostprocessConfig, device: torch.device,
                   recipe: str = "thumos14", thresholds: tuple[float, ...] | None = None) -> EvalSummary:
    """Run `model` over every video of `data` and score the detections against its ground truth."""
    dets, scores = detect_dataset(model, data, post, device)
    result = evaluate_detection(data.annotations, dets, thresholds or thresholds_for(recipe))
    cls_map = evaluate_classification(data.annotations, scores)
    return EvalSummary(result, float(cls_map), dets)


def print_summary(summary: EvalSummary, console: Console, per_class: bool = False) -> None:
    console.print(map_table(summary.detection, per_class=per_class))
    console.print(f"classification mAP {100 * summary.classification_map:.2f}")


