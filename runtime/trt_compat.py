"""TensorRT engine compatibility: which engine of a bundle may run on this machine.

A serialized TensorRT engine is tied to the TensorRT version and the GPU
architecture (compute capability) that built it. Two build options relax that:

- **version-compatible** (TensorRT 8.6+, `BuilderFlag.VERSION_COMPATIBLE`): the engine
  also runs on any *later* TensorRT (>= 8.6), never on an older one.
- **hardware-compatible** (TensorRT 8.6+, `HardwareCompatibilityLevel.AMPERE_PLUS`):
  built on an Ampere or newer GPU (sm_80+), it runs on any sm_80+ GPU. NVIDIA does not
  support it on Jetson (JetPack) or DRIVE, so integrated GPUs never take part.

Both are slower than a plain engine, so a plain engine that matches is preferred.
The bundle manifest records, for each engine, the TensorRT version, GPU name,
compute capability, precision and shape profile; `check_engine_compatible` compares
them with the running machine *before* TensorRT deserializes anything, so a mismatch
is a one-line message instead of a TensorRT stack trace.

Also here, because `hamnet doctor` needs them without TensorRT or PyTorch:
`installed_tensorrt()` and `cuda_devices()`. NumPy/stdlib only: no torch, no
tensorrt import at module load (this is `runtime/`).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from hamnet_deploy.runtime.errors import BundleError, ConfigError, DataError

PRECISIONS = ("fp32", "fp16", "int8")

INTEGRATED_CC = frozenset({"5.3", "6.2", "7.2", "8.7", "10.1", "11.0"})
"""Compute capabilities of NVIDIA's integrated (Tegra) GPUs: Jetson Nano/TX1, TX2,
Xavier, Orin and Thor (10.1 in CUDA 12.x, 11.0 from CUDA 13). Hardware-compatible
engines are not supported on them."""

DLA_MAX_DIM = 8192
"""DLA limit on every non-batch dimension of a tensor."""

REBUILD_HINT = ("rebuild it on this machine with `hamnet export ... --trt` (the bundle's ONNX "
                "file is the source) or run with --backend onnxruntime")


class ShapeOutsideProfile(DataError):
    """An input's batch or T lies outside the engine's optimisation profile.

    TensorRT never clamps: the caller must split the video into chunks (with
    `receptive_radius` snippets of context on each side, which keeps them exact) or
    rebuild the engine with a larger profile.
    """


# --------------------------------------------------------------------------- #
#                          versions and capabilities                          #
# --------------------------------------------------------------------------- #
def parse_version(text: Any) -> tuple[int, ...]:
    """"10.3.0.26" -> (10, 3, 0, 26); "8.6.1.post1" -> (8, 6, 1); "10.0.0b6" -> (10, 0, 0).

    Reads the leading numeric components and stops at the first one that is not
    purely numeric (keeping its leading digits). Raises ValueError when there is no
    leading number at all.
    """
    parts: list[int] = []
    for piece in str(text).strip().split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    if not parts:
        raise ValueError(f"{text!r} is not a version number such as 10.3.0.26")
    return tuple(parts)


def trt_major(version: Any) -> int:
    """Major version of a TensorRT version string ("10.3.0.26" -> 10)."""
    return parse_version(version)[0]


def short_version(version: Any, parts: int = 3) -> str:
    """The first `parts` components of a version ("10.3.0.26" -> "10.3.0")."""
    return ".".join(str(p) for p in parse_version(version)[:parts])


def parse_cc(value: Any) -> tuple[int, int]:
    """Compute capability as (major, minor) from "8.7", 8.7, "sm_87", "sm90", "120", 9 or (8, 7).

    Raises ValueError for anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a compute capability such as 8.7")
    if isinstance(value, int):
        return (value, 0)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    text = str(value).strip().lower()
    match = re.fullmatch(r"(\d+)\.(\d+)", text)
    if match:
        return (int(match.group(1)), int(match.group(2)))
    match = re.fullmatch(r"(?:sm_?|compute_)?(\d{2,3})", text)
    if match:
        digits = match.group(1)
        return (int(digits[:-1]), int(digits[-1]))
    match = re.fullmatch(r"\d+", text)
    if match:
        return (int(text), 0)
    raise ValueError(f"{value!r} is not a compute capability such as 8.7 or sm_87")


