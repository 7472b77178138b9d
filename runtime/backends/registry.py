"""The one table of inference backends. `--backend auto`, the CLI's `--backend` choices,
`hamnet doctor` and `hamnet bench` all read it, so a new backend is one `Backend` row.

| backend | model file | devices | auto |
| --- | --- | --- | --- |
| tensorrt | a TensorRT engine of the bundle | cuda | 1st: an engine built for this GPU and TensorRT |
| onnxruntime | model.onnx | cuda, cpu | 2nd on cuda, 3rd on cpu |
| onnxruntime-int8 | model.int8.onnx | cpu | before FP32 on cpu, when --verify kept its mAP within --max-drop |
| onnxruntime-tensorrt | model.onnx (ONNX Runtime's TensorRT provider) | cuda | - |
| torch | a training checkpoint | cpu, cuda, mps | the only backend of a checkpoint |

A row says where it runs (`probe(env, device)` raises BackendUnavailable when this
machine lacks it, judged from an `Environment` snapshot) and how to make its runner
(`create(model, device, options, env)` returns an inactive runner and the reason line,
or raises BundleError when the bundle lacks what it needs). `torch` lives on the training
side and registers itself through the `hamnet_deploy.backends` entry point; the runtime
imports nothing of it.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hamnet_deploy.runtime.backends.base import BaseRunner
from hamnet_deploy.runtime.environment import Environment
from hamnet_deploy.runtime.errors import BackendUnavailable, BundleError, ConfigError, HamnetError

ENTRY_POINTS = "hamnet_deploy.backends"
CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
ORT_MISSING = "ONNX Runtime is not installed (pip install onnxruntime)"
NO_GPU = "no CUDA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"


@dataclass(frozen=True)
class RunOptions:
    """What every factory may use: CPU threads, ONNX Runtime TensorRT provider options
    (`OrtTensorRTOptions`), and whether runners check checksums again."""

    threads: int | None = None
    ort_trt: Any = None
    verify: bool = False
    gpu: int | None = None
    """The CUDA GPU to run on (`--device cuda:N`); None: the first visible one."""


@dataclass(frozen=True)
class Backend:
    """One row of the table (see the module docstring)."""

    name: str
    model: str
    """The model file it runs: "onnx", "onnx_int8", "engine" or "checkpoint"."""
    devices: tuple[str, ...]
    probe: Callable[[Environment, str], None]
    create: Callable[[Any, str, RunOptions, Environment], tuple[BaseRunner, str] | BaseRunner]
    summary: str = ""
    auto: tuple[tuple[str, int], ...] = ()
    """(device, rank) pairs `--backend auto` tries, lowest rank first."""
    details: Callable[[Environment], str] | None = field(default=None, compare=False)
    """Optional extra line for `hamnet doctor` (may import the backend's library)."""
    auto_if: Callable[[Any], tuple[bool, str]] | None = field(default=None, compare=False)
    """For `--backend auto` only: whether this bundle qualifies, and why (e.g. INT8 that
    passed the accuracy guard); None: always."""

    def offered(self, bundle: Any) -> bool:
        """Whether `auto` considers this row for `bundle` at all (a model file it lacks
        other than model.onnx and engines is not worth a line: it was never exported)."""
        return self.model not in ("onnx_int8",) or bundle.has(self.model)

    def why_not(self, env: Environment, device: str | None = None) -> str | None:
        """None when it can run here (on `device`, or on any of its devices), else why not."""
        last = None
        for dev in [device] if device else self.devices:
            try:
                self.probe(env, dev)
                return None
            except HamnetError as exc:
                last = str(exc)
        return last

    def make(self, model: Any, device: str, options: RunOptions, env: Environment) -> tuple[BaseRunner, str]:
        """An inactive runner for `model` on `device` and the reason line. Checks what the
        model holds first (BundleError naming the export option), then the machine
        (BackendUnavailable)."""
        if self.model == "engine" and not model.engines:
            raise BundleError(f"no TensorRT engine in {model.path} (build one on this machine with "
                              "hamnet export RUN --trt)")
        if self.model in ("onnx", "onnx_int8"):
            model.model(self.model)  # BundleError naming the option that adds it
        self.probe(env, device)
        made = self.create(model, device, options, env)
        return made if isinstance(made, tuple) else (made, self.summary or self.name)


# --------------------------------------------------------------------------- #
#                               the built-in rows                             #
# --------------------------------------------------------------------------- #
def _probe_tensorrt(env: Environment, device: str) -> None:
    if env.tensorrt is None:
        raise BackendUnavailable("TensorRT is not installed (pip install 'hamnet-deploy[trt]'; Jetson: "
                                 "JetPack's python3-libnvinfer)")
    if not env.gpus:
        raise BackendUnavailable(NO_GPU)
    problem = env.tensorrt_driver_problem()
    if problem:
        raise BackendUnavailable(problem)


def _create_tensorrt(bundle: Any, device: str, options: RunOptions, env: Environment) -> tuple[BaseRunner, str]:
    from hamnet_deploy.runtime.backends.tensorrt import TensorRTRunner
    from hamnet_deploy.runtime.trt_compat import choose_engine, engine_compatibility, sm_name

    gpu = env.gpus[0]
    entry = choose_engine(bundle.engines, env.tensorrt, gpu["name"], gpu["compute_capability"])
    if entry is None:
        _, why = engine_compatibility(bundle.engines[0], env.tensorrt, gpu["name"], gpu["compute_capability"])
        more = f" (and {len(bundle.engines) - 1} more engines)" if len(bundle.engines) > 1 else ""
        raise BundleError(f"no engine of {bundle.path} runs here{more}: {why}")
    reason = (f"engine {entry.file} ({entry.precision}) matches {gpu['name']} "
              f"({sm_name(gpu['compute_capability'])}) and TensorRT {env.tensorrt}")
    if options.gpu not in (None, 0):
        raise BackendUnavailable(f"the TensorRT backend runs on the first visible GPU; for GPU {options.gpu} set "
                                 f"CUDA_VISIBLE_DEVICES={options.gpu} (and --device cuda)")
    return TensorRTRunner(bundle.engine_path(entry), entry, verify=options.verify), reason


def _probe_ort(env: Environment, device: str) -> None:
    if not env.ort_providers:
        raise BackendUnavailable(ORT_MISSING)
    if device == "cuda" and CUDA not in env.ort_providers:
        raise BackendUnavailable("onnxruntime has no CUDAExecutionProvider (it is the CPU build; "
                                 "pip install onnxruntime-gpu)")
    if device == "cuda" and not env.gpus:
        raise BackendUnavailable(NO_GPU)


def _probe_ort_trt(env: Environment, device: str) -> None:
    if not env.ort_providers:
        raise BackendUnavailable(ORT_MISSING)
    if TRT not in env.ort_providers:
        raise BackendUnavailable("onnxruntime has no TensorrtExecutionProvider (pip install onnxruntime-gpu "
                                 "and TensorRT)")
    if not env.gpus:
        raise BackendUnavailable(NO_GPU)


def _ort_factory(kind: str, provider_device: str | None = None) -> Callable[..., tuple[BaseRunner, str]]:
    def create(bundle: Any, device: str, options: RunOptions, env: Environment) -> tuple[BaseRunner, str]:
        from hamnet_deploy.runtime.backends.onnxruntime import OnnxRuntimeRunner

        entry = bundle.model(kind)  # BundleError naming the export option when absent
        where = provider_device or device
        label = {"cpu": "CPU", "cuda": "CUDA", "tensorrt": "TensorRT provider"}[where]
        runner = OnnxRuntimeRunner(bundle.model_path(kind), entry, device=where, threads=options.threads,
                                   trt=options.ort_trt, feature_dim=bundle.feature_dim, verify=options.verify,
                                   gpu=options.gpu)
        return runner, f"ONNX Runtime {label}, {entry.file} ({entry.precision})"

    return create


_BACKENDS: dict[str, Backend] = {}
_plugins_loaded = False
_plugin_errors: dict[str, str] = {}


def register(backend: Backend) -> Backend:
    """Add (or replace) a row of the table; returns it."""
    if not isinstance(backend, Backend):
        raise ConfigError(f"a backend registers a runtime.backends.registry.Backend, not {type(backend).__name__}")
    _BACKENDS[backend.name] = backend
    return backend


for _row in (
    Backend("tensorrt", "engine", ("cuda",), _probe_tensorrt, _create_tensorrt,
            "native TensorRT engine of the bundle, built on this GPU and TensorRT", auto=(("cuda", 10),)),
    Backend("onnxruntime", "onnx", ("cuda", "cpu"), _probe_ort, _ort_factory("onnx"),
            "ONNX Runtime, the FP32 model.onnx (CUDA with onnxruntime-gpu, else CPU)",
            auto=(("cuda", 20), ("cpu", 30))),
    Backend("onnxruntime-int8", "onnx_int8", ("cpu",), _probe_ort, _ort_factory("onnx_int8"),
            "ONNX Runtime, the static INT8 model.int8.onnx for CPUs (hamnet export --int8-cpu)",
            auto=(("cpu", 25),), auto_if=lambda bundle: bundle.accuracy_verified("onnx_int8")),
    Backend("onnxruntime-tensorrt", "onnx", ("cuda",), _probe_ort_trt, _ort_factory("onnx", "tensorrt"),
            "ONNX Runtime's TensorRT provider on model.onnx (onnxruntime-gpu and TensorRT)"),
):
    register(_row)


def _load_plugins() -> None:
    """Rows other packages (and the training layer) register through entry points."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINTS):
        try:
            register(ep.load())
        except Exception as exc:  # a broken plugin must not break the runtime
            _plugin_errors[ep.name] = f"{type(exc).__name__}: {exc}"


def backends() -> list[Backend]:
    """Every row, built-ins first."""
    _load_plugins()
    return list(_BACKENDS.values())


def names() -> list[str]:
    """The `--backend` values (besides `auto`)."""
    return [b.name for b in backends()]


def get(name: str) -> Backend:
    """The row called `name`; ConfigError listing the choices otherwise."""
    _load_plugins()
    if name not in _BACKENDS:
        extra = f" ({name}: {_plugin_errors[name]})" if name in _plugin_errors else ""
        raise ConfigError(f"--backend {name!r}: choose one of auto, {', '.join(_BACKENDS)}{extra}")
    return _BACKENDS[name]


def for_model(kind: str) -> list[Backend]:
    """Rows that run a model file of `kind` ("checkpoint", "onnx", ...)."""
    return [b for b in backends() if b.model == kind]


def auto_routes(device: str = "auto") -> list[tuple[Backend, str]]:
    """(backend, device) pairs `--backend auto` tries for a bundle, in order; `device`
    cpu or cuda keeps only those."""
    routes = [(rank, b, dev) for b in backends() for dev, rank in b.auto if device in ("auto", dev)]
    return [(b, dev) for _, b, dev in sorted(routes, key=lambda r: r[0])]


def plugin_errors() -> dict[str, str]:
    """Entry points that failed to load (name -> why), for `hamnet doctor`."""
    _load_plugins()
    return dict(_plugin_errors)
