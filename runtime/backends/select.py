"""Which runner runs a model here, and why.

`select_runner(model, backend="auto")` returns an *active* runner plus a one-line reason.
`auto` tries, in order, and takes the first that starts:

1. a TensorRT engine of the bundle that matches this GPU and this TensorRT version
   (`runtime.trt_compat.choose_engine`: exact match first, FP16 > INT8 > FP32);
2. ONNX Runtime with the CUDA provider (onnxruntime-gpu and a visible GPU);
3. ONNX Runtime on the CPU (the FP32 model; INT8 only when asked: judge it by mAP first).

A training checkpoint given as the model runs with PyTorch (the only case where torch
is imported without being asked for). Explicit choices: `tensorrt`, `onnxruntime`
(`device` cpu, cuda, tensorrt = ONNX Runtime's TensorRT provider, or auto),
`onnxruntime-int8` (the bundle's static INT8 CPU model) and `torch` (a checkpoint, or
the checkpoint a bundle was exported from). An explicit choice that cannot start is an
error naming what is missing; `auto` notes it and moves on. `device` narrows `auto`:
`cpu` = ONNX Runtime CPU only, `cuda` = steps 1-2 only (no CPU fallback), `tensorrt` =
ONNX Runtime's TensorRT execution provider.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hamnet_deploy.runtime.bundle import Bundle, load_bundle
from hamnet_deploy.runtime.errors import BackendUnavailable, BundleError, ConfigError, HamnetError
from hamnet_deploy.runtime.manifest import MANIFEST, ONNX, ONNX_INT8
from hamnet_deploy.runtime.postprocess import PostprocessConfig

BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime-int8", "torch")
DEVICES = ("auto", "cpu", "cuda", "tensorrt")
ENV_MODEL = "HAMNET_MODEL"
DEFAULT_MODEL = "bundle"
EXPORT_HINT = "make one with `hamnet export RUN --out bundle` (RUN: a folder from hamnet train)"


@dataclass(frozen=True)
class ModelInfo:
    """What detection needs to know about a model, from a bundle manifest or a checkpoint."""

    path: Path
    kind: str  # "bundle" or "checkpoint"
    classes: list[str]
    feature_dim: int
    receptive_radius: int
    snippet_seconds: float
    postprocess: PostprocessConfig
    bundle: Bundle | None = None

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> ModelInfo:
        return cls(bundle.path, "bundle", bundle.classes, bundle.feature_dim, bundle.receptive_radius,
                   bundle.snippet_seconds, bundle.postprocess, bundle)

    @classmethod
    def from_torch(cls, runner: Any) -> ModelInfo:
        return cls(runner.checkpoint, "checkpoint", list(runner.classes), int(runner.input_dim),
                   int(runner.receptive_radius), float(runner.snippet_seconds), runner.postprocess)


@dataclass
class Selection:
    """An active runner, the backend name, why it was chosen and what was skipped."""

    runner: Any
    backend: str
    reason: str
    info: ModelInfo
    skipped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        what = self.runner.describe() if hasattr(self.runner, "describe") else repr(self.runner)
        return f"{self.backend}: {what}"


# --------------------------------------------------------------------------- #
#                                 the model                                   #
# --------------------------------------------------------------------------- #
def default_model_path(environ: Mapping[str, str] | None = None) -> Path:
    """$HAMNET_MODEL when set, else ./bundle."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_MODEL, "").strip()
    return Path(value) if value else Path(DEFAULT_MODEL)


def resolve_model(path: str | os.PathLike | None, environ: Mapping[str, str] | None = None) -> Path:
    """The model to use: `path`, else $HAMNET_MODEL, else ./bundle; BundleError with the fix
    when there is nothing there."""
    if path is not None:
        chosen = Path(path)
        if not chosen.exists():
            raise BundleError(f"--model {chosen}: not found; pass a bundle folder ({EXPORT_HINT})")
        return chosen
    chosen = default_model_path(environ)
    env = os.environ if environ is None else environ
    source = f"${ENV_MODEL}" if env.get(ENV_MODEL, "").strip() else "the default ./bundle"
    if not chosen.exists():
        raise BundleError(f"no model at {chosen} ({source}): pass --model BUNDLE or set ${ENV_MODEL}, or "
                          f"{EXPORT_HINT}")
    return chosen


def is_checkpoint(path: str | os.PathLike) -> bool:
    """A training run folder or one of its checkpoints/epoch-N folders (not a bundle)."""
    p = Path(path)
    return p.is_dir() and not (p / MANIFEST).is_file() and (
        (p / "latest.json").is_file() or (p / "state.json").is_file())


def _checkpoint_of(bundle: Bundle) -> Path:
    raw = bundle.manifest.source.get("checkpoint")
    if raw and Path(raw).exists():
        return Path(raw)
    raise ConfigError(f"--backend torch needs a checkpoint: {bundle.path}'s source checkpoint "
                      f"{raw or '(not recorded)'} is not here; pass --model RUN (a folder from hamnet train)")


