"""What each export format does, one function per row of `export.formats.FORMATS`.
`export.pipeline.run_step` runs every one of them the same way (timed, reported,
checked); a step only writes its files into the staged bundle and says what it wrote."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hamnet_deploy.runtime.events import Reporter


@dataclass
class StepResult:
    """What a step wrote: bundle files (names in the stage), a parity report to show and
    enforce (when `enforced`), and a one-line summary."""

    files: list[str] = field(default_factory=list)
    report: Any = None
    summary: str = ""


@dataclass
class ExportContext:
    """The state an export's steps share."""

    loaded: Any  # training.checkpoint.LoadedModel; None when a bundle is updated
    options: Any  # export.options.ExportOptions
    stage: Any  # export.bundle_writer.BundleStage or .BundleUpdate (None once committed)
    report: Reporter | None = None
    source: Any = None  # runtime.bundle.Bundle being updated (hamnet export BUNDLE ...)
    models: dict[str, Any] = field(default_factory=dict)  # kind -> runtime.manifest.ModelFile
    engines: tuple = ()
    errors: dict[str, str] = field(default_factory=dict)  # optional formats that failed: key -> why
    bundle: Any = None  # runtime.bundle.Bundle, after the commit
    triton: list[Path] = field(default_factory=list)

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def feature_dim(self) -> int:
        return int(self.loaded.model.feature_dim if self.loaded is not None else self.source.feature_dim)

    @property
    def train_subset(self) -> str | None:
        """The training split's name (what calibration prefers), when known."""
        if self.loaded is not None:
            return self.loaded.config.data.train_subset
        return (self.source.manifest.config.get("data") or {}).get("train_subset")

    @property
    def onnx_path(self) -> Path:
        """The FP32 ONNX model the other formats are made from."""
        return self.stage.file("model.onnx") if self.source is None else self.source.model_path("onnx")


def onnx_step(ctx: ExportContext) -> StepResult:
    """model.onnx: TorchScript export, onnxslim, onnx.checker; then ONNX Runtime against
    PyTorch over the parity grid (enforced)."""
    from hamnet_deploy.export.onnx_export import export_onnx
    from hamnet_deploy.export.parity import check_onnx_parity

    o, model = ctx.options, ctx.model
    path = ctx.stage.file("model.onnx")
    info = export_onnx(model, path, classes=ctx.loaded.classes,
                       snippet_seconds=float(ctx.loaded.postprocess.snippet_seconds), opset=o.opset)
    report = check_onnx_parity(model, path, skip_long=o.skip_parity_long)
    ctx.models["onnx"] = ctx.stage.model_entry(
        "model.onnx", opset=o.opset, precision="fp32", inputs=info.inputs, outputs=info.outputs,
        extra={"simplified": info.simplified, "parity": parity_record(report)})
    notes = "; ".join(info.notes)
    summary = (f"opset {o.opset}{', simplified (onnxslim)' if info.simplified else ''}, onnx.checker full check "
               "passed" + (f"; note: {notes}" if notes else ""))
    return StepResult(["model.onnx"], report, summary)


def int8_cpu_step(ctx: ExportContext) -> StepResult:
    """model.int8.onnx: static INT8 (QDQ) calibrated on the train split; compared with
    FP32 and reported (judge INT8 by mAP: --verify)."""
    from hamnet_deploy.export.calibration import calibration_features
    from hamnet_deploy.export.int8_cpu import (
        MAX_CALIB_SNIPPETS,
        quantize_int8_cpu,
        require_quantization,
    )

    require_quantization()  # onnxruntime.quantization and onnx, or BackendUnavailable
    import onnx

    from hamnet_deploy.export.onnx_graph import graph_io, model_opset
    from hamnet_deploy.export.parity import compare
    from hamnet_deploy.runtime.backends.onnxruntime import OnnxRuntimeRunner

    o, stage = ctx.options, ctx.stage
    feats = calibration_features(o.calib, o.calib_videos, subset=ctx.train_subset, feature_dim=ctx.feature_dim,
                                 max_snippets=MAX_CALIB_SNIPPETS)
    fp32 = ctx.onnx_path
    res = quantize_int8_cpu(fp32, stage.file("model.int8.onnx"), feats)
    q_in, q_out = graph_io(onnx.load(str(res.path)))
    named = [(f"calib video {i} (T {len(x)})", x[None]) for i, x in enumerate(feats[:4])]
    report = compare(OnnxRuntimeRunner(fp32), OnnxRuntimeRunner(res.path), [(1, 1), (1, 37), (1, 339)],
                     feature_dim=ctx.feature_dim, name="ONNX Runtime INT8 vs FP32 (reported, not enforced)",
                     atol=0.0, rtol=0.1, inputs=named, enforced=False)
    ctx.models["onnx_int8"] = stage.model_entry(
        "model.int8.onnx", opset=model_opset(onnx.load(str(res.path))), precision="int8", inputs=q_in,
        outputs=q_out, extra={"quantization": {**res.settings, "calib_videos": res.calib_videos,
                                               "calib_data": str(o.calib)},
                              "parity_vs_fp32": parity_record(report)})
    summary = (f"calibrated on {res.calib_videos} videos ({res.calib_snippets} snippets), "
               f"{len(res.float_nodes)} nodes kept in float")
    return StepResult(["model.int8.onnx"], report, summary)


def tensorrt_step(ctx: ExportContext) -> StepResult:
    """TensorRT engines built on this machine's GPU (optional: a failure leaves the
    bundle without engines, and the command says why)."""
    from hamnet_deploy.export.tensorrt_build import build_engines

    stage = ctx.stage
    raw = build_engines(ctx.onnx_path, stage.path, ctx.options.trt)
    ctx.engines = stage.engine_entries(raw)
    return StepResult([e.file for e in ctx.engines], None,
                      f"{len(ctx.engines)} engine(s) built ({ctx.options.trt.precision})")


def triton_step(ctx: ExportContext) -> StepResult:
    """A Triton model repository from the committed bundle."""
    from hamnet_deploy.export.triton import write_triton_repository

    o = ctx.options
    ctx.triton = write_triton_repository(ctx.bundle, o.triton, max_batch=o.triton_max_batch, force=o.force,
                                         ensemble=o.triton_ensemble)
    return StepResult([], None, "models " + ", ".join(str(f) for f in ctx.triton))


def parity_record(report: Any) -> dict[str, Any]:
    """What the manifest keeps of a parity report."""
    cas, att = report.worst("cas"), report.worst("attention")
    return {"cases": len({r.case for r in report.rows}), "ok": report.ok, "enforced": report.enforced,
            "cas_max_abs": cas[0], "cas_max_rel": cas[1], "attention_max_abs": att[0],
            "attention_max_rel": att[1]}
