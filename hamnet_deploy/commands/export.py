"""`hamnet export`: checkpoint -> verified deployment bundle (ONNX, optional INT8 for
CPUs, optional TensorRT engines) and optionally a Triton model repository; or bundle ->
the same bundle with TensorRT engines / the INT8 model added, built on this machine
without PyTorch (`export.pipeline.update_bundle`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from hamnet_deploy.console import console, err_console, handle_errors, import_torch
from hamnet_deploy.display import p
from hamnet_deploy.reporting import json_line, make_reporter
from hamnet_deploy.runtime.errors import ConfigError


def default_out(checkpoint: Path) -> Path:
    """CHECKPOINT/bundle for a run folder; RUN/bundle-epoch-N for an epoch folder inside a run."""
    checkpoint = Path(checkpoint)
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
    extra = {k: given[k] for k in ("calib_videos",) if given.get(k) is not None}
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


@handle_errors
def export_command(
    checkpoint: Path = typer.Argument(..., help="Run folder from `hamnet train` (its latest checkpoint), a "
                                      "checkpoints/epoch-N folder, or a bundle to add engines / INT8 to."),
    out: Path = typer.Option(None, "--out", "-o", help="Bundle folder (default: CHECKPOINT/bundle; "
                             "RUN/bundle-epoch-N for an epoch folder)."),
    opset: int = typer.Option(None, "--opset", help="ONNX opset, 13-20 (default: 17, what TensorRT 8.5/8.6 "
                              "and Jetson parse)."),
    int8_cpu: bool = typer.Option(False, "--int8-cpu", help="Also write a static INT8 model for CPUs "
                                  "(model.int8.onnx); needs --calib."),
    calib: Path = typer.Option(None, "--calib", help="Dataset whose train-split features calibrate INT8."),
    calib_videos: int = typer.Option(None, "--calib-videos", help="At most this many calibration videos "
                                     "(default: 32)."),
    trt: bool = typer.Option(False, "--trt", help="Also build TensorRT engines (needs TensorRT and a GPU)."),
    fp16: bool = typer.Option(False, "--fp16", help="TensorRT: FP16 engine."),
    int8: bool = typer.Option(False, "--int8", help="TensorRT: INT8 engine (needs --calib)."),
    min_t: int = typer.Option(None, "--min-t", help="TensorRT profile: smallest T (default: 1)."),
    opt_t: int = typer.Option(None, "--opt-t", help="TensorRT profile: T to optimise for (default: 512)."),
    max_t: int = typer.Option(None, "--max-t", help="TensorRT profile: largest T; longer videos run in "
                              "chunks (default: 4096)."),
    max_batch: int = typer.Option(None, "--max-batch", help="Largest batch (TensorRT profile and Triton "
                                  "max_batch_size) (default: 4)."),
    workspace_mb: int = typer.Option(None, "--workspace-mb", help="TensorRT builder workspace in MiB "
                                     "(default: 2048)."),
    dla: int = typer.Option(None, "--dla", help="TensorRT: build for this Jetson DLA core (FP16/INT8, "
                            "static T)."),
    timing_cache: Path = typer.Option(None, "--timing-cache", help="TensorRT timing cache file (read and "
                                      "updated)."),
    version_compatible: bool = typer.Option(False, "--version-compatible", help="TensorRT 8.6+: an engine "
                                            "later TensorRT versions also run (slower)."),
    hardware_compatible: bool = typer.Option(False, "--hardware-compatible", help="TensorRT 8.6+: an engine "
                                             "any Ampere or newer discrete GPU runs (slower)."),
    triton: Path = typer.Option(None, "--triton", help="Also write a Triton model repository here."),
    verify: Path = typer.Option(None, "--verify", help="Accuracy guard: evaluate PyTorch and every exported "
                                "model on this dataset's test split."),
    allow_drop: bool = typer.Option(False, "--allow-drop", help="With --verify: report an mAP drop instead "
                                    "of failing."),
    max_drop: float = typer.Option(1.0, "--max-drop", help="With --verify: largest allowed drop of average "
                                   "mAP (points) of a reduced-precision model."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing bundle (atomically); from a "
                               "bundle: replace its INT8 model or the engine for this GPU and TensorRT."),
    skip_parity_long: bool = typer.Option(False, "--skip-parity-long", help="Skip the T = 2615 parity "
                                          "cases (faster on small machines)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or tables."),
    as_json: bool = typer.Option(False, "--json", help="Log one JSON line per event on stdout, nothing else."),
) -> None:
    """Export a checkpoint to a verified deployment bundle (ONNX; INT8 for CPUs, TensorRT, Triton), or add
    TensorRT engines / the INT8 model to a bundle on the machine that will run it (no PyTorch needed)."""
    given = {"opset": opset, "calib": calib, "calib_videos": calib_videos, "fp16": fp16, "int8": int8,
             "min_t": min_t, "opt_t": opt_t, "max_t": max_t, "max_batch": max_batch,
             "workspace_mb": workspace_mb, "dla": dla, "timing_cache": timing_cache,
             "version_compatible": version_compatible, "hardware_compatible": hardware_compatible,
             "skip_parity_long": skip_parity_long}
    from hamnet_deploy.runtime.manifest import MANIFEST

    report = make_reporter(console, quiet, as_json)
    from_bundle = (checkpoint / MANIFEST).is_file()
    if (int8_cpu or int8) and calib is None:  # calibrate on the training data when it is still there
        videos = _recorded_videos(checkpoint)
        if videos is not None:
            calib = given["calib"] = str(videos.parent)
            console.print(f"calibrating INT8 on the train split of {p(videos.parent)} (the training data; "
                          "--calib to choose)", highlight=False, soft_wrap=True)
    if from_bundle:
        check_bundle_args(checkpoint, {**given, "out": out, "verify": verify, "allow_drop": allow_drop,
                                       "max_drop": None if max_drop == 1.0 else max_drop})
    options = build_options(given=given, int8_cpu=int8_cpu, trt=trt, fp16=fp16, int8=int8, calib=calib,
                            triton=triton, verify=verify, allow_drop=allow_drop, max_drop=max_drop, force=force)
    if from_bundle:
        from hamnet_deploy.export.pipeline import update_bundle

        with report:
            update_bundle(checkpoint, options, report=report)
        if as_json:
            json_line({"event": "export.done", "bundle": str(checkpoint)})
        console.print(f"next: {_detect_hint(checkpoint)}", soft_wrap=True, highlight=False)
        return
    if not checkpoint.exists():
        raise ConfigError(f"{checkpoint}: checkpoint not found; pass a run folder from hamnet train or its "
                          "checkpoints/epoch-N folder (or a bundle to add engines to)")
    out = out if out is not None else default_out(checkpoint)
    import_torch()
    from hamnet_deploy.export.pipeline import run_export

    with report:
        outcome = run_export(checkpoint, out, options, report=report)
    if as_json:
        json_line({"event": "export.done", "bundle": str(outcome.bundle), "trt_error": outcome.trt_error})
    console.print(f"next: {_detect_hint(outcome.bundle)}", soft_wrap=True, highlight=False)
    if outcome.trt_error:
        err_console.print(f"[bold red]error:[/] {p(outcome.trt_error)} (bundle without engines: "
                          f"{p(outcome.bundle)})", highlight=False, soft_wrap=True)
        raise typer.Exit(2)


def _recorded_videos(model: Path) -> Path | None:
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
            runs = [model, model.parent.parent]  # a run folder, or its checkpoints/epoch-N
            found = next(r / "config.json" for r in runs if (r / "config.json").is_file())
            config = json.loads((found).read_text(encoding="utf-8"))
        data = config.get("data", {}).get("path")
    except Exception:  # a courtesy: never fail an export over it
        return None
    videos = Path(data) / "videos" if isinstance(data, str) and data else None
    return videos if videos is not None and videos.is_dir() else None


def _detect_hint(bundle: Path) -> str:
    """A `hamnet detect` command that runs: on the per-video features of the dataset the
    model was trained on when they are still there, else on the user's feature files."""
    videos = _recorded_videos(bundle)
    if videos is not None:
        return f"hamnet detect {p(videos)} --model {p(bundle)}"
    return f"hamnet detect FEATURES.npy --model {p(bundle)}  (FEATURES.npy: your T x D feature files)"


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
