"""ONNX Runtime runner: the bundle's `model.onnx` (or `model.int8.onnx`) on the CPU, CUDA or
ONNX Runtime's TensorRT execution provider.

The life cycle and the input checks are `runtime.backends.base.BaseRunner`'s; this
module writes the `*_impl` methods.

- `onnxruntime` is imported inside `activate()`. `onnxruntime` (CPU) and
  `onnxruntime-gpu` install the same module; only the providers of the one installed
  last exist, so the provider list is built from `onnxruntime.get_available_providers()`
  and a device that is not available is a BackendUnavailable naming the package to install.
- Session: all graph optimisations, `intra_op_num_threads` = the cores this process may
  use unless given. After loading, the graph's input (name, rank, dtype, D) and outputs
  are checked against the manifest entry, so a wrong file is a BundleError, not a
  shape error in the middle of a run.
- ONNX Runtime's TensorRT provider builds its engine on the first run (slow) and caches
  it (`trt_engine_cache_path`); its optimisation profile bounds T and batch like a
  native engine, so the runner's `profile` is set from it and the inference driver chunks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.backends.base import BaseRunner
from hamnet_deploy.runtime.cache import cache_dir, cache_root
from hamnet_deploy.runtime.errors import BackendUnavailable, BundleError, ConfigError
from hamnet_deploy.runtime.fileio import sha256_bytes
from hamnet_deploy.runtime.profile import Profile
from hamnet_deploy.runtime.settings import Settings, option

DEVICES = ("cpu", "cuda", "tensorrt")
CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
ORT_MISSING = "ONNX Runtime is not installed: pip install onnxruntime (or onnxruntime-gpu for CUDA)"
GPU_PACKAGE_HINT = ("install the GPU build: pip uninstall -y onnxruntime && pip install onnxruntime-gpu "
                    "(Jetson: NVIDIA's Jetson wheel), or run with --device cpu")


def usable_cores() -> int:
    """CPU cores this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_trt_cache() -> Path:
    """Where ONNX Runtime's TensorRT provider caches engines: the cache folder's `ort-trt`
    (`runtime.cache`; a bundle folder may be read-only)."""
    return cache_root() / "ort-trt"


@dataclass(frozen=True)
class OrtTensorRTOptions(Settings):
    """Options of ONNX Runtime's TensorrtExecutionProvider (profile over `features`)."""

    where = "TensorRT provider option"

    fp16: bool = False
    cache_path: str | None = None  # None: default_trt_cache()
    timing_cache: bool = True
    profile: Profile = option(factory=Profile)

    def provider_options(self, input_name: str, dim: int, ort_version: str | None = None) -> dict[str, str]:
        """The provider's option strings, e.g. trt_profile_max_shapes="features:4x4096x2048".

        `trt_timing_cache_path` is set only for ONNX Runtime 1.17+ (`ort_version`; older
        releases reject option names they do not know); None means current.
        """
        cache = str(self.cache_path or default_trt_cache())
        low, opt, high = self.profile.shapes(dim)

        def shape(s: tuple[int, int, int], batch: int | None = None) -> str:
            return f"{input_name}:{batch or s[0]}x{s[1]}x{s[2]}"

        options = {
            "trt_fp16_enable": str(bool(self.fp16)),
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": str(bool(self.timing_cache)),
            "trt_profile_min_shapes": shape(low, 1),
            "trt_profile_opt_shapes": shape(opt, 1),
            "trt_profile_max_shapes": shape(high),
        }
        if self.timing_cache and _version_at_least(ort_version, (1, 17)):
            options["trt_timing_cache_path"] = cache
        return options


def _version_at_least(version: str | None, wanted: tuple[int, int]) -> bool:
    if version is None:
        return True
    parts = []
    for piece in str(version).split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts) >= wanted


def import_onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(ORT_MISSING) from exc
    except Exception as exc:  # a broken install (missing shared libraries, ...)
        raise BackendUnavailable(f"ONNX Runtime is installed but failed to load ({exc}); reinstall it") from exc
    return ort


def available_providers() -> list[str]:
    """`onnxruntime.get_available_providers()`, or [] when ONNX Runtime is not importable."""
    try:
        return list(import_onnxruntime().get_available_providers())
    except BackendUnavailable:
        return []


