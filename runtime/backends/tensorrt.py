"""TensorRT runner: a serialized engine from the bundle, run on a CUDA GPU.

The life cycle and the input checks (shape against the engine's profile included) are
`runtime.backends.base.BaseRunner`'s; this module writes the `*_impl` methods.

- `tensorrt` is imported inside `activate()`, so importing this module needs NumPy only
  (CPU machines, CI). No PyTorch either: device buffers come from
  `runtime.backends.cuda_memory`. Everything runs on one non-default stream.
- Before deserializing, the manifest entry is checked against the installed TensorRT
  and the GPU (`runtime.trt_compat.check_engine_compatible`) and the file against its
  SHA-256, so a stale engine is a clear BundleError, not a TensorRT crash.
- Shapes are checked against the engine's optimisation profile *before* running: a
  shape outside it raises `ShapeOutsideProfile` (TensorRT would fail in
  `set_input_shape`; it never clamps). Chunking long videos is the caller's job
  (`runtime.inference`). A batch smaller than a static (DLA) engine's batch is padded
  with zero rows.
- TensorRT 8.5+ / 10.x / 11.x use the named-tensor API (`num_io_tensors`,
  `set_input_shape`, `set_tensor_address`, `execute_async_v3`); 8.0-8.4 the bindings
  API (`get_binding_index`, `set_binding_shape`, `execute_async_v2`). The choice is
  made once, in `_engine_io`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime import trt_import
from hamnet_deploy.runtime.backends import cuda_memory
from hamnet_deploy.runtime.backends.base import BaseRunner
from hamnet_deploy.runtime.devices import cuda_devices
from hamnet_deploy.runtime.errors import BackendUnavailable, BundleError, DataError
from hamnet_deploy.runtime.fileio import sha256_bytes
from hamnet_deploy.runtime.trt_compat import as_entry, check_engine_compatible


def cuda_memory_api() -> Any:
    """The device-memory helper (`runtime.backends.cuda_memory`); a seam for tests."""
    return cuda_memory.cuda_memory_api()


RUNTIME_FALLBACK = "or run with --backend onnxruntime"


def import_tensorrt() -> Any:
    """`import tensorrt` for the runner (`runtime.trt_import.import_tensorrt`)."""
    return trt_import.import_tensorrt(RUNTIME_FALLBACK)


# --------------------------------------------------------------------------- #
#                    TensorRT I/O: the one version dispatch                   #
# --------------------------------------------------------------------------- #
def _np_dtype(trt: Any, dtype: Any) -> np.dtype:
    try:
        return np.dtype(trt.nptype(dtype))
    except Exception:
        name = str(dtype).rsplit(".", 1)[-1].upper()
        table = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT8": np.int8,
                 "BOOL": np.bool_, "INT64": np.int64, "UINT8": np.uint8}
        if name not in table:
            raise BundleError(f"engine tensor type {dtype} has no NumPy equivalent; rebuild the engine "
                              "with float32 inputs and outputs") from None
        return np.dtype(table[name])


class _TensorIO:
    """TensorRT 8.5+ named-tensor API (the only one in 10.x and 11.x)."""

    api = "tensors"

    def __init__(self, trt: Any, engine: Any, context: Any) -> None:
        self.engine, self.context = engine, context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self._dtypes = {n: _np_dtype(trt, engine.get_tensor_dtype(n)) for n in names}

    def dtype(self, name: str) -> np.dtype:
        return self._dtypes[name]

    def engine_shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.engine.get_tensor_shape(name))

    def profile_shapes(self, name: str) -> list[tuple[int, ...]]:
        return [tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(name, 0)]

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        return self.context.set_input_shape(name, shape) is not False

    def output_shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.context.get_tensor_shape(name))

    def bind(self, name: str, ptr: int) -> None:
        self.context.set_tensor_address(name, int(ptr))

    def execute(self, stream_handle: int) -> bool:
        return self.context.execute_async_v3(stream_handle) is not False


class _BindingIO:
    """TensorRT 8.0-8.4 bindings API (removed in 10.x)."""

    api = "bindings"

    def __init__(self, trt: Any, engine: Any, context: Any) -> None:
        self.engine, self.context = engine, context
        n = engine.num_bindings
        names = [engine.get_binding_name(i) for i in range(n)]
        self.inputs = [names[i] for i in range(n) if engine.binding_is_input(i)]
        self.outputs = [names[i] for i in range(n) if not engine.binding_is_input(i)]
        self._index = {name: engine.get_binding_index(name) for name in names}
        self._dtypes = {name: _np_dtype(trt, engine.get_binding_dtype(self._index[name])) for name in names}
        self._ptrs = [0] * n

    def dtype(self, name: str) -> np.dtype:
        return self._dtypes[name]

    def engine_shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.engine.get_binding_shape(self._index[name]))

    def profile_shapes(self, name: str) -> list[tuple[int, ...]]:
        return [tuple(int(d) for d in s) for s in self.engine.get_profile_shape(0, self._index[name])]

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        return self.context.set_binding_shape(self._index[name], shape) is not False

    def output_shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.context.get_binding_shape(self._index[name]))

    def bind(self, name: str, ptr: int) -> None:
        self._ptrs[self._index[name]] = int(ptr)

    def execute(self, stream_handle: int) -> bool:
        return self.context.execute_async_v2(bindings=list(self._ptrs), stream_handle=stream_handle) is not False


def _engine_io(trt: Any, engine: Any, context: Any) -> _TensorIO | _BindingIO:
    """The version dispatch: named tensors where the engine has them (8.5+), else bindings."""
    if hasattr(engine, "num_io_tensors") and hasattr(context, "execute_async_v3"):
        return _TensorIO(trt, engine, context)
    return _BindingIO(trt, engine, context)


# --------------------------------------------------------------------------- #
#                                   runner                                    #
# --------------------------------------------------------------------------- #
class TensorRTRunner(BaseRunner):
    """Runs one TensorRT engine of a bundle.

    Args:
        engine_path: the engine file (the bundle's `engines[i].file`).
        manifest_entry: its manifest entry (`runtime.manifest.EngineEntry` or its dict):
            TensorRT version, GPU, compute capability, precision, profile, dla_core, ...
        verify: check the file's SHA-256 against the entry before loading.

    Runs on CUDA device 0 of those visible (select another with CUDA_VISIBLE_DEVICES).
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, manifest_entry: Any, verify: bool = True) -> None:
        super().__init__()
        self.engine_path = Path(engine_path)
        self.entry = as_entry(manifest_entry)
        self.profile = self.entry.profile
        dim = self.entry.extra.get("input_dim")
        self.input_dim = int(dim) if dim else None
        self.precision = self.entry.precision
        self.dla_core = self.entry.dla_core
        self.verify = verify
        self._state: dict[str, Any] | None = None

    @property
    def what(self) -> str:
        return f"the engine {self.engine_path.name}"

    def describe(self) -> str:
        p = self.profile
        return (f"{self.engine_path.name} ({self.precision}), T {p.min_t}..{p.max_t}, batch "
                f"{p.smallest_batch}..{p.max_batch}")

    def activate_impl(self) -> None:
        """Check compatibility, deserialize the engine, allocate buffers at the profile maxima."""
        trt = import_tensorrt()
        if not self.engine_path.is_file():
            raise BundleError(f"{self.engine_path}: engine file missing; re-export the bundle or run "
                              "with --backend onnxruntime")
        devices = cuda_devices()
        if not devices:
            raise BackendUnavailable("no CUDA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES); "
                                     "run with --backend onnxruntime")
        gpu = devices[0]
        check_engine_compatible(self.entry, trt.__version__, gpu["name"], gpu["compute_capability"])
        data = self.engine_path.read_bytes()
        if self.verify and sha256_bytes(data) != self.entry.sha256:
            raise BundleError(f"{self.engine_path}: checksum does not match the manifest: the engine was "
                              "modified or damaged; re-export the bundle")
        cuda = cuda_memory_api()
        state: dict[str, Any] = {"cuda": cuda, "buffers": {}, "stream": None}
        try:
            logger = trt.Logger(trt.Logger.WARNING)
            runtime = trt_import.start(trt, trt.Runtime, logger, RUNTIME_FALLBACK)
            if self.entry.extra.get("version_compatible") and hasattr(runtime, "engine_host_code_allowed"):
                runtime.engine_host_code_allowed = True  # the plan embeds its lean runtime
            if self.dla_core is not None:
                runtime.DLA_core = int(self.dla_core)
            engine = runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise BundleError(f"{self.engine_path}: TensorRT {trt.__version__} could not deserialize "
                                  "the engine (see the TensorRT log above); rebuild it with `hamnet export "
                                  "... --trt` on this machine or run with --backend onnxruntime")
            context = engine.create_execution_context()
            if context is None:
                raise BackendUnavailable(f"{self.engine_path}: TensorRT could not create an execution "
                                         "context (out of GPU memory?); close other GPU programs or run "
                                         "with --backend onnxruntime")
            state.update(trt=trt, logger=logger, runtime=runtime, engine=engine, context=context)
            io = _engine_io(trt, engine, context)
            state["io"] = io
            self._bind_io(state, io)
            state["stream"] = cuda.stream_create()
        except BaseException:
            self._release(state)
            raise
        self._state = state

    def _bind_io(self, state: dict[str, Any], io: _TensorIO | _BindingIO) -> None:
        if len(io.inputs) != 1 or len(io.outputs) != 2:
            raise BundleError(f"{self.engine_path}: expected 1 input and 2 outputs (cas, attention), the "
                              f"engine has {io.inputs} and {io.outputs}; re-export the bundle")
        inp = io.inputs[0]
        mins, _opts, maxs = io.profile_shapes(inp)
        if len(maxs) != 3:
            raise BundleError(f"{self.engine_path}: input {inp!r} has shape rank {len(maxs)}, expected "
                              "[batch, T, D]; re-export the bundle")
        dim = int(maxs[2])
        if self.input_dim is not None and self.input_dim != dim:
            raise BundleError(f"{self.engine_path}: the engine takes {dim}-D features but the manifest says "
                              f"{self.input_dim}; re-export the bundle")
        self.input_dim = dim
        # The engine's own profile is authoritative; the manifest copy must agree.
        p = self.profile
        engine_limits = (int(mins[1]), int(maxs[1]), int(mins[0]), int(maxs[0]))
        if engine_limits != (p.min_t, p.max_t, p.smallest_batch, p.max_batch):
            raise BundleError(f"{self.engine_path}: the engine's profile (T {mins[1]}..{maxs[1]}, batch "
                              f"{mins[0]}..{maxs[0]}) differs from the manifest's (T {p.min_t}.."
                              f"{p.max_t}, batch {p.smallest_batch}..{p.max_batch}); re-export the bundle")
        outputs = list(io.outputs)
        if set(outputs) >= {"cas", "attention"}:
            outputs = ["cas", "attention"]
        state["input"], state["outputs"] = inp, outputs
        if io.dtype(inp) != np.float32:
            raise BundleError(f"{self.engine_path}: input {inp!r} is {io.dtype(inp)}, expected float32; "
                              "rebuild the engine from the bundle's ONNX file")
        # Size the buffers for the largest shape of the profile.
        if not io.set_input_shape(inp, tuple(int(d) for d in maxs)):
            raise BundleError(f"{self.engine_path}: TensorRT refused the profile's own maximum shape "
                              f"{tuple(maxs)}; re-export the bundle")
        cuda = state["cuda"]
        sizes = {inp: int(np.prod(maxs)) * io.dtype(inp).itemsize}
        for name in outputs:
            shape = io.output_shape(name)
            if any(d < 0 for d in shape) or len(shape) != 3:
                raise BundleError(f"{self.engine_path}: output {name!r} has shape {shape} at the maximum "
                                  "input shape, expected [batch, T, channels]; re-export the bundle")
            sizes[name] = int(np.prod(shape)) * io.dtype(name).itemsize
        for name, nbytes in sizes.items():
            state["buffers"][name] = cuda.malloc(nbytes)
            io.bind(name, state["buffers"][name])

    def _release(self, state: dict[str, Any]) -> None:
        cuda = state.get("cuda")
        if cuda is not None:
            if state.get("stream") is not None:
                with contextlib.suppress(Exception):
                    cuda.synchronize(state["stream"])
                cuda.stream_destroy(state["stream"])
            for ptr in state.get("buffers", {}).values():
                cuda.free(ptr)
        # Drop TensorRT objects context first, then engine, then runtime.
        for key in ("io", "context", "engine", "runtime"):
            state.pop(key, None)
        state.clear()

    def deactivate_impl(self) -> None:
        """Free device buffers, the stream, the context and the engine."""
        state, self._state = self._state, None
        if state is not None:
            self._release(state)

    def check_shape(self, batch: int, T: int) -> None:
        """Raise ShapeOutsideProfile unless [batch, T, D] fits the engine's profile."""
        self.profile.require(batch, T, self.what)

    def infer_impl(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch, T, dim = (int(s) for s in x.shape)
        run_batch = max(batch, self.profile.smallest_batch)
        if run_batch > batch:  # static-batch (DLA) engine: pad with independent zero rows
            x = np.concatenate([x, np.zeros((run_batch - batch, T, dim), np.float32)], axis=0)
        st = self._state
        assert st is not None
        io, cuda, stream = st["io"], st["cuda"], st["stream"]
        if not io.set_input_shape(st["input"], (run_batch, T, dim)):
            raise DataError(f"TensorRT refused input shape {(run_batch, T, dim)} for {self.engine_path.name} "
                            f"({self.describe()}); split the video into chunks")
        cuda.h2d_async(st["buffers"][st["input"]], x, x.nbytes, stream)
        hosts = [np.empty(io.output_shape(name), dtype=io.dtype(name)) for name in st["outputs"]]
        if not io.execute(cuda.stream_handle(stream)):
            cuda.synchronize(stream)
            raise BackendUnavailable(f"TensorRT failed to run {self.engine_path.name} (see the TensorRT log "
                                     "above); run with --backend onnxruntime")
        for name, host in zip(st["outputs"], hosts, strict=True):
            cuda.d2h_async(host, st["buffers"][name], host.nbytes, stream)
        cuda.synchronize(stream)
        cas, attention = (h[:batch] for h in hosts)
        return cas, attention