# --------------------------------------------------------------------------- #
#                                 candidates                                  #
# --------------------------------------------------------------------------- #
@dataclass
class _Candidate:
    backend: str
    reason: str
    make: Callable[[], Any]


def _tensorrt_candidate(bundle: Bundle, verify: bool) -> _Candidate:
    """The best matching engine, or BackendUnavailable/BundleError saying why there is none."""
    from hamnet_deploy.runtime.devices import cuda_devices, installed_tensorrt
    from hamnet_deploy.runtime.trt_compat import choose_engine, engine_compatibility, sm_name

    if not bundle.engines:
        raise BundleError(f"no TensorRT engine in {bundle.path} (build one on this machine with "
                          "hamnet export RUN --trt)")
    version = installed_tensorrt()
    if version is None:
        raise BackendUnavailable("TensorRT is not installed (pip install 'hamnet-deploy[trt]'; Jetson: "
                                 "JetPack's python3-libnvinfer)")
    gpus = cuda_devices()
    if not gpus:
        raise BackendUnavailable("no CUDA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)")
    gpu = gpus[0]
    entry = choose_engine(bundle.engines, version, gpu["name"], gpu["compute_capability"])
    if entry is None:
        _, why = engine_compatibility(bundle.engines[0], version, gpu["name"], gpu["compute_capability"])
        more = f" (and {len(bundle.engines) - 1} more engines)" if len(bundle.engines) > 1 else ""
        raise BundleError(f"no engine of {bundle.path} runs here{more}: {why}")

    def make() -> Any:
        from hamnet_deploy.runtime.backends.tensorrt import TensorRTRunner

        return TensorRTRunner(bundle.engine_path(entry), entry, verify=verify)

    reason = (f"engine {entry.file} ({entry.precision}) matches {gpu['name']} "
              f"({sm_name(gpu['compute_capability'])}) and TensorRT {version}")
    return _Candidate("tensorrt", reason, make)


def _ort_candidate(bundle: Bundle, kind: str, device: str, threads: int | None, trt: Any,
                   verify: bool) -> _Candidate:
    from hamnet_deploy.runtime.backends.onnxruntime import (
        CUDA,
        TRT,
        OnnxRuntimeRunner,
        available_providers,
    )

    entry = bundle.model(kind)
    available = available_providers()
    if not available:
        raise BackendUnavailable("ONNX Runtime is not installed (pip install onnxruntime)")
    if device == "cuda" and CUDA not in available:
        raise BackendUnavailable("onnxruntime has no CUDAExecutionProvider (it is the CPU build; "
                                 "pip install onnxruntime-gpu)")
    if device == "tensorrt" and TRT not in available:
        raise BackendUnavailable("onnxruntime has no TensorrtExecutionProvider (pip install onnxruntime-gpu "
                                 "and TensorRT)")
    name = "onnxruntime-int8" if kind == ONNX_INT8 else "onnxruntime"
    label = {"cpu": "CPU", "cuda": "CUDA", "tensorrt": "TensorRT provider"}[device]

    def make() -> Any:
        return OnnxRuntimeRunner(bundle.model_path(kind), entry, device=device, threads=threads, trt=trt,
                                 feature_dim=bundle.feature_dim, verify=verify)

    return _Candidate(name, f"ONNX Runtime {label}, {entry.file} ({entry.precision})", make)


def _ort_cuda_usable() -> str | None:
    """None when ONNX Runtime's CUDA provider can be tried here, else why not."""
    from hamnet_deploy.runtime.backends.onnxruntime import CUDA, available_providers
    from hamnet_deploy.runtime.devices import cuda_devices

    available = available_providers()
    if not available:
        return "ONNX Runtime is not installed"
    if CUDA not in available:
        return "onnxruntime has no CUDAExecutionProvider (CPU build)"
    if not cuda_devices():
        return "no CUDA GPU is visible"
    return None


def _torch_candidate(checkpoint: Path, device: str, threads: int | None, reason: str) -> _Candidate:
    if device == "tensorrt":
        raise ConfigError("--device tensorrt is for ONNX Runtime; PyTorch runs on auto, cpu or cuda")

    def make() -> Any:
        from hamnet_deploy.runtime.backends.torch_backend import TorchRunner

        return TorchRunner(checkpoint, device=device, threads=threads)

    return _Candidate("torch", reason, make)


# --------------------------------------------------------------------------- #
#                                  selection                                  #
# --------------------------------------------------------------------------- #
def _start(candidate: _Candidate) -> Any:
    runner = candidate.make()
    runner.activate()
    return runner