def provider_list(device: str, available: Sequence[str], input_name: str, dim: int | None,
                  trt: OrtTensorRTOptions | None = None, ort_version: str | None = None,
                  gpu: int | None = None) -> list[Any]:
    """Providers for `device` (cpu, cuda, tensorrt), in ONNX Runtime's form, CPU last;
    `gpu`: the CUDA device index (`device_id`), None for the first.

    Raises BackendUnavailable when the device's provider is not in `available`.
    """
    if device not in DEVICES:
        raise ConfigError(f"ONNX Runtime device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise BackendUnavailable(f"ONNX Runtime has no CUDA provider here (available: "
                                     f"{', '.join(available) or 'none'}); {GPU_PACKAGE_HINT}")
        return [(CUDA, {"device_id": str(gpu)}) if gpu is not None else CUDA, CPU]
    if TRT not in available:
        raise BackendUnavailable(f"ONNX Runtime has no TensorRT provider here (available: "
                                 f"{', '.join(available) or 'none'}); {GPU_PACKAGE_HINT} and TensorRT")
    if dim is None:
        raise BundleError("the TensorRT provider needs the model's feature dimension for its profile; "
                          "re-export the bundle")
    opts = (trt or OrtTensorRTOptions()).provider_options(input_name, dim, ort_version)
    if gpu is not None:
        opts["device_id"] = str(gpu)
    cuda = [(CUDA, {"device_id": str(gpu)}) if gpu is not None else CUDA] if CUDA in available else []
    return [(TRT, opts), *cuda, CPU]


def _spec(entry: Any, side: str) -> list[Any]:
    if entry is None:
        return []
    if isinstance(entry, Mapping):
        return list(entry.get(side, []) or [])
    return list(getattr(entry, side, ()) or ())


def _field(spec: Any, key: str) -> Any:
    return spec.get(key) if isinstance(spec, Mapping) else getattr(spec, key, None)


class OnnxRuntimeRunner(BaseRunner):
    """Runs one ONNX model of a bundle with ONNX Runtime.

    Args:
        model_path: the .onnx file (`bundle.model_path("onnx")` or `("onnx_int8")`).
        manifest_entry: its manifest entry (`bundle.model(kind)` or its dict): input and
            output names, shapes, sha256. Optional: without it only the graph is checked.
        device: "cpu", "cuda" or "tensorrt" (ONNX Runtime's TensorRT provider).
        threads: intra-op threads (default: the usable cores).
        trt: options of the TensorRT provider (device "tensorrt"); its profile bounds the
            shapes like a native engine's, so the inference driver chunks.
        feature_dim: D, when the entry does not say.
        verify: check the file's SHA-256 against the entry before loading (`load_bundle`
            already did; pass False then).
    """

    name = "onnxruntime"

    def __init__(self, model_path: str | os.PathLike, manifest_entry: Any = None, *, device: str = "cpu",
                 threads: int | None = None, trt: OrtTensorRTOptions | None = None,
                 feature_dim: int | None = None, verify: bool = True, gpu: int | None = None) -> None:
        super().__init__()
        if device not in DEVICES:
            raise ConfigError(f"ONNX Runtime device {device!r}: choose one of {', '.join(DEVICES)}")
        if threads is not None and int(threads) < 1:
            raise ConfigError(f"--threads {threads}: must be >= 1")
        self.model_path = Path(model_path)
        self.entry = manifest_entry
        self.device = device
        self.threads = int(threads) if threads else usable_cores()
        self.trt = trt or OrtTensorRTOptions()
        self.verify = verify
        self.gpu = gpu
        inputs = _spec(manifest_entry, "inputs")
        self.input_name: str | None = str(_field(inputs[0], "name")) if inputs else None
        dim = feature_dim
        if dim is None and inputs:
            shape = list(_field(inputs[0], "shape") or [])
            dim = shape[-1] if shape and isinstance(shape[-1], int) else None
        self.input_dim = int(dim) if dim else None
        self.precision = str(_field(manifest_entry, "precision") or "fp32") if manifest_entry else "fp32"
        self.name = ("onnxruntime-tensorrt" if device == "tensorrt" else
                     "onnxruntime-int8" if self.precision == "int8" else "onnxruntime")
        self.profile = self.trt.profile if device == "tensorrt" else None
        self.providers: list[str] = []  # what the session actually uses, after activate()
        self._session: Any = None
        self._outputs: list[str] = []

    @property
    def what(self) -> str:
        return self.model_path.name

    def describe(self) -> str:
        """One line: file, precision, providers, threads."""
        providers = ", ".join(self.providers) if self.providers else self.device
        return f"{self.model_path.name} ({self.precision}) on {providers}, {self.threads} threads"

    def activate_impl(self) -> None:
        """Create the InferenceSession and check its input/outputs against the manifest."""
        ort = import_onnxruntime()
        if not self.model_path.is_file():
            raise BundleError(f"{self.model_path}: model file missing; re-export the bundle with hamnet export")
        expected = _field(self.entry, "sha256") if self.entry is not None else None
        try:  # the session is made from these bytes: what was checked is what runs, and nothing else loads
            model = self.model_path.read_bytes()
        except OSError as exc:
            raise BundleError(f"{self.model_path}: cannot read the model ({exc.strerror})") from None
        if self.verify and expected and sha256_bytes(model) != expected:
            raise BundleError(f"{self.model_path}: checksum does not match the manifest: the file was "
                              "modified or damaged; re-export the bundle")
        available = list(ort.get_available_providers())
        providers = provider_list(self.device, available, self.input_name or "features", self.input_dim,
                                  self.trt, getattr(ort, "__version__", None), self.gpu)
        if self.device == "tensorrt":
            if self.trt.cache_path:
                Path(self.trt.cache_path).mkdir(parents=True, exist_ok=True)
            else:
                cache_dir("ort-trt")  # created, or a ConfigError naming $HAMNET_CACHE
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.threads
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(model, opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            if "external" in str(exc).lower() or "model_path must not be empty" in str(exc):
                raise BundleError(f"{self.model_path}: keeps weights in external data files, which a bundle "
                                  "does not checksum and hamnet never loads; re-export the bundle") from None
            raise BundleError(f"{self.model_path}: ONNX Runtime cannot load the model ({_first_line(exc)}); "
                              "re-export the bundle") from None
        used = list(session.get_providers())
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if wanted not in used:
            raise BackendUnavailable(f"ONNX Runtime could not start {wanted} (the session fell back to "
                                     f"{', '.join(used)}; check the CUDA/TensorRT libraries and the driver), "
                                     "or run with --device cpu")
        self._check_io(session)
        self._session, self.providers = session, used

    def _check_io(self, session: Any) -> None:
        where = self.model_path
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise BundleError(f"{where}: expected one input (features), the graph has "
                              f"{[i.name for i in inputs]}; re-export the bundle")
        inp = inputs[0]
        if self.input_name is not None and inp.name != self.input_name:
            raise BundleError(f"{where}: the graph's input is {inp.name!r} but the manifest says "
                              f"{self.input_name!r}; re-export the bundle")
        if len(inp.shape) != 3:
            raise BundleError(f"{where}: input {inp.name!r} has shape {inp.shape}, expected [batch, T, D]; "
                              "re-export the bundle")
        if inp.type != "tensor(float)":
            raise BundleError(f"{where}: input {inp.name!r} is {inp.type}, expected float32; re-export the bundle")
        dim = inp.shape[2]
        if isinstance(dim, int):
            if self.input_dim is not None and dim != self.input_dim:
                raise BundleError(f"{where}: the graph takes {dim}-D features but the manifest says "
                                  f"{self.input_dim}; re-export the bundle")
            self.input_dim = dim
        self.input_name = inp.name
        names = [o.name for o in session.get_outputs()]
        if set(names) >= {"cas", "attention"}:
            self._outputs = ["cas", "attention"]
        elif len(names) == 2:
            self._outputs = names
        else:
            raise BundleError(f"{where}: expected outputs cas and attention, the graph has {names}; "
                              "re-export the bundle")
        declared = [str(_field(o, "name")) for o in _spec(self.entry, "outputs")]
        if declared and set(declared) != set(names):
            raise BundleError(f"{where}: the graph's outputs {names} differ from the manifest's {declared}; "
                              "re-export the bundle")

    def deactivate_impl(self) -> None:
        """Drop the session (ONNX Runtime frees its memory)."""
        self._session = None
        self.providers = []

    def infer_impl(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            cas, att = self._session.run(self._outputs, {self.input_name: features})
        except Exception as exc:  # onnxruntime's own exception types
            raise BackendUnavailable(f"ONNX Runtime failed on input {tuple(features.shape)} ({_first_line(exc)}); "
                                     "lower --batch-size/--max-t or run with --device cpu") from None
        return cas, att


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