def format_cc(value: Any) -> str:
    """Canonical "major.minor" form of a compute capability ("sm_87" -> "8.7")."""
    major, minor = parse_cc(value)
    return f"{major}.{minor}"


def sm_name(value: Any) -> str:
    """"8.7" -> "sm_87"."""
    major, minor = parse_cc(value)
    return f"sm_{major}{minor}"


def is_integrated_gpu(cc: Any, gpu_name: str = "") -> bool:
    """True for Jetson/DRIVE (Tegra) GPUs, by compute capability or name."""
    try:
        if format_cc(cc) in INTEGRATED_CC:
            return True
    except ValueError:
        pass
    return bool(re.search(r"\b(orin|xavier|tegra|thor|jetson)\b", gpu_name or "", re.IGNORECASE))


def gpu_slug(gpu_name: str) -> str:
    """File-name-safe short form of a GPU name: "NVIDIA H100 80GB HBM3" -> "h100-80gb-hbm3"."""
    text = re.sub(r"\b(nvidia|geforce)\b", " ", (gpu_name or "").lower())
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return text[:32].strip("-") or "gpu"


def engine_file_name(gpu_name: str, cc: Any, trt_version: Any, precision: str,
                     dla_core: int | None = None) -> str:
    """Engine file name from what the engine is tied to, e.g.
    `hamnet_h100-80gb-hbm3_sm90_trt10.3.0_fp16.engine` (`..._dla0.engine` for DLA core 0).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    major, minor = parse_cc(cc)
    dla = "" if dla_core is None else f"_dla{int(dla_core)}"
    return (f"hamnet_{gpu_slug(gpu_name)}_sm{major}{minor}_trt{short_version(trt_version)}"
            f"_{precision}{dla}.engine")


# --------------------------------------------------------------------------- #
#                                  profiles                                   #
# --------------------------------------------------------------------------- #
def entry_dict(entry: Any) -> Mapping[str, Any]:
    if isinstance(entry, Mapping):
        return entry
    to_dict = getattr(entry, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise BundleError(f"engine entry {entry!r} is not a manifest object; re-export the bundle")


def profile_limits(entry: Any) -> dict[str, int]:
    """min_t, opt_t, max_t, min_batch, max_batch of an engine entry's profile.

    `min_batch` defaults to 1, except for DLA engines (static shapes), whose batch is
    fixed at `max_batch`.
    """
    entry = entry_dict(entry)
    where = f"engine {entry.get('file', '?')}"
    profile = entry.get("profile")
    if not isinstance(profile, Mapping):
        raise BundleError(f"{where}: the manifest entry has no shape profile; re-export the bundle")
    try:
        out = {k: int(profile[k]) for k in ("min_t", "opt_t", "max_t", "max_batch")}
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{where}: profile {dict(profile)} needs integer min_t, opt_t, max_t and "
                          "max_batch; re-export the bundle") from None
    default_min_batch = out["max_batch"] if entry.get("dla_core") is not None else 1
    out["min_batch"] = int(profile.get("min_batch", default_min_batch) or default_min_batch)
    if not (1 <= out["min_t"] <= out["opt_t"] <= out["max_t"]
            and 1 <= out["min_batch"] <= out["max_batch"]):
        raise BundleError(f"{where}: profile {out} needs 1 <= min_t <= opt_t <= max_t and "
                          "1 <= min_batch <= max_batch; re-export the bundle")
    return out


def profile_allows(entry: Any, batch: int, T: int) -> bool:
    """True when an input [batch, T, D] lies inside the engine's profile.

    A batch smaller than the profile's `min_batch` is allowed: the runner pads it with
    zero rows (batch items are independent), so only T must match a static profile.
    """
    lim = profile_limits(entry)
    return 1 <= int(batch) <= lim["max_batch"] and lim["min_t"] <= int(T) <= lim["max_t"]


def check_profile(entry: Any, batch: int, T: int) -> None:
    """Raise ShapeOutsideProfile (telling the caller to chunk) unless `profile_allows`."""
    if profile_allows(entry, batch, T):
        return
    lim = profile_limits(entry)
    name = entry_dict(entry).get("file", "the engine")
    t_range = (f"T = {lim['min_t']}" if lim["min_t"] == lim["max_t"]
               else f"T {lim['min_t']}..{lim['max_t']}")
    raise ShapeOutsideProfile(
        f"input of batch {batch} and T = {T} is outside the profile of {name} (batch 1..{lim['max_batch']}, "
        f"{t_range}); TensorRT never clamps: split the video into chunks of at most {lim['max_t']} "
        f"snippets with receptive-radius context (and batches of at most {lim['max_batch']}), or "
        f"rebuild the engine with a larger --max-t / --max-batch")


# --------------------------------------------------------------------------- #
#                                compatibility                                #
# --------------------------------------------------------------------------- #
def _same_version(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    k = min(len(a), len(b))
    return a[:k] == b[:k]


def _version_at_least(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    n = max(len(a), len(b))
    return a + (0,) * (n - len(a)) >= b + (0,) * (n - len(b))


def _display_versions(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[str, str]:
    """Shortest prefixes (at least major.minor) that tell two versions apart."""
    n = 2
    if _same_version(a, b):
        return ".".join(map(str, a[:n])), ".".join(map(str, b[:n]))
    while n < max(len(a), len(b)) and a[:n] == b[:n]:
        n += 1
    return ".".join(map(str, a[:n])), ".".join(map(str, b[:n]))


def engine_compatibility(entry: Any, trt_version: str, gpu_name: str,
                         compute_capability: Any) -> tuple[bool, str]:
    """(ok, reason) for running `entry` on this machine; see `check_engine_compatible`."""
    entry = entry_dict(entry)
    name = entry.get("file", "?")
    try:
        built_v = parse_version(entry["tensorrt_version"])
        built_cc = parse_cc(entry["compute_capability"])
    except (KeyError, ValueError) as exc:
        raise BundleError(f"engine {name}: the manifest entry lacks a valid TensorRT version or compute "
                          f"capability ({exc}); re-export the bundle") from None
    here_v = parse_version(trt_version)
    here_cc = parse_cc(compute_capability)
    built_gpu = str(entry.get("gpu_name", "") or "?")
    version_compatible = bool(entry.get("version_compatible", False))
    hardware_compatible = bool(entry.get("hardware_compatible", False))

    reasons = []
    if not _same_version(built_v, here_v):
        if not version_compatible:
            reasons.append("an engine runs only on the TensorRT version that built it unless it was "
                           "built version-compatible")
        elif built_v < (8, 6):
            reasons.append("version compatibility needs an engine built with TensorRT 8.6 or newer")
        elif not _version_at_least(here_v, built_v):
            reasons.append("a version-compatible engine runs on the same or a later TensorRT, not an "
                           "older one")
    if built_cc != here_cc:
        if entry.get("dla_core") is not None:
            reasons.append("a DLA engine runs only on the SoC that built it")
        elif not hardware_compatible:
            reasons.append("an engine runs only on the GPU architecture that built it unless it was "
                           "built hardware-compatible")
        elif built_cc < (8, 0) or here_cc < (8, 0):
            reasons.append("hardware-compatible engines need Ampere or newer (sm_80+) on both sides")
        elif is_integrated_gpu(built_cc, built_gpu) or is_integrated_gpu(here_cc, gpu_name):
            reasons.append("hardware compatibility is not supported on Jetson/DRIVE GPUs")
    if not reasons:
        return True, ""
    shown_built, shown_here = _display_versions(built_v, here_v)
    message = (f"engine {name} was built for TensorRT {shown_built} on {sm_name(built_cc)} ({built_gpu}); "
               f"this machine has TensorRT {shown_here} on {sm_name(here_cc)} ({gpu_name or '?'}) and "
               f"{'; '.join(reasons)}: {REBUILD_HINT}")
    return False, message


def check_engine_compatible(entry: Any, trt_version: str, gpu_name: str,
                            compute_capability: Any) -> None:
    """Raise BundleError unless the engine of `entry` can run with this TensorRT and GPU.

    Same TensorRT version (compared on the components both sides record) and same
    compute capability: accepted. Otherwise accepted only when the engine was built
    version-compatible (built with 8.6+, running on the same or a later TensorRT)
    and/or hardware-compatible (sm_80+ on both sides, neither an integrated Jetson/DRIVE
    GPU). DLA engines need the same compute capability.
    """
    ok, message = engine_compatibility(entry, trt_version, gpu_name, compute_capability)
    if not ok:
        raise BundleError(message)


def is_native_match(entry: Any, trt_version: str, compute_capability: Any) -> bool:
    """True when the engine was built by this exact TensorRT version for this architecture."""
    entry = entry_dict(entry)
    try:
        return (_same_version(parse_version(entry["tensorrt_version"]), parse_version(trt_version))
                and parse_cc(entry["compute_capability"]) == parse_cc(compute_capability))
    except (KeyError, ValueError):
        return False


PRECISION_PREFERENCE = {"fp16": 0, "int8": 1, "fp32": 2}
"""Order in which `choose_engine` prefers precisions when none is asked for: FP16 is
the default fast path with negligible accuracy loss; an INT8 engine exists only when
the user calibrated one; FP32 is the slow reference."""


def choose_engine(entries: Iterable[Any], trt_version: str, gpu_name: str, cc: Any,
                  precision: str | None = None, dla: bool | None = None) -> Any | None:
    """The best engine entry that can run here, or None.

    Keeps the entries that pass `check_engine_compatible`, of `precision` when given.
    `dla`: None = GPU engines, falling back to DLA engines when there is no GPU one;
    True = DLA engines only; False = GPU engines only. Among the rest it prefers an
    exact (not version/hardware-compatible, hence faster) match, then FP16 over INT8
    over FP32, then the widest T profile. Returns the entry object as given.
    """
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    candidates = []
    for order, raw in enumerate(entries):
        entry = entry_dict(raw)
        if precision is not None and entry.get("precision") != precision:
            continue
        ok, _ = engine_compatibility(entry, trt_version, gpu_name, cc)
        if ok:
            candidates.append((order, raw, entry))
    if not candidates:
        return None
    is_dla = [c for c in candidates if c[2].get("dla_core") is not None]
    is_gpu = [c for c in candidates if c[2].get("dla_core") is None]
    if dla is True:
        candidates = is_dla
    elif dla is False:
        candidates = is_gpu
    else:
        candidates = is_gpu or is_dla
    if not candidates:
        return None

    def rank(item: tuple[int, Any, Mapping[str, Any]]) -> tuple:
        order, _, entry = item
        lim = profile_limits(entry)
        return (0 if is_native_match(entry, trt_version, cc) else 1,
                PRECISION_PREFERENCE.get(str(entry.get("precision")), 3),
                -(lim["max_t"] - lim["min_t"]), -lim["max_batch"], order)

    return min(candidates, key=rank)[1]


# --------------------------------------------------------------------------- #
#                        what this machine has installed                      #
# --------------------------------------------------------------------------- #
_TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11",
                      "tensorrt-cu13-bindings", "tensorrt-cu12-bindings", "tensorrt-cu11-bindings",
                      "tensorrt-lean", "tensorrt-dispatch")


def installed_tensorrt() -> str | None:
    """Version of the importable `tensorrt` Python module, or None when there is none.

    Reads package metadata first (cheap: no CUDA library is loaded); JetPack's apt
    package may carry no metadata, so then the module is imported lazily and its
    `__version__` read. A module that is present but fails to load counts as absent.
    """
    try:
        if importlib.util.find_spec("tensorrt") is None:
            return None
    except (ImportError, ValueError):
        return None
    for dist in _TRT_DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError, ValueError):
            version = importlib.metadata.version(dist)
            if version:
                return version
    try:
        module = importlib.import_module("tensorrt")
    except Exception:  # ImportError, or OSError when libnvinfer cannot be loaded
        return None
    version = getattr(module, "__version__", None)
    return str(version) if version else None


def load_cudart() -> Any | None:
    """cuda-python's runtime bindings (new `cuda.bindings.runtime`, old `cuda.cudart`)."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6

        return cudart
    except Exception:
        pass
    try:
        from cuda import cudart  # older cuda-python

        return cudart
    except Exception:
        return None


