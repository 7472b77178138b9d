"""INT8 calibration data for TensorRT: real feature batches from the train split.

- the features come from `export.calibration.calibration_features` (a dataset's train
  split or feature files, as `--calib` names them).
- `calibration_batches` joins them end to end and cuts the stream into fixed-T
  chunks grouped into [batch, T, D] arrays, the shape of the calibration profile.
  Joining lets short videos count (most THUMOS14 videos are shorter than a 512-snippet
  chunk); the seams touch +-2 snippets of each, negligible for range statistics.
- `make_entropy_calibrator` (TensorRT 8.x/10.x) wraps them in an
  `IInt8EntropyCalibrator2` with a calibration cache file: when the cache exists
  TensorRT reads the scales from it and the dataset is never loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.errors import DataError
from hamnet_deploy.runtime.fileio import write_bytes_atomic

MAX_CALIB_CHUNKS = 512
"""Upper bound on calibration chunks (each T x D), whatever the dataset size."""


def calibration_batches(features: Sequence[np.ndarray], chunk_t: int, batch: int,
                        max_chunks: int = MAX_CALIB_CHUNKS) -> list[np.ndarray]:
    """[batch, chunk_t, D] float32 arrays cut from `features` (each T x D) joined end to end.

    Whole chunks only; at most `max_chunks` chunks, evenly spaced over the stream. When
    fewer than `batch` chunks exist the stream is repeated to fill one batch; when the
    stream is shorter than one chunk it is tiled. Raises DataError for no data or
    mismatched D.
    """
    if chunk_t < 1 or batch < 1:
        raise DataError(f"calibration chunk T {chunk_t} and batch {batch} must be >= 1")
    arrays = [np.asarray(f, dtype=np.float32) for f in features if len(f)]
    if not arrays:
        raise DataError("no calibration features: the calibration dataset has no snippets")
    dims = {a.shape[1] if a.ndim == 2 else -1 for a in arrays}
    if len(dims) != 1 or -1 in dims:
        raise DataError(f"calibration features must all be T x D with one D, got D in {sorted(dims)}")
    stream = np.concatenate(arrays, axis=0)
    dim = stream.shape[1]
    if len(stream) < chunk_t:
        stream = np.resize(stream, (chunk_t, dim))
    n_chunks = len(stream) // chunk_t
    chunks = stream[: n_chunks * chunk_t].reshape(n_chunks, chunk_t, dim)
    limit = max(batch, (min(n_chunks, max_chunks) // batch) * batch)
    if n_chunks > limit:
        chunks = chunks[np.linspace(0, n_chunks - 1, num=limit).round().astype(int)]
    elif n_chunks < batch:
        chunks = chunks[np.arange(batch) % n_chunks]
    n_batches = len(chunks) // batch
    chunks = np.ascontiguousarray(chunks[: n_batches * batch])
    return list(chunks.reshape(n_batches, batch, chunk_t, dim))


def make_entropy_calibrator(trt: Any, batches: Sequence[np.ndarray] | Callable[[], Sequence[np.ndarray]],
                            cache_file: str | os.PathLike | None, input_name: str = "features",
                            cuda: Any = None) -> Any:
    """An `IInt8EntropyCalibrator2` feeding `batches` (or a callable producing them, called
    only when TensorRT asks for data, i.e. when the calibration cache is absent).

    The calibration cache is read from / written (atomically) to `cache_file`.
    `cuda`: device-memory helper (default `runtime.backends.tensorrt.cuda_memory_api()`).
    """
    base = trt.IInt8EntropyCalibrator2

    class HamnetEntropyCalibrator(base):
        def __init__(self) -> None:
            base.__init__(self)  # pybind trampoline: the parent must be initialised explicitly
            self._source = batches
            self._batches: list[np.ndarray] | None = None
            self._next = 0
            self._cache = Path(cache_file) if cache_file else None
            self._cuda = cuda
            self._ptr: int | None = None
            self._nbytes = 0
            self.batches_used = 0
            self.error: Exception | None = None

        def _data(self) -> list[np.ndarray]:
            if self._batches is None:
                src = self._source() if callable(self._source) else self._source
                self._batches = [np.ascontiguousarray(b, dtype=np.float32) for b in src]
            return self._batches

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch is part of each array's shape

        def get_batch(self, names: list[str], *args: Any) -> list[int] | None:
            # Called from C++: an exception must not escape; keep it for the builder to raise.
            try:
                return self._get_batch(names)
            except Exception as exc:
                self.error = exc
                self.free()
                return None

        def _get_batch(self, names: list[str]) -> list[int] | None:
            data = self._data()
            if self._next >= len(data):
                self.free()
                return None
            array = data[self._next]
            self._next += 1
            if self._cuda is None:
                from hamnet_deploy.runtime.backends.tensorrt import cuda_memory_api

                self._cuda = cuda_memory_api()
            if self._ptr is None or array.nbytes > self._nbytes:
                self.free()
                self._ptr, self._nbytes = self._cuda.malloc(array.nbytes), array.nbytes
            self._cuda.h2d(self._ptr, array, array.nbytes)
            self.batches_used += 1
            return [int(self._ptr) if name == input_name else 0 for name in names]

        def read_calibration_cache(self) -> bytes | None:
            if self._cache is not None and self._cache.is_file() and self._cache.stat().st_size:
                return self._cache.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if self._cache is not None:
                write_bytes_atomic(self._cache, bytes(cache))

        def free(self) -> None:
            if self._ptr is not None and self._cuda is not None:
                self._cuda.free(self._ptr)
            self._ptr, self._nbytes = None, 0

    return HamnetEntropyCalibrator()
