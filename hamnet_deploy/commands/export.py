"""`hamnet export`: checkpoint -> verified deployment bundle (ONNX, optional INT8 for
CPUs, optional TensorRT engines) and optionally a Triton model repository."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from hamnet_deploy.console import console, err_console, handle_errors, import_torch
from hamnet_deploy.export.verify import verify_available
from hamnet_deploy.runtime.errors import ConfigError


def _p(value: Any) -> str:
    """A path or message made safe for rich markup."""
    return escape(str(value))


def default_out(checkpoint: Path) -> Path:
    """CHECKPOINT/bundle for a run folder; RUN/bundle-epoch-N for an epoch folder inside a run."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name == "checkpoints" and checkpoint.name.startswith("epoch-"):
        return checkpoint.parent.parent / f"bundle-{checkpoint.name}"
    return checkpoint / "bundle"


def _check_args(*, int8_cpu: bool, calib: Path | None, trt: bool, int8: bool, triton: Path | None,
                given: dict[str, Any], verify: Path | None, allow_drop: bool, max_drop: float) -> None:
    from hamnet_deploy.export.formats import check_export_args
    from hamnet_deploy.export.options import check_opset

    check_export_args({"int8_cpu": int8_cpu, "trt": trt, "triton": triton is not None},
                      [k for k, v in given.items() if v not in (None, False)])
    if given.get("opset") is not None:
        check_opset(given["opset"])
    if int8_cpu and calib is None:
        raise ConfigError("--int8-cpu needs calibration data: add --calib DATA (a dataset folder; its train "
                          "split's features calibrate the INT8 model)")
    if calib is not None and not (int8_cpu or (trt and int8)):
        raise ConfigError("--calib is for INT8 calibration: add --int8-cpu (or --trt --int8), or drop --calib")
    if calib is not None and not calib.exists():
        raise ConfigError(f"--calib {calib}: not found; pass a dataset folder (per-video or W-TALC layout)")
    if verify is not None and not verify_available():
        raise ConfigError("--verify needs the evaluation code (runtime.evaluation), which this installation "
                          "lacks; export without --verify and evaluate the bundle with hamnet eval")
    if verify is not None and not verify.exists():
        raise ConfigError(f"--verify {verify}: not found; pass a dataset folder with a test split")
    if (allow_drop or max_drop != 1.0) and verify is None:
        raise ConfigError("--allow-drop and --max-drop apply to --verify DATA only: add --verify DATA")
    if not (math.isfinite(max_drop) and max_drop >= 0):
        raise ConfigError(f"--max-drop {max_drop}: must be a number >= 0 (points of average mAP)")
    calib_videos = given.get("calib_videos")
    if calib_videos is not None and calib_videos < 1:
        raise ConfigError(f"--calib-videos {calib_videos}: must be >= 1")


def _trt_options(given: dict[str, Any], fp16: bool, int8: bool, calib: Path | None, opset: int,
                 timing_cache: Path | None) -> Any:
    from hamnet_deploy.export.options import TrtOptions

    base = TrtOptions()
    kwargs = {k: given[k] for k in ("min_t", "opt_t", "max_t", "max_batch", "workspace_mb", "calib_videos")
              if given.get(k) is not None}
    return TrtOptions(fp16=fp16, int8=int8, calib_data=str(calib) if calib else None,
                      dla_core=given.get("dla"), opset=opset,
                      timing_cache=str(timing_cache) if timing_cache else base.timing_cache,
                      **kwargs).validate()


@handle_errors
def export_command(
    checkpoint: Path = typer.Argument(..., help="Run folder from `hamnet train` (its latest checkpoint) or a "
                                      "checkpoints/epoch-N folder."),
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
    triton: Path = typer.Option(None, "--triton", help="Also write a Triton model repository here."),
    verify: Path = typer.Option(None, "--verify", help="Accuracy guard: evaluate PyTorch and every exported "
                                "model on this dataset's test split."),
    allow_drop: bool = typer.Option(False, "--allow-drop", help="With --verify: report an mAP drop instead "
                                    "of failing."),
    max_drop: float = typer.Option(1.0, "--max-drop", help="With --verify: largest allowed drop of average "
                                   "mAP (points) of a reduced-precision model."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing bundle (atomically)."),
    skip_parity_long: bool = typer.Option(False, "--skip-parity-long", help="Skip the T = 2615 parity "
                                          "cases (faster on small machines)."),
) -> None:
    """Export a checkpoint to a verified deployment bundle (ONNX; INT8 for CPUs, TensorRT, Triton)."""
    from hamnet_deploy.export.options import DEFAULT_OPSET, TrtOptions

    given = {"opset": opset, "calib": calib, "calib_videos": calib_videos, "fp16": fp16, "int8": int8,
             "min_t": min_t, "opt_t": opt_t, "max_t": max_t, "max_batch": max_batch,
             "workspace_mb": workspace_mb, "dla": dla, "timing_cache": timing_cache,
             "skip_parity_long": skip_parity_long}
    _check_args(int8_cpu=int8_cpu, calib=calib, trt=trt, int8=int8, triton=triton, given=given,
                verify=verify, allow_drop=allow_drop, max_drop=max_drop)
    opset = DEFAULT_OPSET if opset is None else opset
    trt_options = _trt_options(given, fp16, int8, calib, opset, timing_cache) if trt else None
    if not checkpoint.exists():
        raise ConfigError(f"{checkpoint}: checkpoint not found; pass a run folder from hamnet train or its "
                          "checkpoints/epoch-N folder")
    out = out if out is not None else default_out(checkpoint)
    import_torch()
    from hamnet_deploy.export.pipeline import run_export

    outcome = run_export(
        checkpoint, out, console, opset=opset, force=force, skip_parity_long=skip_parity_long, int8_cpu=int8_cpu,
        calib=calib, calib_videos=calib_videos or TrtOptions().calib_videos, trt_options=trt_options,
        triton=triton, triton_max_batch=max_batch or TrtOptions().max_batch, verify=verify,
        allow_drop=allow_drop, max_drop=max_drop)
    console.print(f"[green]bundle written:[/] {_p(outcome.bundle)}", soft_wrap=True)
    console.print(f"next: hamnet detect FEATURES --model {_p(outcome.bundle)}", soft_wrap=True, highlight=False)
    if outcome.trt_error:
        err_console.print(f"[bold red]error:[/] {escape(outcome.trt_error)} (bundle without engines: "
                          f"{_p(outcome.bundle)})", highlight=False, soft_wrap=True)
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
