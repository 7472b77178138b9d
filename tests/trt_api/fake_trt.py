"""A fake `tensorrt` module (and CUDA memory helper) for the builder and runner tests on
machines without TensorRT or a GPU.

It is held to the real bindings: every enum value comes from `snapshot.json`, which is
taken from the real TensorRT 8.6 / 10.x / 11.x modules (`update_snapshot.py`; the
conformance test fails when it no longer matches them), and every class keeps only the
names the real class of that major has (the snapshot lists them), so on 11.x there is no
`BuilderFlag.FP16`, no calibrator, no `set_calibration_profile`, and 8.6's parser errors
have no `node_name`. Setting an attribute the real class lacks fails, as on a pybind11
object. Method parameters carry the real names (checked by the conformance test).
What the fake computes is arbitrary but fixed (`fake_forward`).
"""

from __future__ import annotations

import ctypes
import json
import types
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from tests.trt_api.fake_gpu import H100, ORIN, FakeCuda, entry, trt_options

__all__ = ["H100", "ORIN", "FakeCuda", "entry", "fake_forward", "make_fake_trt", "trt_options"]

SNAPSHOT = Path(__file__).with_name("snapshot.json")
FAKE_ENUMS = ("NetworkDefinitionCreationFlag", "BuilderFlag", "MemoryPoolType", "DeviceType", "TensorIOMode",
              "HardwareCompatibilityLevel", "DataType", "ILogger.Severity")



def snapshot_for(version: str) -> dict[str, Any]:
    """The snapshot of the real module with `version`'s major (that exact version if held)."""
    data = json.loads(SNAPSHOT.read_text())
    if version in data:
        return data[version]
    same = [v for v in data if v.split(".")[0] == version.split(".")[0]]
    if not same:
        raise KeyError(f"no TensorRT {version.split('.')[0]}.x in {SNAPSHOT.name}; add it with update_snapshot.py")
    return data[same[0]]


# =========================================================================== #
#                     fakes of the TensorRT Python API                        #
# =========================================================================== #
class _Member(int):
    def __new__(cls, enum: str, name: str, value: int) -> _Member:
        obj = int.__new__(cls, value)
        obj.label, obj.enum = name, enum
        return obj

    def __repr__(self) -> str:
        return self.label


class _Enum:
    def __init__(self, name: str, members: dict[str, int]) -> None:
        self.__members__ = {k: _Member(name, k, v) for k, v in members.items()}
        for k, v in self.__members__.items():
            setattr(self, k, v)


