"""Export from Python with the command line's settings: `hamnet_deploy.export_bundle(...)`
(`hamnet_deploy.export` is the layer's package, hence the name).

    import hamnet_deploy
    outcome = hamnet_deploy.export_bundle("runs/t14", out="bundle", int8_cpu=True)  # checkpoint -> bundle
    hamnet_deploy.export_bundle("bundle", trt=True)                                 # add engines on the device

`hamnet export` is this function plus its printing: the same option checks (the format
table), defaults (`RUN/bundle`; INT8 calibrated on the training data when it is still
there) and errors. From a bundle it needs no PyTorch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hamnet_deploy.runtime.errors import ConfigError
from hamnet_deploy.runtime.events import Reporter, emitter


def default_out(checkpoint: Path) -> Path:
    """CHECKPOINT/bundle for a run folder; RUN/bundle-epoch-N for an epoch folder inside a
    run; RUN/bundle-latest (-best) for a pointer file."""
    checkpoint = Path(checkpoint)
    if checkpoint.suffix == ".json" and checkpoint.stem in ("latest", "best"):
        return checkpoint.parent / f"bundle-{checkpoint.stem}"
    if checkpoint.parent.name == "checkpoints" and checkpoint.name.startswith("epoch-"):
        return checkpoint.parent.parent / f"bundle-{checkpoint.name}"
    return checkpoint / "bundle"


def build_options(*, given: dict[str, Any], int8_cpu: bool, trt: bool, fp16: bool, int8: bool,
                  calib: Path | None, triton: Path | None, verify: Path | None, allow_drop: bool,
                  max_drop: float, force: bool) -> Any:
    """The validated ExportOptions of the command line. `given`: the format-specific
    options the user set (None = not given), checked against the format table first."""
    from hamnet_deploy.export.formats import check_export_args
    from hamnet_deploy.export.options import DEFAULT_OPSET, ExportOptions, TrtOptions

    check_export_args({"int8_cpu": int8_cpu, "trt": trt, "triton": triton is not None},
                      [k for k, v in given.items() if v not in (None, False)])
    opset = DEFAULT_OPSET if given.get("opset") is None else given["opset"]
    trt_options = None
    if trt:
        kwargs = {k: given[k] for k in ("min_t", "opt_t", "max_t", "max_batch", "workspace_mb", "calib_videos")
                  if given.get(k) is not None}
        trt_options = TrtOptions(fp16=fp16, int8=int8, calib_data=str(calib) if calib and int8 else None,
                                 dla_core=given.get("dla"), opset=opset,
                                 timing_cache=str(given["timing_cache"]) if given.get("timing_cache") else None,
                                 version_compatible=bool(given.get("version_compatible")),
                                 hardware_compatible=bool(given.get("hardware_compatible")), **kwargs)
    extra = {k: given[k] for k in ("calib_videos", "triton_ensemble") if given.get(k) is not None}
    if given.get("max_batch") is not None:
        extra["triton_max_batch"] = given["max_batch"]
    return ExportOptions(opset=opset, force=force, skip_parity_long=bool(given.get("skip_parity_long")),
                         int8_cpu=int8_cpu, calib=str(calib) if calib else None, trt=trt_options,
                         triton=str(triton) if triton else None, verify=str(verify) if verify else None,
                         allow_drop=allow_drop, max_drop=max_drop, **extra)


CHECKPOINT_ONLY = {"out": "--out", "opset": "--opset", "verify": "--verify", "allow_drop": "--allow-drop",
                   "max_drop": "--max-drop", "skip_parity_long": "--skip-parity-long"}
"""Options that only mean something when a checkpoint is exported (a bundle is updated in place)."""


def check_bundle_args(bundle: Path, given: dict[str, Any]) -> None:
    """Refuse the checkpoint-only options when updating `bundle` in place."""
    for key, flag in CHECKPOINT_ONLY.items():
        if given.get(key) not in (None, False):
            why = ("the bundle is updated in place; copy it first to keep the original" if key == "out" else
                   "the ONNX model is already in the bundle" if key in ("opset", "skip_parity_long") else
                   "the accuracy guard compares with PyTorch: run it where the checkpoint is")
            raise ConfigError(f"{flag} applies when exporting a checkpoint, and {bundle} is a bundle ({why}); "
                              f"drop {flag}")


def recorded_videos(model: Path) -> Path | None:
    """The per-video features folder (`DATA/videos`) of the dataset a bundle or a run was
    trained on, when it is still there; None otherwise (a W-TALC dataset is never used
    unless named: its files run pickle)."""
    import json

    from hamnet_deploy.runtime.bundle import load_bundle
    from hamnet_deploy.runtime.manifest import MANIFEST

    try:
        if (model / MANIFEST).is_file():
            config = load_bundle(model, verify=False).manifest.config
        else:
            runs = [model, model.parent, model.parent.parent]  # a run folder, a pointer in it, an epoch folder
            found = next(r / "config.json" for r in runs if (r / "config.json").is_file())
            config = json.loads((found).read_text(encoding="utf-8"))
        data = config.get("data", {}).get("path")
    except Exception:  # a courtesy: never fail an export over it
        return None
    videos = Path(data) / "videos" if isinstance(data, str) and data else None
    return videos if videos is not None and videos.is_dir() else None


def export_bundle(model: str | os.PathLike, out: str | os.PathLike | None = None, *, int8_cpu: bool = False,
           trt: bool = False, fp16: bool = False, int8: bool = False, calib: str | os.PathLike | None = None,
           triton: str | os.PathLike | None = None, verify: str | os.PathLike | None = None,
           allow_drop: bool = False, max_drop: float = 1.0, force: bool = False, report: Reporter | None = None,
           **given: Any) -> Any:
    """Export a checkpoint (run folder or `checkpoints/epoch-N`) to the bundle `out`, or
    add to the bundle `model` in place; returns the `ExportOutcome` (bundle path, TensorRT
    error if an optional engine failed). Arguments mean what the `hamnet export` options
    of the same name mean; `given`: the format-specific ones (`opset`, `calib_videos`,
    `min_t`, `opt_t`, `max_t`, `max_batch`, `workspace_mb`, `dla`, `timing_cache`,
    `version_compatible`, `hardware_compatible`, `skip_parity_long`, `triton_ensemble`)."""
    from hamnet_deploy.runtime.manifest import MANIFEST

    model = Path(model)
    emit = emitter(report)
    given = {"calib": calib, "fp16": fp16, "int8": int8, **given}
    from_bundle = (model / MANIFEST).is_file()
    if (int8_cpu or int8) and calib is None:  # calibrate on the training data when it is still there
        videos = recorded_videos(model)
        if videos is not None:
            calib = given["calib"] = str(videos.parent)
            emit("export.calib", "note", f"calibrating INT8 on the train split of {videos.parent} (the training "
                                         "data; --calib to choose)")
    if from_bundle:
        check_bundle_args(model, {**given, "out": out, "verify": verify, "allow_drop": allow_drop,
                                  "max_drop": None if max_drop == 1.0 else max_drop})
    options = build_options(given=given, int8_cpu=int8_cpu, trt=trt, fp16=fp16, int8=int8,
                            calib=Path(calib) if calib else None, triton=Path(triton) if triton else None,
                            verify=Path(verify) if verify else None, allow_drop=allow_drop, max_drop=max_drop,
                            force=force)
    if from_bundle:
        from hamnet_deploy.export.pipeline import update_bundle

        return update_bundle(model, options, report=report)
    if not model.exists():
        raise ConfigError(f"{model}: checkpoint not found; pass a run folder from hamnet train or its "
                          "checkpoints/epoch-N folder (or a bundle to add engines to)")
    from hamnet_deploy.export.pipeline import run_export

    return run_export(model, Path(out) if out is not None else default_out(model), options, report=report)
