"""The GPU side of the TensorRT fakes: a NumPy-backed CUDA memory helper, GPUs as
`runtime.devices.cuda_devices` describes them, an engine manifest entry, small build
options."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
        "memory_bytes": 80 << 30, "source": "test"}
ORIN = {"index": 0, "name": "Orin", "compute_capability": "8.7", "memory_bytes": 32 << 30, "source": "test"}


class FakeCuda:
    """NumPy-backed stand-in for the CUDA memory helper: 'device' pointers are host addresses."""

    source = "fake"

    def __init__(self) -> None:
        self.mem: dict[int, np.ndarray] = {}
        self.freed: list[int] = []
        self.streams = 0

    def malloc(self, nbytes: int) -> int:
        buf = np.zeros(max(1, nbytes), np.uint8)
        self.mem[buf.ctypes.data] = buf
        return buf.ctypes.data

    def free(self, ptr: int) -> None:
        self.mem.pop(ptr)
        self.freed.append(ptr)

    def stream_create(self) -> str:
        self.streams += 1
        return "stream"

    def stream_handle(self, stream: Any) -> int:
        return 1234

    def stream_destroy(self, stream: Any) -> None:
        self.streams -= 1

    def h2d_async(self, dst: int, host: np.ndarray, nbytes: int, stream: Any) -> None:
        assert nbytes <= self._size(dst)
        ctypes.memmove(dst, host.ctypes.data, nbytes)

    def d2h_async(self, host: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        assert nbytes <= self._size(src)
        ctypes.memmove(host.ctypes.data, src, nbytes)

    def h2d(self, dst: int, host: np.ndarray, nbytes: int) -> None:
        self.h2d_async(dst, host, nbytes, None)

    def synchronize(self, stream: Any) -> None:
        pass

    def _size(self, ptr: int) -> int:
        return self.mem[ptr].nbytes

    def read(self, ptr: int, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        count = int(np.prod(shape))
        return self.mem[ptr].view(dtype)[:count].reshape(shape).copy()

    def write(self, ptr: int, array: np.ndarray) -> None:
        flat = np.ascontiguousarray(array).view(np.uint8).ravel()
        self.mem[ptr][: flat.size] = flat


def entry(**kw: Any) -> dict[str, Any]:
    """A manifest entry of an FP16 engine for Orin with TensorRT 10.3 (fields from `kw`)."""
    base = {"file": "e.engine", "sha256": "0" * 64, "precision": "fp16", "tensorrt_version": "10.3.0.26",
            "gpu_name": "Orin", "compute_capability": "8.7",
            "profile": {"min_t": 1, "opt_t": 512, "max_t": 4096, "min_batch": 1, "max_batch": 4},
            "dla_core": None, "version_compatible": False, "hardware_compatible": False}
    base.update(kw)
    return base


def trt_options(**kw: Any) -> Any:
    """Small TensorRT build options for the tests (T 1..64, batch 2, 64 MiB)."""
    from hamnet_deploy.export.options import TrtOptions

    base = {"min_t": 1, "opt_t": 16, "max_t": 64, "max_batch": 2, "workspace_mb": 64}
    base.update(kw)
    return TrtOptions(**base)