class _Strict:
    """Like a pybind11 object: setting a name its class lacks is an AttributeError."""

    real = ""

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and not hasattr(type(self), name):
            raise AttributeError(f"'tensorrt.{self.real}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)


def fake_forward(x: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """What the fake engine computes: any fixed function of the input will do."""
    idx = np.arange(channels) % x.shape[2]
    cas = (x[:, :, idx] * 2.0 + np.arange(channels)).astype(np.float32)
    att = (1.0 / (1.0 + np.exp(-x[:, :, :1]))).astype(np.float32)
    return np.ascontiguousarray(cas), np.ascontiguousarray(att)


def fake_classes(trt: types.ModuleType, version: str, dla_cores: int = 0) -> dict[str, type]:
    """The fake classes of `trt`, by the real class name they stand for (not yet pruned)."""

    class Logger(_Strict):
        real = "Logger"

        def __init__(self, min_severity: int = 2) -> None:
            self._severity = min_severity

    class ITensor(_Strict):
        real = "ITensor"
        name = ""
        shape: tuple[int, ...] = ()

        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class INetworkDefinition(_Strict):
        real = "INetworkDefinition"

        def __init__(self, flags: int) -> None:
            self._flags = flags
            self._inputs: list[ITensor] = []
            self._outputs: list[ITensor] = []
            self._source: dict[str, Any] = {}

        num_inputs = property(lambda self: len(self._inputs))
        num_outputs = property(lambda self: len(self._outputs))

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

        def get_output(self, index: int) -> ITensor:
            return self._outputs[index]

    class ParserError(_Strict):
        real = "ParserError"

        def __init__(self, node: int, name: str, op: str, desc: str) -> None:
            self._v = (node, name, op, desc)

        def node(self) -> int:
            return self._v[0]

        def node_name(self) -> str:
            return self._v[1]

        def node_operator(self) -> str:
            return self._v[2]

        def desc(self) -> str:
            return self._v[3]

    class OnnxParser(_Strict):
        real = "OnnxParser"

        def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
            self._network, self._errors = network, []

        def parse_from_file(self, model: str) -> bool:
            import onnx

            proto = onnx.load(model)
            if any(n.op_type == "Unsupported" for n in proto.graph.node):
                self._errors = [ParserError(i, n.name, n.op_type, f"No importer registered for op: {n.op_type}")
                                for i, n in enumerate(proto.graph.node) if n.op_type == "Unsupported"]
                return False

            def dims(vi: Any) -> tuple[int, ...]:
                return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)

            net = self._network
            net._inputs = [ITensor(vi.name, dims(vi)) for vi in proto.graph.input]
            net._outputs = [ITensor(vi.name, dims(vi)) for vi in proto.graph.output]
            net._source = {"path": model, "ops": dict(Counter(n.op_type for n in proto.graph.node)),
                           "init_types": sorted({i.data_type for i in proto.graph.initializer})}
            return True

        num_errors = property(lambda self: len(self._errors))

        def get_error(self, index: int) -> ParserError:
            return self._errors[index]

    class IOptimizationProfile(_Strict):
        real = "IOptimizationProfile"

        def __init__(self) -> None:
            self._shapes: dict[str, list[tuple[int, ...]]] = {}

        def set_shape(self, input: str, min: tuple, opt: tuple, max: tuple) -> None:
            self._shapes[input] = [tuple(min), tuple(opt), tuple(max)]

    class ITimingCache(_Strict):
        real = "ITimingCache"

        def __init__(self, blob: bytes) -> None:
            self._blob = bytes(blob)

        def serialize(self) -> bytes:
            return self._blob + b"+timed"

    class IBuilderConfig(_Strict):
        real = "IBuilderConfig"
        default_device_type = trt.DeviceType.GPU
        DLA_core = -1
        hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE
        int8_calibrator = None
        max_workspace_size = 0

        def __init__(self) -> None:
            self._flags: list[str] = []
            self._profiles: list[IOptimizationProfile] = []
            self._pool: dict[str, int] = {}
            self._cache: ITimingCache | None = None
            self._calib_profile: IOptimizationProfile | None = None

        def set_flag(self, flag: _Member) -> None:
            self._flags.append(flag.label)

        def set_memory_pool_limit(self, pool: _Member, pool_size: int) -> None:
            self._pool[pool.label] = pool_size

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
            return ITimingCache(serialized_timing_cache)

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            assert ignore_mismatch is False
            if cache._blob.startswith(b"other-gpu"):
                return False
            self._cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self._cache

        def set_calibration_profile(self, profile: IOptimizationProfile) -> None:
            self._calib_profile = profile

    class Builder(_Strict):
        real = "Builder"
        num_DLA_cores = dla_cores
        platform_has_fast_fp16 = True

        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes:
            calib = getattr(config, "int8_calibrator", None)
            calibration = None
            if calib is not None:
                cached = calib.read_calibration_cache()
                if cached is None:
                    shape = config._calib_profile._shapes["features"][1]
                    n = 0
                    while (ptrs := calib.get_batch(["features"])) is not None:
                        assert len(ptrs) == 1 and ptrs[0] != 0
                        n += 1
                    calib.write_calibration_cache(b"scales:%d" % n)
                    calibration = {"batches": n, "shape": shape}
                else:
                    calibration = {"from_cache": cached.decode()}
            prof = config._profiles[0]._shapes["features"]
            cas = next(o for o in network._outputs if o.name == "cas")
            desc = {"version": version, "network_flags": network._flags, "flags": config._flags,
                    "pool": config._pool, "profile": prof, "source": network._source,
                    "channels": cas.shape[2], "calibration": calibration,
                    "device": repr(config.default_device_type), "dla_core": config.DLA_core,
                    "hw_level": repr(config.hardware_compatibility_level)}
            trt.calls.append(desc)
            return b"FAKEPLAN" + json.dumps(desc).encode()

    class IInt8EntropyCalibrator2:  # subclassed by the project: a plain class, like pybind's trampoline
        real = "IInt8EntropyCalibrator2"

        def __init__(self) -> None:
            self.base_initialised = True

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            return None

        def read_calibration_cache(self) -> bytes | None:
            return None

        def write_calibration_cache(self, cache: bytes) -> None:
            pass

    # ---------------------------------------------------------------- runtime
    class IExecutionContext(_Strict):
        real = "IExecutionContext"

        def __init__(self, engine: ICudaEngine) -> None:
            self._engine = engine
            self._shape: tuple[int, ...] | None = None
            self._addr: dict[str, int] = {}
            self.executions = 0

        executions = 0  # test instrumentation (not a TensorRT name; see TEST_ONLY)

        def _in_profile(self, shape: tuple[int, ...]) -> bool:
            mn, _, mx = self._engine._prof
            return all(a <= s <= b for a, s, b in zip(mn, shape, mx, strict=True))

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            return self._set_shape(name, shape)

        def _set_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            assert name == "features"
            if not self._in_profile(tuple(shape)):
                trt.calls.append(("refused", tuple(shape)))
                return False
            self._shape = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self._get_shape(name)

        def _get_shape(self, name: str) -> tuple[int, ...]:
            b, t, _ = self._shape
            return {"features": self._shape, "cas": (b, t, self._engine._channels), "attention": (b, t, 1)}[name]

        def set_tensor_address(self, name: str, memory: int) -> None:
            self._addr[name] = memory

        def _run(self, addr: dict[str, int]) -> bool:
            b, t, d = self._shape
            x = np.ctypeslib.as_array((ctypes.c_float * (b * t * d)).from_address(addr["features"])).reshape(b, t, d)
            cas, att = fake_forward(x, self._engine._channels)  # contiguous, and alive during the copies
            ctypes.memmove(addr["cas"], cas.ctypes.data, cas.nbytes)
            ctypes.memmove(addr["attention"], att.ctypes.data, att.nbytes)
            self.executions += 1
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert stream_handle == 1234
            return self._run(self._addr)

        # bindings API (8.0-8.4)
        def set_binding_shape(self, binding: int, shape: tuple[int, ...]) -> bool:
            return self._set_shape(self._engine._names[binding], shape)

        def get_binding_shape(self, binding: int) -> tuple[int, ...]:
            return self._get_shape(self._engine._names[binding])

        def execute_async_v2(self, bindings: list[int], stream_handle: int) -> bool:
            assert stream_handle == 1234
            return self._run(dict(zip(self._engine._names, bindings, strict=True)))

    class ICudaEngine(_Strict):
        real = "ICudaEngine"
        _names = ["features", "cas", "attention"]
        num_io_tensors = 3
        num_bindings = 3

        def __init__(self, desc: dict[str, Any]) -> None:
            self._prof = [tuple(s) for s in desc["profile"]]
            self._channels = desc["channels"]
            self._dim = self._prof[0][2]

        def create_execution_context(self) -> IExecutionContext:
            ctx = IExecutionContext(self)
            trt.contexts.append(ctx)
            return ctx

        def _shape(self, name: str) -> tuple[int, ...]:
            return {"features": (-1, -1, self._dim), "cas": (-1, -1, self._channels),
                    "attention": (-1, -1, 1)}[name]

        def get_tensor_name(self, index: int) -> str:
            return self._names[index]

        def get_tensor_mode(self, name: str) -> _Member:
            return trt.TensorIOMode.INPUT if name == "features" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> _Member:
            return trt.float32

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self._shape(name)

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
            assert name == "features" and profile_index == 0
            return self._prof

        def get_binding_name(self, index: int) -> str:
            return self._names[index]

        def get_binding_index(self, name: str) -> int:
            return self._names.index(name)

        def binding_is_input(self, index: int) -> bool:
            return index == 0

        def get_binding_dtype(self, index: int) -> _Member:
            return trt.float32

        def get_binding_shape(self, index: int) -> tuple[int, ...]:
            return self._shape(self._names[index])

        def get_profile_shape(self, profile_index: int, binding: int) -> list[tuple[int, ...]]:
            assert profile_index == 0 and binding == 0
            return self._prof

    class Runtime(_Strict):
        real = "Runtime"
        DLA_core = -1
        engine_host_code_allowed = False

        def __init__(self, logger: Logger) -> None:
            trt.runtimes.append(self)

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
            if not serialized_engine.startswith(b"FAKEPLAN"):
                return None
            return ICudaEngine(json.loads(serialized_engine[len(b"FAKEPLAN"):]))

    classes = [Logger, ITensor, INetworkDefinition, ParserError, OnnxParser, IOptimizationProfile, ITimingCache,
               IBuilderConfig, Builder, IInt8EntropyCalibrator2, IExecutionContext, ICudaEngine, Runtime]
    return {c.real: c for c in classes}


TEST_ONLY = {"IExecutionContext": {"executions"}, "IInt8EntropyCalibrator2": {"base_initialised"}}
"""Public names the fakes carry for the tests' sake, not TensorRT's."""


def declared(cls: type) -> list[str]:
    """The TensorRT names a fake class declares (its public class attributes)."""
    skip = TEST_ONLY.get(cls.real, set()) | {"real"}
    return sorted(n for n in vars(cls) if not n.startswith("_") and n not in skip)


def make_fake_trt(version: str, dla_cores: int = 0, bindings_api: bool = False,
                  snapshot: dict[str, Any] | None = None) -> types.ModuleType:
    """A fake `tensorrt` of `version`, with the real constants and names of its major
    (`snapshot`: use these instead of snapshot.json's; without "members", nothing is
    pruned). `bindings_api`: an 8.0-8.4 engine, without the named-tensor API."""
    snap = snapshot if snapshot is not None else snapshot_for(version)
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls, trt.contexts, trt.runtimes = [], [], []
    enums = snap["enums"]
    for dotted in FAKE_ENUMS:
        if enums.get(dotted) is not None and "." not in dotted:
            setattr(trt, dotted, _Enum(dotted, enums[dotted]))
    trt.float32 = trt.DataType.FLOAT
    trt.nptype = lambda dt: {int(trt.DataType.FLOAT): np.float32, int(trt.DataType.HALF): np.float16}[int(dt)]
    classes = fake_classes(trt, version, dla_cores)
    severity = enums["ILogger.Severity"]
    for name, value in severity.items():
        setattr(classes["Logger"], name, _Member("ILogger.Severity", name, value))
    members = snap.get("members")
    for real, cls in classes.items():
        if members is not None:
            if members.get(real) is None:
                continue  # the class itself is absent in this major: not put on the module
            for name in declared(cls):
                if name not in members[real]:
                    delattr(cls, name)
        setattr(trt, real, cls)
    if bindings_api:  # 8.0-8.4: the engine has the bindings API only
        for name in ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype",
                     "get_tensor_shape", "get_tensor_profile_shape"):
            if hasattr(classes["ICudaEngine"], name):
                delattr(classes["ICudaEngine"], name)
        for name in ("execute_async_v3", "set_input_shape", "set_tensor_address"):
            if hasattr(classes["IExecutionContext"], name):
                delattr(classes["IExecutionContext"], name)
    return trt
