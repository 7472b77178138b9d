"""Accuracy guard of `hamnet export --verify`: PyTorch against every exported model on a
dataset's test split, each through the one inference path (`runtime.inference`) and the
one scoring (`runtime.scoring`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.errors import BundleError, DataError
from hamnet_deploy.runtime.events import Reporter, emitter
from hamnet_deploy.runtime.fileio import sha256_file
from hamnet_deploy.runtime.inference import Inference
from hamnet_deploy.runtime.scoring import EvalSummary, evaluate_outputs, thresholds_for


def accuracy_guard(reference: EvalSummary, candidates: list[EvalSummary], max_drop: float) -> list[str]:
    """Messages for each candidate whose average mAP is more than `max_drop` points
    (percentage points, mAP x 100) below the reference's."""
    bad = []
    for c in candidates:
        drop = 100.0 * (reference.average - c.average)
        if not np.isfinite(drop) or drop > max_drop:
            bad.append(f"{c.name}: average mAP {100 * c.average:.2f} vs {100 * reference.average:.2f} "
                       f"({reference.name}), a drop of {drop:.2f} points > --max-drop {max_drop:g}")
    return bad


def _record(summary: EvalSummary) -> dict[str, Any]:
    r = summary.detection
    return {"thresholds": list(r.thresholds), "mAP": [float(x) for x in r.map],
            "average_mAP": summary.average, "classification_mAP": float(summary.classification_map)}


def verify_models(loaded: Any, models: dict[str, Path], data: Path, max_drop: float, allow_drop: bool,
                  report: Reporter | None = None) -> dict[str, Any]:
    """PyTorch vs each exported ONNX model (ONNX Runtime, CPU) on the test split of `data`.

    Emits `export.verify` (the scores, the first the reference); raises BundleError when
    a model drops more than `max_drop` points of average mAP (unless `allow_drop`).
    Returns what the manifest records."""
    from hamnet_deploy.runtime.backends.onnxruntime import OnnxRuntimeRunner
    from hamnet_deploy.training.data import load_dataset
    from hamnet_deploy.training.evaluate import model_outputs

    emit = emitter(report)
    cfg, model, post = loaded.config, loaded.model, loaded.postprocess
    emit("export.verify.load", "stage", f"loading {data}", state="start")
    ds = load_dataset(data)
    emit("export.verify.load", "stage", state="done")
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
    thresholds = thresholds_for(cfg.recipe)
    emit("export.verify.run", "stage", f"evaluating PyTorch on {len(ds)} {subset} videos", state="start")
    scores = [evaluate_outputs(ds.annotations, model_outputs(model, ds), post, thresholds, ds.classes, "pytorch")]
    for kind, path in models.items():
        emit("export.verify.run", "stage", f"evaluating {kind} with ONNX Runtime", state="start")
        with OnnxRuntimeRunner(path, feature_dim=model.feature_dim) as runner:
            outputs = Inference(runner, model.receptive_radius, batch_size=8).run(ds.features)
        scores.append(evaluate_outputs(ds.annotations, dict(zip(ds.names, outputs, strict=True)), post,
                                       thresholds, ds.classes, kind))
    emit("export.verify.run", "stage", state="done")
    emit("export.verify", "result", f"accuracy on {len(ds)} {subset} videos", scores=scores)
    problems = accuracy_guard(scores[0], scores[1:], max_drop)
    if problems and not allow_drop:
        raise BundleError("accuracy guard: " + "; ".join(problems) + "; nothing was written: recalibrate "
                          "(more --calib-videos), drop the reduced-precision option, or pass --allow-drop")
    for line in problems:
        emit("export.verify.drop", "warning", f"accuracy drop allowed: {line}")
    if not problems:
        emit("export.verify.ok", "note", f"accuracy guard ok (max drop {max_drop:g} points of average mAP)")
    return {"data": str(data), "subset": subset, "videos": len(ds), "max_drop": max_drop,
            "passed": not problems, "pytorch": _record(scores[0]),
            **{kind: {**_record(sc), "sha256": sha256_file(models[kind])}
               for kind, sc in zip(models, scores[1:], strict=True)}}
