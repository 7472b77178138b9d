"""Loading TensorRT and starting its CUDA objects, with one set of messages for the
runtime (`runtime.backends.tensorrt`) and the engine builder (`export.tensorrt_build`).

Three ways a TensorRT machine goes wrong before anything runs, each a
BackendUnavailable whose message names the cause and the fix:

- no `tensorrt` module at all: TensorRT is not installed;
- the Python bindings are there but `libnvinfer.so.N` (or the ONNX parser / plugin
  library) cannot be loaded: the bindings wheel was installed without its libraries;
- `trt.Builder(logger)` / `trt.Runtime(logger)` raise `TypeError: pybind11::init():
  factory function returned nullptr`: TensorRT could not start CUDA, most often
  because the NVIDIA driver is older than the CUDA runtime TensorRT was built for
  (TensorRT for CUDA 13 needs a CUDA 13 driver).

NumPy/stdlib only; `tensorrt` is imported only when asked for.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from hamnet_deploy.runtime import devices
from hamnet_deploy.runtime.errors import BackendUnavailable

INSTALL = ("pip install 'hamnet-deploy[trt]' on an NVIDIA GPU machine, or JetPack's python3-libnvinfer on "
           "Jetson (virtualenv with --system-site-packages)")
_LIBRARY = re.compile(r"lib[\w+-]+\.so(?:\.\d+)*")
_CUDA_TAG = re.compile(r"-cu(\d+)(?:-|$)")


def libraries_distribution(bindings: str | None) -> str | None:
    """The package holding the libraries of a bindings-only distribution
    (`tensorrt-cu12-bindings` -> `tensorrt-cu12-libs`), else None."""
    if bindings and bindings.endswith("-bindings"):
        return bindings[: -len("-bindings")] + "-libs"
    return None


def tensorrt_cuda_major(distribution: str | None = None) -> int | None:
    """The CUDA major version the installed TensorRT was built for, from its package name
    (`tensorrt-cu12...` -> 12); None when the name does not say (JetPack, `tensorrt`)."""
    if distribution is None:
        found = devices.tensorrt_distribution()
        distribution = found[0] if found else None
    match = _CUDA_TAG.search(distribution or "")
    return int(match.group(1)) if match else None


def driver_runs(driver: str | None, cuda_major: int | None) -> bool | None:
    """Whether a CUDA `cuda_major`.x runtime runs on a driver supporting CUDA `driver`
    ("12.4"): CUDA's minor-version compatibility needs the driver's major to be at least
    the runtime's. None when either is unknown."""
    if driver is None or cuda_major is None:
        return None
    return int(driver.split(".")[0]) >= int(cuda_major)


def import_tensorrt(fallback: str) -> Any:
    """`import tensorrt`, or BackendUnavailable saying what is missing and how to get it;
    `fallback` ends the message (what the user can do without TensorRT)."""
    try:
        import tensorrt as trt
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "tensorrt":
            raise BackendUnavailable(f"TensorRT is not installed: {INSTALL}; {fallback}") from exc
        raise BackendUnavailable(_library_missing(exc, fallback)) from exc
    except (ImportError, OSError) as exc:
        raise BackendUnavailable(_library_missing(exc, fallback)) from exc
    except Exception as exc:
        raise BackendUnavailable(f"TensorRT is installed but failed to load ({type(exc).__name__}: "
                                 f"{_first_line(exc)}); reinstall it ({INSTALL}); {fallback}") from exc
    return trt


def _library_missing(exc: BaseException, fallback: str) -> str:
    found = devices.tensorrt_distribution()
    text = _first_line(exc)
    lib = _LIBRARY.search(text)
    what = lib.group(0) if lib else "libnvinfer"
    libs = libraries_distribution(found[0] if found else None)
    if libs:
        how = f"pip install {libs}=={found[1]} (or the full tensorrt package of the same version)"
    else:
        how = "install TensorRT's libraries of the same version as its Python bindings"
    return (f"TensorRT's Python bindings are installed but its library {what} cannot be loaded ({text}): "
            f"{how}, or add the folder holding {what} to LD_LIBRARY_PATH (Jetson: reinstall JetPack's "
            f"TensorRT); {fallback}")


def start(trt: Any, factory: Callable[[Any], Any], logger: Any, fallback: str) -> Any:
    """`factory(logger)` (`trt.Builder` or `trt.Runtime`), or BackendUnavailable naming the
    driver and TensorRT's CUDA when TensorRT could not start CUDA."""
    name = getattr(factory, "__name__", "Builder")
    try:
        made = factory(logger)
    except TypeError as exc:
        if "nullptr" not in str(exc):
            raise
        made = None
    if made is None:
        raise BackendUnavailable(cuda_start_failure(str(getattr(trt, "__version__", "?")), name, fallback))
    return made


def cuda_start_failure(trt_version: str, what: str, fallback: str) -> str:
    """The one-line message for TensorRT failing to start CUDA (`trt.{what}()` gave nothing)."""
    driver = devices.cuda_driver_version()
    cuda = tensorrt_cuda_major()
    head = f"TensorRT {trt_version} could not start CUDA (trt.{what}() failed)"
    built = f"CUDA {cuda}" if cuda is not None else "its CUDA version"
    if driver is None:
        why = ("no NVIDIA driver answered (libcuda could not be loaded or has no GPU): install the NVIDIA driver "
               "and check nvidia-smi")
    elif driver_runs(driver, cuda) is False:
        why = (f"the NVIDIA driver supports CUDA up to {driver}, older than the CUDA {cuda} this TensorRT was "
               f"built for: update the driver, or install the TensorRT build for CUDA "
               f"{driver.split('.')[0]} (pip install tensorrt-cu{driver.split('.')[0]})")
    else:
        why = (f"the likely cause is a driver older than TensorRT's CUDA runtime (driver: CUDA {driver}; "
               f"TensorRT: {built}) or a GPU that is busy or out of memory: check nvidia-smi, update the driver "
               "or install the TensorRT build for the driver's CUDA")
    return f"{head}: {why}; {fallback}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
