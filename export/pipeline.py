"""The export pipeline behind `hamnet export`: checkpoint -> the formats of the table
(`export.formats`) -> accuracy guard -> atomically committed bundle -> formats that use
the bundle (Triton). Every format's step runs through `run_step`, which times it,
reports it (`runtime.events`) and checks what it wrote; nothing here prints."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from hamnet_deploy.export.formats import ExportFormat, selected_formats
from hamnet_deploy.export.options import ExportOptions
from hamnet_deploy.export.steps import ExportContext
from hamnet_deploy.runtime.errors import BundleError, HamnetError
from hamnet_deploy.runtime.events import Reporter, emitter

TRT_MISSING_HINT = ("install TensorRT (pip install \"hamnet-deploy[trt]\"; on Jetson use JetPack's TensorRT) "
                    "and run on a machine with an NVIDIA GPU, or build the engines later from the bundle's "
                    "model.onnx")


@dataclass
class ExportOutcome:
    bundle: Path
    trt_error: str | None = None
    triton: list[Path] = field(default_factory=list)


def formats_for(options: ExportOptions) -> list[ExportFormat]:
    """The formats `options` asks for, in table order."""
    return selected_formats({"int8_cpu": options.int8_cpu, "trt": options.trt is not None,
                             "triton": options.triton is not None})


def run_step(fmt: ExportFormat, ctx: ExportContext) -> None:
    """Run one format's step: a stage event before and after (with its seconds), its
    files checked in the stage, its parity report shown and, when enforced, required to
    pass. An optional format's failure is recorded in `ctx.errors` (files removed)."""
    emit = emitter(ctx.report)
    emit(f"export.{fmt.key}", "stage", f"{fmt.name}: writing", state="start")
    started = time.perf_counter()
    before = ctx.stage.snapshot() if ctx.stage is not None else set()
    try:
        result = fmt.step(ctx)
        if ctx.stage is not None:
            missing = [f for f in result.files if not ctx.stage.file(f).is_file()]
            if missing:
                raise BundleError(f"{fmt.name}: {', '.join(missing)} was not written into the bundle folder")
    except Exception as exc:
        if not fmt.optional:
            raise
        if ctx.stage is not None:
            ctx.stage.remove_new(before)  # nothing half-built goes into the bundle
        why = str(exc) if isinstance(exc, HamnetError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ImportError):
            why = f"{why}; {TRT_MISSING_HINT}"
        ctx.errors[fmt.key] = f"{fmt.name} skipped: {why}"
        emit(f"export.{fmt.key}", "stage", state="done")
        emit(f"export.{fmt.key}.failed", "warning", ctx.errors[fmt.key])
        return
    if result.report is not None:
        r = result.report
        verdict = "parity ok" if r.ok else "outputs differ" if r.enforced else "outputs differ (reported, not enforced)"
        emit("export.parity", "result", f"{verdict}: {r.summary()}", report=r)
        r.raise_if_failed()
    seconds = time.perf_counter() - started
    emit(f"export.{fmt.key}", "stage", f"{fmt.name}: {result.summary} ({seconds:.1f} s)", state="done",
         seconds=seconds, files=result.files)


def run_export(checkpoint: Path, out: Path, options: ExportOptions, report: Reporter | None = None) -> ExportOutcome:
    """Export the checkpoint to the bundle folder `out` (and what else `options` asks for)."""
    from hamnet_deploy.export.bundle_writer import (
        BundleStage,
        build_manifest,
        check_target,
        config_summary,
    )
    from hamnet_deploy.export.verify import verify_models
    from hamnet_deploy.runtime.bundle import load_bundle
    from hamnet_deploy.training.checkpoint import load_model

    emit = emitter(report)
    options.validate()
    check_target(out, options.force)
    emit("export.load", "stage", f"loading {checkpoint}", state="start")
    loaded = load_model(checkpoint)
    model = loaded.model
    emit("export.load", "stage", state="done")
    emit("export.model", "note", f"model: {loaded.checkpoint.path} (epoch {loaded.checkpoint.epoch}): D = "
                                 f"{model.feature_dim}, {model.num_classes} classes, receptive radius "
                                 f"{model.receptive_radius}", checkpoint=str(loaded.checkpoint.path),
         epoch=loaded.checkpoint.epoch)
    chosen = formats_for(options)
    outcome = ExportOutcome(Path(out))
    with BundleStage(out, options.force) as stage:
        ctx = ExportContext(loaded, options, stage, report)
        for fmt in chosen:
            if not fmt.after_bundle:
                run_step(fmt, ctx)
        verified = None
        if options.verify is not None:
            staged = {kind: stage.file(entry.file) for kind, entry in ctx.models.items()}
            verified = verify_models(loaded, staged, Path(options.verify), options.max_drop, options.allow_drop,
                                     report)
        post = loaded.postprocess
        manifest = build_manifest(
            classes=loaded.classes, feature_dim=model.feature_dim, snippet_seconds=float(post.snippet_seconds),
            receptive_radius=model.receptive_radius, postprocess=post.to_dict(), models=ctx.models,
            engines=ctx.engines, config=config_summary(loaded.config),
            source={"checkpoint": str(Path(loaded.checkpoint.path).resolve()), "epoch": loaded.checkpoint.epoch,
                    **({"verify": verified} if verified else {})})
        stage.commit(manifest)
    ctx.stage, ctx.bundle = None, load_bundle(out)  # read back as the runtime will (checksums included)
    emit("export.bundle", "result", f"bundle written: {out}", bundle=ctx.bundle)
    for fmt in chosen:
        if fmt.after_bundle:
            run_step(fmt, ctx)
    outcome.trt_error = ctx.errors.get("tensorrt")
    outcome.triton = ctx.triton
    return outcome
