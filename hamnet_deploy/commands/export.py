"""`hamnet export`: checkpoint -> verified deployment bundle (ONNX, optional INT8 for
CPUs, optional TensorRT engines) and optionally a Triton model repository."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from hamnet_deploy.console import console, err_console, handle_errors
from runtime.errors import BundleError, ConfigError, HamnetError

TRT_MISSING_HINT = ("install TensorRT (pip install \"hamnet-deploy[trt]\"; on Jetson use JetPack's TensorRT) "
                    "and run on a machine with an NVIDIA GPU, or build the engines later from the bundle's "
                    "model.onnx")


@dataclass
class _Outcome:
    bundle: Path
    trt_error: str | None = None
    triton: list[Path] = field(default_factory=list)


def _p(value: Any) -> str:
    """A path or message made safe for rich markup."""
    return escape(str(value))


def default_out(checkpoint: Path) -> Path:
    """CHECKPOINT/bundle for a run folder; RUN/bundle-epoch-N for an epoch folder inside a run."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name == "checkpoints" and checkpoint.name.startswith("epoch-"):
        return checkpoint.parent.parent / f"bundle-{checkpoint.name}"
    return checkpoint / "bundle"


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _check_args(*, int8_cpu: bool, calib: Path | None, trt: bool, int8: bool, triton: Path | None,
                given: dict[str, Any], verify: Path | None, allow_drop: bool, max_drop: float) -> None:
    from export.formats import check_export_args
    from export.options import check_opset

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
    from export.options import TrtOptions

    base = TrtOptions()
    kwargs = {k: given[k] for k in ("min_t", "opt_t", "max_t", "max_batch", "workspace_mb", "calib_videos")
              if given.get(k) is not None}
    return TrtOptions(fp16=fp16, int8=int8, calib_data=str(calib) if calib else None,
                      dla_core=given.get("dla"), opset=opset,
                      timing_cache=str(timing_cache) if timing_cache else base.timing_cache,
                      **kwargs).validate()


def build_engines_hook(onnx_path: Path, stage_dir: Path, options: Any) -> tuple[list[dict], str | None]:
    """Call export.tensorrt_build.build_engines; (entries, None) or ([], why it failed)."""
    import importlib

    try:
        tensorrt_build = importlib.import_module("export.tensorrt_build")
    except ImportError as exc:
        return [], f"TensorRT engines were not built: TensorRT support is not available here ({exc}); " + TRT_MISSING_HINT
    try:
        entries = tensorrt_build.build_engines(onnx_path, stage_dir, options)
    except HamnetError as exc:
        return [], f"TensorRT engines were not built: {exc}"
    except ImportError as exc:
        return [], f"TensorRT engines were not built: {exc}; " + TRT_MISSING_HINT
    except Exception as exc:  # the builder's own failures (TensorRT raises RuntimeError, ...)
        return [], f"TensorRT engines were not built: {type(exc).__name__}: {exc}"
    return list(entries or []), None


def _int8_parity(fp32: Path, int8: Path, feats: list, feature_dim: int) -> Any:
    from export.parity import compare, ort_runner

    named = [(f"calib video {i} (T {len(x)})", x[None]) for i, x in enumerate(feats[:4])]
    return compare(ort_runner(fp32), ort_runner(int8), [(1, 1), (1, 37), (1, 339)], feature_dim=feature_dim,
                   name="ONNX Runtime INT8 vs FP32 (reported, not enforced)", atol=0.0, rtol=0.1,
                   inputs=named, enforced=False)


