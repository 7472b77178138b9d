"""The export pipeline behind `hamnet export`: checkpoint -> ONNX (+ parity) -> INT8 for
CPUs -> TensorRT engines -> accuracy guard -> atomically committed bundle -> Triton.
The command module only parses arguments; this module does the work and reports
through the console it is given."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from hamnet_deploy.export.verify import verify_models
from hamnet_deploy.runtime.errors import HamnetError

TRT_MISSING_HINT = ("install TensorRT (pip install \"hamnet-deploy[trt]\"; on Jetson use JetPack's TensorRT) "
                    "and run on a machine with an NVIDIA GPU, or build the engines later from the bundle's "
                    "model.onnx")


@dataclass
class ExportOutcome:
    bundle: Path
    trt_error: str | None = None
    triton: list[Path] = field(default_factory=list)


def _p(value: Any) -> str:
    """A path or message made safe for rich markup."""
    return escape(str(value))


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def build_engines_hook(onnx_path: Path, stage_dir: Path, options: Any) -> tuple[list[dict], str | None]:
    """Call export.tensorrt_build.build_engines; (entries, None) or ([], why it failed)."""
    import importlib

    try:
        tensorrt_build = importlib.import_module("hamnet_deploy.export.tensorrt_build")
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
    from hamnet_deploy.export.parity import compare, ort_runner

    named = [(f"calib video {i} (T {len(x)})", x[None]) for i, x in enumerate(feats[:4])]
    return compare(ort_runner(fp32), ort_runner(int8), [(1, 1), (1, 37), (1, 339)], feature_dim=feature_dim,
                   name="ONNX Runtime INT8 vs FP32 (reported, not enforced)", atol=0.0, rtol=0.1,
                   inputs=named, enforced=False)


def run_export(checkpoint: Path, out: Path, console: Console, *, opset: int, force: bool, skip_parity_long: bool,
               int8_cpu: bool, calib: Path | None, calib_videos: int, trt_options: Any | None,
               triton: Path | None, triton_max_batch: int, verify: Path | None, allow_drop: bool,
               max_drop: float) -> ExportOutcome:
    """The export pipeline (the command without argument parsing)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hamnet_deploy.export.bundle_writer import (
        BundleStage,
        build_manifest,
        check_target,
        config_summary,
    )
    from hamnet_deploy.export.onnx_export import export_onnx
    from hamnet_deploy.export.parity import check_onnx_parity, parity_cases
    from hamnet_deploy.runtime.bundle import load_bundle
    from hamnet_deploy.runtime.manifest import ONNX, ONNX_INT8
    from hamnet_deploy.training.checkpoint import load_model

    check_target(out, force)
    with console.status(f"loading {_p(checkpoint)}"):
        loaded = load_model(checkpoint)
    model, cfg = loaded.model, loaded.config
    console.print(f"[bold]model:[/] {_p(loaded.checkpoint.path)} (epoch {loaded.checkpoint.epoch}): D = "
                  f"{model.feature_dim}, {model.num_classes} classes, receptive radius {model.receptive_radius}")
    post = loaded.postprocess
    snippet_seconds = float(post.snippet_seconds)
    outcome = ExportOutcome(out)
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

            from hamnet_deploy.export.int8_cpu import calibration_features, quantize_int8_cpu
            from hamnet_deploy.export.onnx_export import graph_io, model_opset

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
            verified = verify_models(loaded, staged, verify, max_drop, allow_drop, console)

        manifest = build_manifest(
            classes=loaded.classes, feature_dim=model.feature_dim, snippet_seconds=snippet_seconds,
            receptive_radius=model.receptive_radius, postprocess=post.to_dict(), models=models,
            engines=engines, config=config_summary(cfg),
            source={"checkpoint": str(Path(loaded.checkpoint.path).resolve()), "epoch": loaded.checkpoint.epoch,
                    **({"verify": verified} if verified else {})})
        stage.commit(manifest)

    bundle = load_bundle(out)  # read back exactly as the runtime will (checksums included)
    print_files(bundle, console)
    if triton is not None:
        from hamnet_deploy.export.triton import write_triton_repository

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


def print_files(bundle: Any, console: Console) -> None:
    """A table of the bundle's files: name, kind, size, sha256 prefix."""
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
