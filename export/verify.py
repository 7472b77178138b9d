"""Accuracy guard of `hamnet export --verify`: PyTorch against every exported model on
a dataset's test split, through the runtime's post-processing and evaluation."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from hamnet_deploy.runtime.errors import BundleError


def verify_available() -> bool:
    """True when the evaluation code the accuracy guard needs is installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("hamnet_deploy.runtime.evaluation", "hamnet_deploy.training.inference"))


def verify_models(loaded: Any, models: dict[str, Path], data: Path, max_drop: float, allow_drop: bool,
                  console: Console) -> dict:
    """Accuracy guard: PyTorch vs each exported ONNX model (ONNX Runtime, CPU) on the test
    split of `data`. Prints mAP side by side; raises BundleError when a model drops more
    than `max_drop` points of average mAP (unless `allow_drop`). Returns what the
    manifest records."""
    import torch
    from rich.table import Table

    from hamnet_deploy.export.parity import accuracy_guard, ort_runner, run_videos, score_outputs
    from hamnet_deploy.runtime.errors import DataError
    from hamnet_deploy.runtime.evaluation import ACTIVITYNET_TIOU, THUMOS14_TIOU
    from hamnet_deploy.training.data import load_dataset
    from hamnet_deploy.training.inference import run_model

    cfg, model, post = loaded.config, loaded.model, loaded.postprocess
    with console.status(f"loading {escape(str(data))}"):
        ds = load_dataset(data)
    subset = cfg.data.test_subset
    try:
        ds = ds.select(subset)
    except DataError as exc:
        raise DataError(f"--verify {data}: no {subset!r} videos to evaluate on ({exc}); pass the dataset the "
                        "model was trained on") from None
    if ds.feature_dim != model.feature_dim or list(ds.classes) != list(loaded.classes):
        raise DataError(f"--verify {data}: its features ({ds.feature_dim}-D, {ds.num_classes} classes) do not "
                        f"match the model ({model.feature_dim}-D, {model.num_classes} classes); pass the dataset "
                        "the model was trained on")
    thresholds = ACTIVITYNET_TIOU if cfg.recipe.startswith("activitynet") else THUMOS14_TIOU
    with console.status(f"evaluating PyTorch on {len(ds)} {subset} videos"):
        ref_out = run_model(model, ds.features, torch.device("cpu"))
        scores = [score_outputs("pytorch", ref_out, ds, post, thresholds, reference=True)]
    for kind, path in models.items():
        with console.status(f"evaluating {kind} with ONNX Runtime"):
            scores.append(score_outputs(kind, run_videos(ort_runner(path), ds.features),
                                        ds, post, thresholds))
    table = Table(title=f"accuracy on {len(ds)} {subset} videos", title_justify="left")
    mid = min(range(len(thresholds)), key=lambda i: abs(thresholds[i] - 0.5))
    for col in ("model", "avg mAP", f"mAP@{thresholds[mid]:g}", "cls mAP", "drop"):
        table.add_column(col, justify="left" if col == "model" else "right")
    ref = scores[0]
    for sc in scores:
        drop = "-" if sc.reference else f"{100 * (ref.average_map - sc.average_map):+.2f}"
        table.add_row(sc.name, f"{100 * sc.average_map:.2f}", f"{100 * sc.map_per_threshold[mid]:.2f}",
                      f"{100 * sc.classification_map:.2f}", drop)
    console.print(table)
    problems = accuracy_guard(ref, scores[1:], max_drop)
    if problems and not allow_drop:
        raise BundleError("accuracy guard: " + "; ".join(problems) + "; nothing was written: recalibrate "
                          "(more --calib-videos), drop the reduced-precision option, or pass --allow-drop")
    for line in problems:
        console.print(f"[yellow]accuracy drop allowed:[/] {escape(str(line))}")
    if not problems:
        console.print(f"[green]accuracy guard ok[/] (max drop {max_drop:g} points of average mAP)")
    return {"data": str(data), "subset": subset, "videos": len(ds), "max_drop": max_drop,
            "passed": not problems, "pytorch": ref.to_dict(),
            **{kind: sc.to_dict() for kind, sc in zip(models, scores[1:], strict=True)}}
