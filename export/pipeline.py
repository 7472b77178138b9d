"""The export pipeline behind `hamnet export`: checkpoint -> the formats of the table
(`export.formats`) -> accuracy guard -> atomically committed bundle -> formats that use
the bundle (Triton); or, from a bundle (`update_bundle`, no PyTorch), the formats made
from its model.onnx added to it in place (`export.bundle_update`). Every format's step
runs through `run_step`, which times it, reports it (`runtime.events`) and checks what
it wrote; nothing here prints."""

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


def run_step(fmt: ExportFormat, ctx: ExportContext, optional: bool | None = None) -> None:
    """Run one format's step: a stage event before and after (with its seconds), its
    files checked in the stage, its parity report shown and, when enforced, required to
    pass. An optional format's failure (`optional`: default the table's) is recorded in
    `ctx.errors` (files removed); any other raises."""
    optional = fmt.optional if optional is None else optional
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
        if not optional:
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
    """Export the checkpoint to the bundle folder `out` (and what else `options` asks for);
    one export at a time per bundle folder (`runtime.locks.hold`)."""
    from hamnet_deploy.runtime.locks import hold

    with hold(out, "hamnet export", "choose another --out"):
        return _run_export(checkpoint, out, options, report)


def _run_export(checkpoint: Path, out: Path, options: ExportOptions, report: Reporter | None) -> ExportOutcome:
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
    ckpt = loaded.checkpoint
    if ckpt.chosen.startswith("best"):
        which = f"{checkpoint}: {ckpt.chosen}; {Path(checkpoint) / 'latest.json'} would take the last"
    elif ckpt.chosen.startswith("last"):
        which = f"{checkpoint}: {ckpt.chosen}"
    else:
        which = f"{ckpt.path} (epoch {ckpt.epoch})"
    emit("export.model", "note", f"model: {which}: D = "
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


BUNDLE_FORMATS = ("onnx_int8", "tensorrt", "triton")
"""Formats `update_bundle` makes from a bundle's model.onnx (the others need the checkpoint)."""


def update_bundle(path: Path, options: ExportOptions, report: Reporter | None = None) -> ExportOutcome:
    """Add what `options` asks for (INT8 CPU model, TensorRT engines, Triton repository)
    to the bundle at `path`, in place and atomically (`export.bundle_update`). Needs no
    PyTorch. Every step is required: if one fails nothing is changed. One change at a
    time per bundle (`runtime.locks.hold`, the lock an export to it takes)."""
    from hamnet_deploy.runtime.locks import hold

    with hold(path, "hamnet export", "run it again when that one has finished"):
        return _update_bundle(path, options, report)


def _update_bundle(path: Path, options: ExportOptions, report: Reporter | None) -> ExportOutcome:
    from hamnet_deploy.export.bundle_update import BundleUpdate
    from hamnet_deploy.runtime.bundle import load_bundle

    emit = emitter(report)
    options.validate()
    if options.verify is not None:
        raise BundleError("--verify compares with the PyTorch model: run it where the checkpoint is (hamnet "
                          "export RUN --verify DATA); from a bundle, check INT8 with hamnet eval")
    chosen = [f for f in formats_for(options) if f.key in BUNDLE_FORMATS]
    if not chosen:
        raise BundleError(f"{path} is already a bundle: add --trt, --int8-cpu or --triton DIR to add to it, or "
                          "export a checkpoint (hamnet export RUN)")
    emit("export.load", "stage", f"checking {path} (every checksum)", state="start")
    bundle = load_bundle(path, verify=True)  # a damaged bundle is refused before anything is built
    for kind in ("onnx", "onnx_int8"):
        if bundle.has(kind):
            bundle.check_self_contained(kind)
    emit("export.load", "stage", state="done")
    emit("export.model", "note", f"bundle {path}: D = {bundle.feature_dim}, {bundle.num_classes} classes, "
                                 f"receptive radius {bundle.receptive_radius}", bundle=str(path))
    outcome = ExportOutcome(Path(path))
    building = [f for f in chosen if not f.after_bundle]
    ctx = ExportContext(None, options, None, report, source=bundle)
    if building:
        with BundleUpdate(bundle, options.force) as stage:
            ctx.stage = stage
            if options.int8_cpu:
                stage.replace_model("onnx_int8")  # refused without --force when there is one
            if options.trt is not None:
                _check_engine_slot(stage, options)
                stage.bring_in("hamnet_int8_*.calib")  # an earlier calibration is reused
            for fmt in building:
                run_step(fmt, ctx, optional=False)
            stage.commit(ctx.models, ctx.engines)
    ctx.stage, ctx.bundle = None, load_bundle(path)  # read back as the runtime will (checksums included)
    if building:
        added = [m.file for m in ctx.models.values()] + [e.file for e in ctx.engines]
        emit("export.bundle", "result", f"bundle updated: {path} (+ {', '.join(added)})", bundle=ctx.bundle)
    for fmt in chosen:
        if fmt.after_bundle:
            run_step(fmt, ctx, optional=False)
    outcome.triton = ctx.triton
    return outcome


def _check_engine_slot(stage: object, options: ExportOptions) -> None:
    """Refuse, before building, an engine the bundle already has (same GPU, TensorRT,
    precision, DLA core) unless --force; skipped when TensorRT or the GPU is missing
    (the build then says so)."""
    from hamnet_deploy.runtime.devices import cuda_devices, installed_tensorrt
    from hamnet_deploy.runtime.trt_compat import engine_file_name, format_cc

    version, gpus = installed_tensorrt(), cuda_devices()
    if version and gpus:
        t = options.trt
        stage.replace_engine(engine_file_name(gpus[0]["name"], format_cc(gpus[0]["compute_capability"]), version,
                                              t.precision, t.dla_core))
