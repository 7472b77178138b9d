"""Triton Inference Server model repository from a bundle (`hamnet export --triton DIR`).

    DIR/hamnet/config.pbtxt          platform onnxruntime_onnx
    DIR/hamnet/1/model.onnx
    DIR/hamnet/labels.txt            class names + "background" (label file of `cas`)
    DIR/hamnet/hamnet_manifest.json  the bundle manifest (post-processing settings)
    DIR/hamnet_int8/...              the INT8 CPU model, when the bundle has one
    DIR/hamnet_trt/config.pbtxt      platform tensorrt_plan, when the bundle has a GPU engine
    DIR/hamnet_trt/1/model.plan

Tensors: `features` [-1, D] in, `cas` [-1, C+1] and `attention` [-1, 1] out, with
`max_batch_size` (the batch dimension is implicit in Triton configs) and dynamic
batching (Triton batches requests of the same T). The post-processing runs on the
client (the runtime's NumPy code with the manifest's settings), or in Triton with
`ensemble=True` (`export.triton_ensemble`: `hamnet_detect`, features in, detections
out). A TensorRT plan loads only in a Triton whose
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
from dataclasses import dataclass, field
from pathlib import Path

from hamnet_deploy.runtime.bundle import Bundle
from hamnet_deploy.runtime.errors import BundleError
from hamnet_deploy.runtime.fileio import staging
from hamnet_deploy.runtime.manifest import ONNX, ONNX_INT8, EngineEntry
from hamnet_deploy.runtime.trt_compat import precision_rank

MODEL_NAME = "hamnet"
LABELS_FILE = "labels.txt"
MANIFEST_COPY = "hamnet_manifest.json"
QUEUE_DELAY_US = 500
"""Dynamic batching: how long a request waits for others of the same T (microseconds)."""


@dataclass(frozen=True)
class TritonModel:
    """One model folder of the repository: its config and files (relative path -> source
    file or text)."""

    name: str
    config: str
    files: dict[str, Path | str] = field(default_factory=dict)
    with_labels: bool = True  # labels.txt and the manifest copy beside config.pbtxt


def tensor(name: str, dims: Sequence[int], data_type: str = "TYPE_FP32", label_file: str | None = None,
           optional: bool = False) -> str:
    """One `input`/`output` entry of a config.pbtxt."""
    extra = f'\n    label_filename: "{label_file}"' if label_file else ""
    extra += "\n    optional: true" if optional else ""
    return (f'  {{\n    name: "{name}"\n    data_type: {data_type}\n    dims: [ {", ".join(map(str, dims))} ]'
            f"{extra}\n  }}")


def config_lines(lines: Sequence[str]) -> str:
    return "\n".join(lines) + "\n"


def config_pbtxt(name: str, platform: str, feature_dim: int, num_classes: int, max_batch_size: int,
                 filename: str, gpu: bool | None = None, queue_delay_us: int = QUEUE_DELAY_US) -> str:
    """Text of a Triton `config.pbtxt` for the HAM-Net graph (T dynamic: -1), with
    dynamic batching (requests of the same T are batched, waiting at most
    `queue_delay_us` for company)."""
    if max_batch_size < 1:
        raise BundleError(f"Triton max_batch_size {max_batch_size}: must be >= 1")
    lines = [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {int(max_batch_size)}",
        f'default_model_filename: "{filename}"',
        "input [\n" + tensor("features", [-1, feature_dim]) + "\n]",
        "output [\n" + ",\n".join([tensor("cas", [-1, num_classes + 1], label_file=LABELS_FILE),
                                    tensor("attention", [-1, 1])]) + "\n]",
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {int(queue_delay_us)}\n}}",
    ]
    if gpu is not None:
        kind = "KIND_GPU" if gpu else "KIND_CPU"
        lines.append(f"instance_group [\n  {{\n    count: 1\n    kind: {kind}\n  }}\n]")
    return config_lines(lines)


def pick_engine(engines: Sequence[EngineEntry]) -> EngineEntry | None:
    """The engine for Triton: a GPU engine (not DLA), in the runtime's precision order
    (`runtime.trt_compat.PRECISION_PREFERENCE`)."""
    gpu = [e for e in engines if e.dla_core is None]
    return min(gpu, key=lambda e: precision_rank(e.precision)) if gpu else None


def plan_models(bundle: Bundle, max_batch: int = 4, ensemble: bool = False) -> list[TritonModel]:
    """The model folders to write for `bundle` (with `ensemble`: also the
    post-processing model and the features -> detections ensemble)."""
    d, c = bundle.feature_dim, bundle.num_classes
    models = [TritonModel(MODEL_NAME, config_pbtxt(MODEL_NAME, "onnxruntime_onnx", d, c, max_batch, "model.onnx"),
                          {"1/model.onnx": bundle.model_path(ONNX)})]
    if bundle.has(ONNX_INT8):
        name = f"{MODEL_NAME}_int8"
        models.append(TritonModel(name, config_pbtxt(name, "onnxruntime_onnx", d, c, max_batch, "model.onnx"),
                                  {"1/model.onnx": bundle.model_path(ONNX_INT8)}))
    engine = pick_engine(bundle.engines)
    if engine is not None:
        name = f"{MODEL_NAME}_trt"
        models.append(TritonModel(name, config_pbtxt(name, "tensorrt_plan", d, c, engine.profile.max_batch,
                                                     "model.plan", gpu=True),
                                  {"1/model.plan": bundle.engine_path(engine)}))
    if ensemble:
        from hamnet_deploy.export import triton_ensemble as te

        files: dict[str, Path | str] = {"1/model.py": te.POST_SOURCE, "1/hamnet_deploy/__init__.py": te.PACKAGE_INIT}
        files.update({f"1/{k}": v for k, v in te.runtime_files().items()})
        models.append(TritonModel(te.POST_NAME, te.post_config(c), files))
        models.append(TritonModel(te.ENSEMBLE_NAME, te.ensemble_config(d, c), {"1/.keep": ""}, with_labels=False))
    return models


def _ours(model: TritonModel) -> set[str]:
    """Relative paths this writer makes in `model`'s folder (files and their folders)."""
    paths = {"config.pbtxt", *model.files}
    if model.with_labels:
        paths |= {LABELS_FILE, MANIFEST_COPY}
    for name in list(paths):
        parts = name.split("/")
        paths |= {"/".join(parts[:i]) for i in range(1, len(parts))}
    return paths


def _not_ours(folder: Path, model: TritonModel) -> list[str]:
    """Files and folders under `folder` other than those this writer makes for `model`
    (Python's `__pycache__` of the files it wrote counts as its own)."""
    ours = _ours(model)
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).as_posix()
        if rel not in ours and "__pycache__" not in rel.split("/"):
            found.append(rel)
    return sorted(found)


def write_triton_repository(bundle: Bundle, out_dir: str | os.PathLike, *, max_batch: int = 4,
                            force: bool = False, ensemble: bool = False) -> list[Path]:
    """Write the model folders of `bundle` into the repository `out_dir`; returns them."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out}: exists and is not a folder; choose another --triton folder")
    models = plan_models(bundle, max_batch, ensemble)
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
            for rel, source in m.files.items():
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(source, Path):
                    shutil.copyfile(source, target)
                else:
                    target.write_text(source)
            (tmp / "config.pbtxt").write_text(m.config)
            if m.with_labels:
                (tmp / LABELS_FILE).write_text(labels)
                (tmp / MANIFEST_COPY).write_text(manifest)
        written.append(final)
    return written