def run_export(checkpoint: Path, out: Path, *, opset: int, force: bool, skip_parity_long: bool,
               int8_cpu: bool, calib: Path | None, calib_videos: int, trt_options: Any | None,
               triton: Path | None, triton_max_batch: int, verify: Path | None, allow_drop: bool,
               max_drop: float) -> _Outcome:
    """The export pipeline (the command without argument parsing)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from export.bundle_writer import BundleStage, build_manifest, check_target, config_summary
    from export.onnx_export import export_onnx
    from export.parity import check_onnx_parity, parity_cases
    from runtime.bundle import ONNX, ONNX_INT8, load_bundle
    from training.checkpoint import load_model

    check_target(out, force)
    with console.status(f"loading {_p(checkpoint)}"):
        loaded = load_model(checkpoint)
    model, cfg = loaded.model, loaded.config
    console.print(f"[bold]model:[/] {_p(loaded.checkpoint.path)} (epoch {loaded.checkpoint.epoch}): D = "
                  f"{model.feature_dim}, {model.num_classes} classes, receptive radius {model.receptive_radius}")
    post = loaded.postprocess
    snippet_seconds = float(post.snippet_seconds)
    outcome = _Outcome(out)
    with BundleStage(out, force) as stage:
        onnx_path = stage.file("model.onnx")
        with console.status(f"exporting ONNX (opset {opset}), simplifying, checking"):
            info = export_onnx(model, onnx_path, classes=loaded.classes, snippet_seconds=snippet_seconds,
                               opset=opset)
        for note in info.notes:
            console.print(f"[yellow]note:[/] {_p(note)}")
        console.print(f"[green]ONNX[/] opset {opset}{', simplified (onnxslim)' if info.simplified else ''}, "
                      f"onnx.checker full check passed ({info.seconds:.1f} s)")

        cases = parity_cases(skip_parity_long)
        bar = Progress(TextColumn("[bold]parity[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=console, transient=True)
        with bar:
            task = bar.add_task("ONNX Runtime vs PyTorch", total=len(cases))
            report = check_onnx_parity(model, onnx_path, skip_long=skip_parity_long,
                                       on_case=lambda _c: bar.advance(task))
        console.print(report.to_table())
        report.raise_if_failed()
        console.print(f"[green]parity ok[/] {report.summary()}")

        models = {ONNX: stage.model_entry("model.onnx", opset=opset, precision="fp32", inputs=info.inputs,
                                          outputs=info.outputs,
                                          extra={"simplified": info.simplified,
                                                 "parity": _parity_record(report)})}
        if int8_cpu:
            import onnx

            from export.int8_cpu import calibration_features, quantize_int8_cpu
            from export.onnx_export import graph_io, model_opset

            with console.status(f"loading calibration features from {_p(calib)}"):
                feats = calibration_features(calib, calib_videos, subset=cfg.data.train_subset,
                                             feature_dim=model.feature_dim)
            with console.status(f"quantizing to INT8 (static, QDQ) on {len(feats)} videos"):
                res = quantize_int8_cpu(onnx_path, stage.file("model.int8.onnx"), feats)
                q_proto = onnx.load(str(res.path))
                q_in, q_out = graph_io(q_proto)
            with console.status("comparing INT8 with FP32"):
                q_report = _int8_parity(onnx_path, res.path, feats, model.feature_dim)
            console.print(q_report.to_table())
            console.print(f"[green]INT8[/] calibrated on {res.calib_videos} videos ({res.calib_snippets} "
                          f"snippets), {len(res.float_nodes)} nodes kept in float ({res.seconds:.1f} s); "
                          f"{q_report.summary()}")
            models[ONNX_INT8] = stage.model_entry(
                "model.int8.onnx", opset=model_opset(q_proto), precision="int8", inputs=q_in, outputs=q_out,
                extra={"quantization": {**res.settings, "calib_videos": res.calib_videos,
                                        "calib_data": str(calib)},
                       "parity_vs_fp32": _parity_record(q_report)})

        engines: tuple = ()
        if trt_options is not None:
            with console.status(f"building TensorRT engines ({trt_options.precision})"):
                before = stage.snapshot()
                raw, outcome.trt_error = build_engines_hook(onnx_path, stage.path, trt_options)
                if outcome.trt_error:
                    stage.remove_new(before)  # nothing half-built goes into the bundle
            if raw:
                engines = stage.engine_entries(raw)
                console.print(f"[green]TensorRT[/] {len(engines)} engine(s) built")

        verified = None
        if verify is not None:
            staged = {kind: stage.file(entry.file) for kind, entry in models.items()}
            verified = verify_models(loaded, staged, verify, max_drop, allow_drop)

        manifest = build_manifest(
            classes=loaded.classes, feature_dim=model.feature_dim, snippet_seconds=snippet_seconds,
            receptive_radius=model.receptive_radius, postprocess=post.to_dict(), models=models,
            engines=engines, config=config_summary(cfg),
            source={"checkpoint": str(Path(loaded.checkpoint.path).resolve()), "epoch": loaded.checkpoint.epoch,
                    **({"verify": verified} if verified else {})})
        stage.commit(manifest)

    bundle = load_bundle(out)  # read back exactly as the runtime will (checksums included)
    _print_files(bundle)
    if triton is not None:
        from export.triton import write_triton_repository

        with console.status(f"writing Triton model repository {_p(triton)}"):
            outcome.triton = write_triton_repository(bundle, triton, max_batch=triton_max_batch, force=force)
        for folder in outcome.triton:
            console.print(f"[green]Triton[/] model {_p(folder)}")
    return outcome


def _parity_record(report: Any) -> dict[str, Any]:
    cas, att = report.worst("cas"), report.worst("attention")
    return {"cases": len({r.case for r in report.rows}), "ok": report.ok, "enforced": report.enforced,
            "cas_max_abs": cas[0], "cas_max_rel": cas[1], "attention_max_abs": att[0],
            "attention_max_rel": att[1]}


def _print_files(bundle: Any) -> None:
    from rich.table import Table

    table = Table(title=f"bundle {_p(bundle.path)}", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("kind", overflow="fold")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("sha256", no_wrap=True)
    rows = [(m.file, f"{kind} ({m.precision})", m.sha256) for kind, m in bundle.manifest.models.items()]
    rows += [(e.file, f"engine ({e.precision}, {e.gpu_name})", e.sha256) for e in bundle.engines]
    for name, kind, sha in rows:
        table.add_row(_p(name), _p(kind), _human((bundle.path / name).stat().st_size), sha[:12])
    manifest = bundle.path / "manifest.json"
    table.add_row("manifest.json", "manifest", _human(manifest.stat().st_size), "-")
    console.print(table)


def verify_available() -> bool:
    """True when the evaluation code the accuracy guard needs is installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("runtime.evaluation", "training.inference"))