def cuda_ok(err: Any) -> bool:
    """True when a cuda-python error code (enum or int) means success."""
    return int(getattr(err, "value", err)) == 0


def _decode_name(raw: Any) -> str:
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).split(b"\x00", 1)[0].decode("utf-8", "replace")
    return str(raw).strip()


def _devices_cuda_python(cudart: Any) -> list[dict[str, Any]]:
    result = cudart.cudaGetDeviceCount()
    if not cuda_ok(result[0]):
        return []
    devices = []
    for index in range(int(result[1])):
        err, prop = cudart.cudaGetDeviceProperties(index)
        if not cuda_ok(err):
            continue
        devices.append({"index": index, "name": _decode_name(prop.name),
                        "compute_capability": f"{int(prop.major)}.{int(prop.minor)}",
                        "memory_bytes": int(prop.totalGlobalMem), "source": "cuda-python"})
    return devices


def load_libcuda() -> Any | None:
    """The CUDA driver library through ctypes (present wherever an NVIDIA driver is), or None."""
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    for lib_name in names:
        try:
            return ctypes.CDLL(lib_name)
        except OSError:
            continue
    return None


_CU_ATTR_CC_MAJOR, _CU_ATTR_CC_MINOR = 75, 76


def _devices_driver(lib: Any) -> list[dict[str, Any]]:
    if lib.cuInit(0) != 0:
        return []
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    devices = []
    for index in range(count.value):
        dev = ctypes.c_int(0)
        if lib.cuDeviceGet(ctypes.byref(dev), index) != 0:
            continue
        name = ctypes.create_string_buffer(256)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        memory = ctypes.c_size_t(0)
        lib.cuDeviceGetName(name, 256, dev)
        lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, dev)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, dev)
        total_mem = getattr(lib, "cuDeviceTotalMem_v2", None) or lib.cuDeviceTotalMem
        total_mem(ctypes.byref(memory), dev)
        devices.append({"index": index, "name": _decode_name(name.value),
                        "compute_capability": f"{major.value}.{minor.value}",
                        "memory_bytes": int(memory.value), "source": "cuda-driver"})
    return devices


def cuda_devices() -> list[dict[str, Any]]:
    """The CUDA GPUs this process sees: [{index, name, compute_capability ("8.7"),
    memory_bytes, source}], or [] when there is none (or no driver).

    Uses cuda-python when installed, else the CUDA driver library through ctypes, so it
    works on a Jetson without cuda-python and never imports PyTorch (runtime/ rule).
    On Jetson `memory_bytes` is the memory shared with the CPU. Never raises.
    """
    cudart = load_cudart()
    if cudart is not None:
        try:
            devices = _devices_cuda_python(cudart)
            if devices:
                return devices
        except Exception:
            pass
    lib = load_libcuda()
    if lib is None:
        return []
    try:
        return _devices_driver(lib)
    except Exception:
        return []
