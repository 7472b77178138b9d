"""Triton Inference Server model repository from a bundle (`hamnet export --triton DIR`).

    DIR/hamnet/config.pbtxt          platform onnxruntime_onnx
    DIR/hamnet/1/model.onnx
    DIR/hamnet/labels.txt            class names + "background" (label file of `cas`)
    DIR/hamnet/hamnet_manifest.json  the bundle manifest (post-processing settings)
    DIR/hamnet_int8/...              the INT8 CPU model, when the bundle has one
    DIR/hamnet_trt/config.pbtxt      platform tensorrt_plan, when the bundle has a GPU engine
    DIR/hamnet_trt/1/model.plan

Tensors: `features` [-1, D] in, `cas` [-1, C+1] and `attention` [-1, 1] out, with
`max_batch_size` (the batch dimension is implicit in Triton configs). Triton batches
only requests of the same T; the post-processing runs on the client (the runtime's
NumPy code with the manifest's settings). A TensorRT plan loads only in a Triton whose
TensorRT version and GPU match the engine's (recorded in the manifest).

Each model folder is built beside its final place and renamed in; existing model
folders of these names are replaced only with `force`. Other models in DIR are left
alone.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hamnet_deploy.runtime.bundle import Bundle
from hamnet_deploy.runtime.errors import BundleError
from hamnet_deploy.runtime.fileio import staging
from hamnet_deploy.runtime.manifest import ONNX, ONNX_INT8, EngineEntry
from hamnet_deploy.runtime.trt_compat import precision_rank

MODEL_NAME = "hamnet"
LABELS_FILE = "labels.txt"
MANIFEST_COPY = "hamnet_manifest.json"


@dataclass(frozen=True)
class TritonModel:
    """One model folder of the repository."""

    name: str
    platform: str
    source: Path
    filename: str
    max_batch_size: int
    kind: str


def _tensor(name: str, dims: Sequence[int], label_file: str | None = None) -> str:
    label = f'\n    label_filename: "{label_file}"' if label_file else ""
    return (f'  {{\n    name: "{name}"\n    data_type: TYPE_FP32\n    dims: [ {", ".join(map(str, dims))} ]'
            f"{label}\n  }}")


def config_pbtxt(name: str, platform: str, feature_dim: int, num_classes: int, max_batch_size: int,
                 filename: str, gpu: bool | None = None) -> str:
    """Text of a Triton `config.pbtxt` for the HAM-Net graph (T dynamic: -1)."""
    if max_batch_size < 1:
        raise BundleError(f"Triton max_batch_size {max_batch_size}: must be >= 1")
    lines = [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {int(max_batch_size)}",
        f'default_model_filename: "{filename}"',
        "input [\n" + _tensor("features", [-1, feature_dim]) + "\n]",
        "output [\n" + ",\n".join([_tensor("cas", [-1, num_classes + 1], LABELS_FILE),
                                  _tensor("attention", [-1, 1])]) + "\n]",
    ]
    if gpu is not None:
        kind = "KIND_GPU" if gpu else "KIND_CPU"
        lines.append(f"instance_group [\n  {{\n    count: 1\n    kind: {kind}\n  }}\n]")
    return "\n".join(lines) + "\n"


def pick_engine(engines: Sequence[EngineEntry]) -> EngineEntry | None:
    """The engine for Triton: a GPU engine (not DLA), in the runtime's precision order
    (`runtime.trt_compat.PRECISION_PREFERENCE`)."""
    gpu = [e for e in engines if e.dla_core is None]
    return min(gpu, key=lambda e: precision_rank(e.precision)) if gpu else None


def plan_models(bundle: Bundle, max_batch: int = 4) -> list[TritonModel]:
    """The model folders to write for `bundle`."""
    models = [TritonModel(MODEL_NAME, "onnxruntime_onnx", bundle.model_path(ONNX), "model.onnx",
                          max_batch, ONNX)]
    if bundle.has(ONNX_INT8):
        models.append(TritonModel(f"{MODEL_NAME}_int8", "onnxruntime_onnx", bundle.model_path(ONNX_INT8),
                                  "model.onnx", max_batch, ONNX_INT8))
    engine = pick_engine(bundle.engines)
    if engine is not None:
        models.append(TritonModel(f"{MODEL_NAME}_trt", "tensorrt_plan", bundle.engine_path(engine),
                                  "model.plan", engine.profile.max_batch, "tensorrt"))
    return models


def _not_ours(folder: Path, model: TritonModel) -> list[str]:
    """Files and folders under `folder` other than those this writer makes for `model`."""
    ours = {"1", f"1/{model.filename}", "config.pbtxt", LABELS_FILE, MANIFEST_COPY}
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.relative_to(folder).as_posix() not in ours)


def write_triton_repository(bundle: Bundle, out_dir: str | os.PathLike, *, max_batch: int = 4,
                            force: bool = False) -> list[Path]:
    """Write the model folders of `bundle` into the repository `out_dir`; returns them."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out}: exists and is not a folder; choose another --triton folder")
    models = plan_models(bundle, max_batch)
    for m in models:
        final = out / m.name
        if final.exists() and not force:
            raise BundleError(f"{final}: a Triton model of that name exists; pass --force to replace it "
                              "or choose another --triton folder")
        if final.exists() and not (final / "config.pbtxt").is_file():
            raise BundleError(f"{final}: exists and is not a Triton model folder (no config.pbtxt); it is "
                              "never deleted: choose another --triton folder")
        foreign = _not_ours(final, m) if final.exists() else []
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise BundleError(f"{final}: holds files hamnet export did not write ({shown}); they are never "
                              "deleted: move them away or choose another --triton folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(f"cannot create {out}: {exc.strerror}; choose a writable --triton folder") from exc
    labels = "\n".join([*bundle.classes, "background"]) + "\n"
    manifest = json.dumps(bundle.manifest.to_dict(), indent=1) + "\n"
    written = []
    for m in models:
        final = out / m.name
        with staging(final, replace=True) as tmp:
            (tmp / "1").mkdir()
            shutil.copyfile(m.source, tmp / "1" / m.filename)
            gpu = True if m.kind == "tensorrt" else None
            (tmp / "config.pbtxt").write_text(config_pbtxt(
                m.name, m.platform, bundle.feature_dim, bundle.num_classes, m.max_batch_size,
                m.filename, gpu))
            (tmp / LABELS_FILE).write_text(labels)
            (tmp / MANIFEST_COPY).write_text(manifest)
        written.append(final)
    return written
