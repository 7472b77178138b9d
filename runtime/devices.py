"""What this machine has for GPU inference, without importing PyTorch or TensorRT at
module load: the importable TensorRT version and the visible CUDA devices (through
cuda-python when installed, else the CUDA driver library through ctypes, so it works on
a Jetson without cuda-python). `hamnet doctor` and the backend registry ask here.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.metadata
import importlib.util
import sys
from typing import Any

_TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11",
                      "tensorrt-cu13-bindings", "tensorrt-cu12-bindings", "tensorrt-cu11-bindings",
                      "tensorrt-bindings", "tensorrt-lean", "tensorrt-dispatch")


def parse_device(text: str, option: str = "--device") -> tuple[str, int | None]:
    """`--device` text -> (auto | cpu | cuda | mps, GPU index or None): `cuda:N` and a bare
    `N` name CUDA GPU N (of those visible). `tensorrt` is a backend, not a device."""
    raw = str(text).strip().lower()
    if raw in ("auto", "cpu", "cuda", "mps"):
        return raw, None
    if raw == "tensorrt":
        from hamnet_deploy.runtime.errors import ConfigError

        raise ConfigError(f"{option} tensorrt: TensorRT is a backend, not a device: use --backend tensorrt (its "
                          "engines) or --backend onnxruntime-tensorrt (ONNX Runtime's TensorRT provider)")
    index = raw[5:] if raw.startswith("cuda:") else raw
    if index.isdigit() and len(index) < 4:
        return "cuda", int(index)
    from hamnet_deploy.runtime.errors import ConfigError

    raise ConfigError(f"{option} {text!r}: choose auto, cpu, cuda, cuda:N or N (a GPU index)")


def tensorrt_distribution() -> tuple[str, str] | None:
    """(distribution name, version) of the installed TensorRT Python package, from its
    metadata (nothing is loaded); None when there is none (or no metadata: JetPack)."""
    for dist in _TRT_DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError, ValueError):
            version = importlib.metadata.version(dist)
            if version:
                return dist, version
    return None


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
    found = tensorrt_distribution()
    if found is not None:
        return found[1]
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


def cuda_driver_version() -> str | None:
    """The newest CUDA version the installed NVIDIA driver supports ("12.4"), or None when
    there is no driver. Needs no GPU context (cuDriverGetVersion); never raises."""
    value = 0
    cudart = load_cudart()
    if cudart is not None:
        with contextlib.suppress(Exception):
            err, value = cudart.cudaDriverGetVersion()
            value = int(value) if cuda_ok(err) else 0
    if not value:
        lib = load_libcuda()
        if lib is not None:
            with contextlib.suppress(Exception):
                out = ctypes.c_int(0)
                if lib.cuDriverGetVersion(ctypes.byref(out)) == 0:
                    value = int(out.value)
    if value <= 0:
        return None
    return f"{value // 1000}.{(value % 1000) // 10}"


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