def _finish(candidate: _Candidate, runner: Any, bundle: Bundle | None, skipped: list[str]) -> Selection:
    if candidate.backend == "torch":
        info = ModelInfo.from_torch(runner)
        if bundle is not None and list(bundle.classes) != info.classes:
            runner.deactivate()
            raise BundleError(f"{bundle.path}: its classes differ from its source checkpoint's; pass the "
                              "checkpoint itself with --model")
        if bundle is not None:  # the bundle's (possibly edited) post-processing settings win
            info = ModelInfo(info.path, info.kind, info.classes, info.feature_dim, info.receptive_radius,
                             info.snippet_seconds, bundle.postprocess, bundle)
    else:
        assert bundle is not None
        info = ModelInfo.from_bundle(bundle)
    reason = candidate.reason
    if skipped:
        reason += " (" + "; ".join(skipped) + ")"
    return Selection(runner, candidate.backend, reason, info, skipped)


def select_runner(model: str | os.PathLike, backend: str = "auto", device: str = "auto", *,
                  threads: int | None = None, ort_trt: Any = None, verify: bool = True) -> Selection:
    """Open `model` (a bundle folder, or a training checkpoint for PyTorch) and start a runner.

    Args:
        backend: one of BACKENDS; `auto` as in the module docstring.
        device: auto, cpu, cuda, or tensorrt (ONNX Runtime's TensorRT provider). `cpu`
            keeps `auto` off the GPU.
        threads: CPU threads (ONNX Runtime intra-op, PyTorch).
        ort_trt: `OrtTensorRTOptions` for device tensorrt.
        verify: check the bundle's checksums once (runners then skip their own check).

    Returns a Selection whose runner is active; use it as `with selection.runner:` to
    release it.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise ConfigError(f"--device {device!r}: choose one of {', '.join(DEVICES)}")
    model = Path(model)
    if is_checkpoint(model):
        if backend not in ("auto", "torch"):
            raise ConfigError(f"--model {model} is a training checkpoint: --backend {backend} runs an exported "
                              f"bundle; make one with hamnet export {model} --out bundle, or use --backend torch")
        why = "the model is a training checkpoint" if backend == "auto" else "asked for"
        candidate = _torch_candidate(model, device, threads, f"PyTorch ({why})")
        return _finish(candidate, _start(candidate), None, [])
    bundle = load_bundle(model, verify=verify)
    if backend == "torch":
        candidate = _torch_candidate(_checkpoint_of(bundle), device, threads, "PyTorch (asked for)")
        return _finish(candidate, _start(candidate), bundle, [])
    if backend == "tensorrt":
        if device not in ("auto", "cuda"):
            raise ConfigError(f"--backend tensorrt runs on the GPU; drop --device {device}")
        candidate = _tensorrt_candidate(bundle, verify=False)
        return _finish(candidate, _start(candidate), bundle, [])
    if backend in ("onnxruntime", "onnxruntime-int8"):
        kind = ONNX_INT8 if backend == "onnxruntime-int8" else ONNX
        bundle.model(kind)  # BundleError naming the export option when absent
        chosen = device
        if device == "auto":
            chosen = "cuda" if backend == "onnxruntime" and _ort_cuda_usable() is None else "cpu"
        candidate = _ort_candidate(bundle, kind, chosen, threads, ort_trt, verify=False)
        return _finish(candidate, _start(candidate), bundle, [])
    return _auto(bundle, device, threads, ort_trt)


def _auto(bundle: Bundle, device: str, threads: int | None, ort_trt: Any) -> Selection:
    def ort_cuda() -> _Candidate:
        why = _ort_cuda_usable()
        if why is not None:
            raise BackendUnavailable(why)
        return _ort_candidate(bundle, ONNX, "cuda", threads, ort_trt, False)

    plans: list[tuple[str, Callable[[], _Candidate]]] = []
    if device == "tensorrt":
        plans.append(("ONNX Runtime TensorRT provider",
                      lambda: _ort_candidate(bundle, ONNX, "tensorrt", threads, ort_trt, False)))
    if device in ("auto", "cuda"):
        plans.append(("TensorRT", lambda: _tensorrt_candidate(bundle, verify=False)))
        plans.append(("ONNX Runtime CUDA", ort_cuda))
    if device in ("auto", "cpu"):
        plans.append(("ONNX Runtime CPU", lambda: _ort_candidate(bundle, ONNX, "cpu", threads, ort_trt, False)))
    skipped: list[str] = []
    last_error: HamnetError | None = None
    for label, plan in plans:
        try:
            candidate = plan()
            runner = _start(candidate)
        except HamnetError as exc:
            skipped.append(f"not {label}: {_short(str(exc))}")
            last_error = exc
            continue
        return _finish(candidate, runner, bundle, skipped)
    raise BackendUnavailable(f"no backend can run {bundle.path} here (--device {device}): "
                             + "; ".join(skipped)) from last_error


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

