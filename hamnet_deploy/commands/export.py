"""`hamnet export`: checkpoint -> verified deployment bundle (ONNX, optional INT8 for
CPUs, optional TensorRT engines) and optionally a Triton model repository; or bundle ->
the same bundle with TensorRT engines / the INT8 model added, built on this machine
without PyTorch (`export.pipeline.update_bundle`)."""

from __future__ import annotations

from pathlib import Path

import typer

from hamnet_deploy.console import console, err_console, handle_errors, import_torch
from hamnet_deploy.display import p
from hamnet_deploy.reporting import json_line, make_reporter


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
    triton_ensemble: bool = typer.Option(False, "--triton-ensemble", help="With --triton: also an ensemble "
                                         "that runs the post-processing in Triton (features in, detections "
                                         "out; Python backend, NumPy)."),
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
             "skip_parity_long": skip_parity_long, "triton_ensemble": triton_ensemble}
    from hamnet_deploy.runtime.manifest import MANIFEST

    report = make_reporter(console, quiet, as_json)
    from_bundle = (checkpoint / MANIFEST).is_file()
    if not from_bundle and checkpoint.exists():
        import_torch()  # Ctrl-C held back while PyTorch starts
    from hamnet_deploy.export.api import export_bundle

    with report:
        outcome = export_bundle(checkpoint, out, int8_cpu=int8_cpu, trt=trt, calib=calib, triton=triton, verify=verify,
                         allow_drop=allow_drop, max_drop=max_drop, force=force, report=report,
                         **{k: v for k, v in given.items() if k not in ("calib", "fp16", "int8")}, fp16=fp16,
                         int8=int8)
    if as_json:
        json_line({"event": "export.done", "bundle": str(outcome.bundle), "trt_error": outcome.trt_error})
    console.print(f"next: {_detect_hint(outcome.bundle)}", soft_wrap=True, highlight=False)
    if outcome.trt_error:
        err_console.print(f"[bold red]error:[/] {p(outcome.trt_error)} (bundle without engines: "
                          f"{p(outcome.bundle)})", highlight=False, soft_wrap=True)
        raise typer.Exit(2)


def _detect_hint(bundle: Path) -> str:
    """A `hamnet detect` command that runs: on the per-video features of the dataset the
    model was trained on when they are still there, else on the user's feature files."""
    from hamnet_deploy.export.api import recorded_videos

    videos = recorded_videos(bundle)
    if videos is not None:
        return f"hamnet detect {p(videos)} --model {p(bundle)}"
    return f"hamnet detect FEATURES.npy --model {p(bundle)}  (FEATURES.npy: your T x D feature files)"


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
