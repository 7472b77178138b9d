"""Device memory and streams for the TensorRT runner and calibrator, without PyTorch:
cuda-python (`cuda.bindings.runtime`, or the older `cuda.cudart`) when installed, else
the CUDA driver library through ctypes (present wherever an NVIDIA driver is, Jetson
included)."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from hamnet_deploy.runtime.devices import cuda_ok, load_cudart, load_libcuda
from hamnet_deploy.runtime.errors import BackendUnavailable


class _CudaPythonMemory:
    """Device memory and streams through cuda-python's runtime API."""

    source = "cuda-python"

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart
        self._h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost

    def _check(self, result: Any, what: str) -> Any:
        err = result[0] if isinstance(result, tuple) else result
        if not cuda_ok(err):
            raise BackendUnavailable(f"CUDA {what} failed ({err}); check the GPU with nvidia-smi "
                                     "(or tegrastats on Jetson)")
        if isinstance(result, tuple) and len(result) > 1:
            return result[1]
        return None

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(max(1, int(nbytes))), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def stream_create(self) -> Any:
        return self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_destroy(self, stream: Any) -> None:
        self.rt.cudaStreamDestroy(stream)

    def h2d_async(self, dst: int, host: np.ndarray, nbytes: int, stream: Any) -> None:
        self._check(self.rt.cudaMemcpyAsync(dst, host.ctypes.data, nbytes, self._h2d, stream),
                    "cudaMemcpyAsync (host to device)")

    def d2h_async(self, host: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        self._check(self.rt.cudaMemcpyAsync(host.ctypes.data, src, nbytes, self._d2h, stream),
                    "cudaMemcpyAsync (device to host)")

    def h2d(self, dst: int, host: np.ndarray, nbytes: int) -> None:
        self._check(self.rt.cudaMemcpy(dst, host.ctypes.data, nbytes, self._h2d), "cudaMemcpy")

    def synchronize(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")


class _DriverMemory:
    """Device memory and streams through the CUDA driver API (libcuda via ctypes).

    Works in the device's primary context, the one the CUDA runtime (and so
    TensorRT) uses, so pointers are interchangeable with TensorRT's.
    """

    source = "cuda-driver"
    _CU_STREAM_NON_BLOCKING = 1

    def __init__(self, lib: Any, device: int = 0) -> None:
        self.lib = lib
        u64, size_t, vp = ctypes.c_uint64, ctypes.c_size_t, ctypes.c_void_p
        lib.cuMemAlloc_v2.argtypes = [ctypes.POINTER(u64), size_t]
        lib.cuMemFree_v2.argtypes = [u64]
        lib.cuMemcpyHtoDAsync_v2.argtypes = [u64, vp, size_t, vp]
        lib.cuMemcpyDtoHAsync_v2.argtypes = [vp, u64, size_t, vp]
        lib.cuMemcpyHtoD_v2.argtypes = [u64, vp, size_t]
        lib.cuStreamCreate.argtypes = [ctypes.POINTER(vp), ctypes.c_uint]
        lib.cuStreamSynchronize.argtypes = [vp]
        lib.cuStreamDestroy_v2.argtypes = [vp]
        lib.cuDevicePrimaryCtxRetain.argtypes = [ctypes.POINTER(vp), ctypes.c_int]
        lib.cuCtxSetCurrent.argtypes = [vp]
        self._check(lib.cuInit(0), "cuInit")
        dev = ctypes.c_int(0)
        self._check(lib.cuDeviceGet(ctypes.byref(dev), int(device)), "cuDeviceGet")
        self._device = dev.value
        ctx = vp()
        self._check(lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), self._device), "cuDevicePrimaryCtxRetain")
        self._check(lib.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            text = ctypes.c_char_p()
            getter = getattr(self.lib, "cuGetErrorString", None)
            if getter is not None:
                getter(code, ctypes.byref(text))
            detail = text.value.decode() if text.value else f"error {code}"
            raise BackendUnavailable(f"CUDA {what} failed ({detail}); check the GPU with nvidia-smi "
                                     "(or tegrastats on Jetson)")

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_uint64(0)
        self._check(self.lib.cuMemAlloc_v2(ctypes.byref(ptr), max(1, int(nbytes))), "cuMemAlloc")
        return int(ptr.value)

    def free(self, ptr: int) -> None:
        self.lib.cuMemFree_v2(ptr)

    def stream_create(self) -> Any:
        stream = ctypes.c_void_p()
        self._check(self.lib.cuStreamCreate(ctypes.byref(stream), self._CU_STREAM_NON_BLOCKING),
                    "cuStreamCreate")
        return stream

    def stream_handle(self, stream: Any) -> int:
        return int(stream.value or 0)

    def stream_destroy(self, stream: Any) -> None:
        self.lib.cuStreamDestroy_v2(stream)

    def h2d_async(self, dst: int, host: np.ndarray, nbytes: int, stream: Any) -> None:
        self._check(self.lib.cuMemcpyHtoDAsync_v2(dst, host.ctypes.data, nbytes, stream), "cuMemcpyHtoDAsync")

    def d2h_async(self, host: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        self._check(self.lib.cuMemcpyDtoHAsync_v2(host.ctypes.data, src, nbytes, stream), "cuMemcpyDtoHAsync")

    def h2d(self, dst: int, host: np.ndarray, nbytes: int) -> None:
        self._check(self.lib.cuMemcpyHtoD_v2(dst, host.ctypes.data, nbytes), "cuMemcpyHtoD")

    def synchronize(self, stream: Any) -> None:
        self._check(self.lib.cuStreamSynchronize(stream), "cuStreamSynchronize")


def cuda_memory_api() -> Any:
    """Device-memory helper: cuda-python when importable, else the CUDA driver via ctypes.

    Raises BackendUnavailable when neither exists (no NVIDIA driver on this machine).
    """
    cudart = load_cudart()
    if cudart is not None:
        return _CudaPythonMemory(cudart)
    lib = load_libcuda()
    if lib is None:
        raise BackendUnavailable("no CUDA driver found (libcuda): TensorRT needs an NVIDIA GPU with its "
                                 "driver; pip install cuda-python, or run with --backend onnxruntime")
    return _DriverMemory(lib)