def verify_models(loaded: Any, models: dict[str, Path], data: Path, max_drop: float, allow_drop: bool) -> dict:
    """Accuracy guard: PyTorch vs each exported ONNX model (ONNX Runtime, CPU) on the test
    split of `data`. Prints mAP side by side; raises BundleError when a model drops more
    than `max_drop` points of average mAP (unless `allow_drop`). Returns what the
    manifest records."""
    import torch
    from rich.table import Table

    from export.parity import accuracy_guard, ort_runner, run_videos, score_outputs
    from runtime.errors import DataError
    from runtime.evaluation import ACTIVITYNET_TIOU, THUMOS14_TIOU
    from training.data import load_dataset
    from training.inference import run_model

    cfg, model, post = loaded.config, loaded.model, loaded.postprocess
    with console.status(f"loading {_p(data)}"):
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
        console.print(f"[yellow]accuracy drop allowed:[/] {_p(line)}")
    if not problems:
        console.print(f"[green]accuracy guard ok[/] (max drop {max_drop:g} points of average mAP)")
    return {"data": str(data), "subset": subset, "videos": len(ds), "max_drop": max_drop,
            "passed": not problems, "pytorch": ref.to_dict(),
            **{kind: sc.to_dict() for kind, sc in zip(models, scores[1:], strict=True)}}


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
    from export.options import DEFAULT_OPSET, TrtOptions

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
    outcome = run_export(
        checkpoint, out, opset=opset, force=force, skip_parity_long=skip_parity_long, int8_cpu=int8_cpu,
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
