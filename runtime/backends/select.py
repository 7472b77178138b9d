"""Which runner runs a model here, and why: `select_runner(model, backend="auto")` returns
an *active* runner plus a one-line reason, through the backend table
(`runtime.backends.registry`).

`auto` on a bundle tries the table's auto routes in order and takes the first that
starts: a TensorRT engine that matches this GPU and TensorRT (exact match first, then
the precision order), ONNX Runtime CUDA, ONNX Runtime CPU on the INT8 model when the
accuracy guard kept its mAP within --max-drop (`Bundle.accuracy_verified`), ONNX
Runtime CPU on the FP32 model. `--device cpu` or `cuda`
keeps only the routes on that device. A training checkpoint runs with the backends
that take checkpoints (PyTorch). An explicit backend that cannot start is an error
naming what is missing; `auto` notes it in the reason and moves on. `plan` says what
`auto` would try, without starting anything (what `hamnet doctor` reports).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hamnet_deploy.runtime.backends import registry
from hamnet_deploy.runtime.backends.registry import Backend, RunOptions
from hamnet_deploy.runtime.bundle import Bundle, load_bundle
from hamnet_deploy.runtime.devices import parse_device
from hamnet_deploy.runtime.environment import Environment
from hamnet_deploy.runtime.errors import BackendUnavailable, BundleError, ConfigError, HamnetError
from hamnet_deploy.runtime.manifest import MANIFEST
from hamnet_deploy.runtime.postprocess import PostprocessConfig

DEVICES = ("auto", "cpu", "cuda")
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
    def from_runner(cls, path: Path, runner: Any) -> ModelInfo:
        """From an active checkpoint runner (it knows what a manifest would say)."""
        return cls(path, "checkpoint", list(runner.classes), int(runner.input_dim), int(runner.receptive_radius),
                   float(runner.snippet_seconds), runner.postprocess)


@dataclass
class Selection:
    """An active runner, the backend name, why it was chosen and what was skipped."""

    runner: Any
    backend: str
    reason: str
    info: ModelInfo
    skipped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.backend}: {self.runner.describe()}"


@dataclass(frozen=True)
class Route:
    """One step of `auto`: a backend on a device, and why it cannot run (None: it can)."""

    backend: Backend
    device: str
    why_not: str | None

    @property
    def label(self) -> str:
        return f"{self.backend.name} ({self.device})"


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
    """A training run folder, one of its checkpoints/epoch-N folders or its pointer files
    (latest.json, best.json); not a bundle."""
    p = Path(path)
    if p.name in ("latest.json", "best.json") and p.is_file():
        return True
    return p.is_dir() and not (p / MANIFEST).is_file() and (
        (p / "latest.json").is_file() or (p / "state.json").is_file())


# --------------------------------------------------------------------------- #
#                                  selection                                  #
# --------------------------------------------------------------------------- #
def plan(bundle: Bundle, device: str = "auto", env: Environment | None = None,
         options: RunOptions | None = None) -> list[Route]:
    """The routes `auto` tries for `bundle`, each with why it cannot run (nothing started)."""
    env = env or Environment.current()
    options = options or RunOptions()
    routes = []
    for backend, dev in registry.auto_routes(device):
        if not backend.offered(bundle):
            continue
        try:
            backend.make(bundle, dev, options, env)
            why = None
        except HamnetError as exc:
            why = _short(str(exc))
        if why is None and backend.auto_if is not None:
            qualifies, because = backend.auto_if(bundle)
            why = None if qualifies else because
        routes.append(Route(backend, dev, why))
    return routes


def select_runner(model: str | os.PathLike, backend: str = "auto", device: str = "auto", *,
                  threads: int | None = None, ort_trt: Any = None, verify: bool = True,
                  env: Environment | None = None) -> Selection:
    """Open `model` (a bundle folder, or a training checkpoint) and start a runner.

    Args:
        backend: `auto` or a name of the backend table (`registry.names()`).
        device: auto, cpu, cuda, cuda:N or N (`runtime.devices.parse_device`).
        threads: CPU threads (ONNX Runtime intra-op, PyTorch).
        ort_trt: `OrtTensorRTOptions` for onnxruntime-tensorrt.
        verify: check the bundle's checksums once (runners then skip their own check).
        env: the machine as the probes see it (default: this one; tests simulate others).

    Returns a Selection whose runner is active; use it as `with selection.runner:`.
    """
    if backend != "auto":
        registry.get(backend)  # ConfigError listing the choices
    device, gpu = parse_device(device)
    if device not in DEVICES:
        raise ConfigError(f"--device {device!r}: choose one of auto, cpu, cuda, cuda:N or N")
    env = env or Environment.current()
    if gpu is not None and env.gpus and gpu >= len(env.gpus):
        raise ConfigError(f"--device cuda:{gpu}: this machine has {len(env.gpus)} visible GPU(s) (0.."
                          f"{len(env.gpus) - 1}); check nvidia-smi and CUDA_VISIBLE_DEVICES")
    options = RunOptions(threads=threads, ort_trt=ort_trt, gpu=gpu)
    model = Path(model)
    if is_checkpoint(model):
        return _checkpoint(model, backend, device, options, env)
    bundle = load_bundle(model, verify=verify)
    if backend == "auto":
        return _auto(bundle, device, options, env)
    chosen = registry.get(backend)
    if chosen.model == "checkpoint":
        raise ConfigError(f"--backend {backend} runs a training checkpoint, and {bundle.path} is a bundle: pass "
                          "the checkpoint itself with --model RUN (a folder from hamnet train); the checkpoint a "
                          "bundle records is never loaded")
    dev = _device_for(chosen, device, env)
    runner, reason = _make(chosen, bundle, dev, options, env)
    return _started(Selection(runner, chosen.name, reason, ModelInfo.from_bundle(bundle)))


def _make(backend: Backend, bundle: Bundle, device: str, options: RunOptions, env: Environment) -> tuple[Any, str]:
    """The backend's runner for `bundle` (not started), told the manifest's class count."""
    runner, reason = backend.make(bundle, device, options, env)
    runner.classes_from = (len(bundle.classes), str(bundle.path / MANIFEST))
    return runner, reason


def _device_for(backend: Backend, device: str, env: Environment) -> str:
    """An explicit backend's device: the one asked for (it must be one of the backend's),
    or for `auto` the first of its devices that this machine has."""
    if device == "auto":
        return next((d for d in backend.devices if backend.why_not(env, d) is None), backend.devices[-1])
    if device not in backend.devices:
        raise ConfigError(f"--backend {backend.name} runs on {', '.join(backend.devices)}; drop --device "
                          f"{device}")
    return device


def _started(selection: Selection) -> Selection:
    selection.runner.activate()
    return selection


def _checkpoint(model: Path, backend: str, device: str, options: RunOptions, env: Environment) -> Selection:
    takers = registry.for_model("checkpoint")
    if backend != "auto" and backend not in [b.name for b in takers]:
        raise ConfigError(f"--model {model} is a training checkpoint: --backend {backend} runs an exported "
                          f"bundle; make one with hamnet export {model} --out bundle, or use --backend "
                          f"{takers[0].name if takers else 'torch'}")
    if not takers:
        raise BackendUnavailable(f"{model} is a training checkpoint and no backend here runs checkpoints; "
                                 "pip install 'hamnet-deploy[train]', or export a bundle")
    chosen = registry.get(backend) if backend != "auto" else takers[0]
    runner, _ = chosen.make(model, device, options, env)
    runner.activate()
    why = "the model is a training checkpoint" if backend == "auto" else "asked for"
    return Selection(runner, chosen.name, f"PyTorch ({why})", ModelInfo.from_runner(model, runner))


def _auto(bundle: Bundle, device: str, options: RunOptions, env: Environment) -> Selection:
    skipped: list[str] = []
    last: HamnetError | None = None
    for route in plan(bundle, device, env, options):
        if route.why_not is not None:
            skipped.append(f"not {route.label}: {route.why_not}")
            continue
        try:
            runner, reason = _make(route.backend, bundle, route.device, options, env)
            runner.activate()
        except HamnetError as exc:
            skipped.append(f"not {route.label}: {_short(str(exc))}")
            last = exc
            continue
        if route.backend.auto_if is not None:
            reason += f", chosen because {route.backend.auto_if(bundle)[1]}"
        if skipped:
            reason += " (" + "; ".join(skipped) + ")"
        return Selection(runner, route.backend.name, reason, ModelInfo.from_bundle(bundle), skipped)
    raise BackendUnavailable(f"no backend can run {bundle.path} here (--device {device}): "
                             + "; ".join(skipped)) from last


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
