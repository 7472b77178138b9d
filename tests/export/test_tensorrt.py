"""TensorRT engines: compatibility rules, naming, profiles, precision paths, builder and
runner plumbing.

Without TensorRT or a GPU (CI, this machine) the builder and the runner are exercised
against small fakes of the documented TensorRT 8.x / 10.x / 11.x Python APIs and a
NumPy-backed CUDA memory helper: this checks which API each version path calls and
the data flow (shapes, buffers, calibration, caches, manifest entries), not TensorRT
itself. The tests at the end build and run real engines and are skipped unless
TensorRT and a CUDA GPU are present.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hamnet_deploy.runtime.backends.tensorrt as trt_backend
from hamnet_deploy.export import tensorrt_build as tb
from hamnet_deploy.export import trt_precision
from hamnet_deploy.export.trt_calibrator import (
    calibration_batches,
    load_calibration_features,
    make_entropy_calibrator,
)
from hamnet_deploy.export.trt_precision import convert_model_fp16, precision_path
from hamnet_deploy.runtime import devices, trt_compat
from hamnet_deploy.runtime.backends.tensorrt import TensorRTRunner
from hamnet_deploy.runtime.errors import BackendUnavailable, BundleError, ConfigError, DataError
from hamnet_deploy.runtime.profile import ShapeOutsideProfile
from hamnet_deploy.runtime.trt_compat import (
    check_engine_compatible,
    choose_engine,
    engine_file_name,
    parse_cc,
    parse_version,
    profile_allows,
)

D, C, ATT = 16, 3, 8
H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
        "memory_bytes": 80 << 30, "source": "test"}
ORIN = {"index": 0, "name": "Orin", "compute_capability": "8.7", "memory_bytes": 32 << 30, "source": "test"}


def entry(**kw: Any) -> dict[str, Any]:
    base = {"file": "e.engine", "sha256": "0" * 64, "precision": "fp16", "tensorrt_version": "10.3.0.26",
            "gpu_name": "Orin", "compute_capability": "8.7",
            "profile": {"min_t": 1, "opt_t": 512, "max_t": 4096, "min_batch": 1, "max_batch": 4},
            "dla_core": None, "version_compatible": False, "hardware_compatible": False}
    base.update(kw)
    return base


# =========================================================================== #
#                         versions, naming, profiles                          #
# =========================================================================== #
def test_parse_version():
    assert parse_version("10.3.0.26") == (10, 3, 0, 26)
    assert parse_version("8.6.1.post1") == (8, 6, 1)
    assert parse_version("10.0.0b6") == (10, 0, 0)
    assert parse_version(" 11.4 ") == (11, 4)
    assert trt_compat.trt_major("8.5.2.2") == 8
    assert trt_compat.short_version("10.3.0.26") == "10.3.0"
    with pytest.raises(ValueError):
        parse_version("")
    with pytest.raises(ValueError):
        parse_version("abc")


def test_parse_cc_forms():
    assert parse_cc("8.7") == parse_cc(8.7) == parse_cc("sm_87") == parse_cc("sm87") == (8, 7)
    assert parse_cc("9.0") == parse_cc(9) == parse_cc("sm_90") == (9, 0)
    assert parse_cc("sm_120") == parse_cc("12.0") == (12, 0)
    assert trt_compat.format_cc("sm_100") == "10.0"
    with pytest.raises(ValueError):
        parse_cc("hopper")
    with pytest.raises(ValueError):
        parse_cc(True)


def test_engine_file_name():
    assert (engine_file_name("NVIDIA H100 80GB HBM3", "9.0", "10.3.0.26", "fp16")
            == "hamnet_h100-80gb-hbm3_sm90_trt10.3.0_fp16.engine")
    assert (engine_file_name("Orin", "8.7", "8.6.2.3", "int8", dla_core=1)
            == "hamnet_orin_sm87_trt8.6.2_int8_dla1.engine")
    assert engine_file_name("NVIDIA GeForce RTX 4090", 8.9, "11.4.0", "fp32").startswith("hamnet_rtx-4090_sm89_")
    assert engine_file_name("", "8.0", "10.0.1", "fp32") == "hamnet_gpu_sm80_trt10.0.1_fp32.engine"
    with pytest.raises(ConfigError):
        engine_file_name("Orin", "8.7", "10.3", "bf16")


def test_profile_allows_and_limits():
    e = entry()
    assert profile_allows(e, 1, 1) and profile_allows(e, 4, 4096) and profile_allows(e, 2, 333)
    assert not profile_allows(e, 5, 100)
    assert not profile_allows(e, 1, 4097)
    assert not profile_allows(e, 0, 100)
    lo = entry(profile={"min_t": 8, "opt_t": 64, "max_t": 128, "max_batch": 2})
    assert not profile_allows(lo, 1, 7) and profile_allows(lo, 1, 8)
    assert trt_compat.profile_of(lo).smallest_batch == 1
    # DLA (static shapes): batch fixed at max_batch, smaller batches are padded by the runner
    dla = entry(dla_core=0, profile={"min_t": 256, "opt_t": 256, "max_t": 256, "max_batch": 2})
    assert trt_compat.profile_of(dla).smallest_batch == 2
    assert profile_allows(dla, 1, 256) and not profile_allows(dla, 1, 255)
    with pytest.raises(ShapeOutsideProfile, match="split the video into chunks of at most 256"):
        trt_compat.check_profile(dla, 1, 300)
    assert issubclass(ShapeOutsideProfile, DataError)
    with pytest.raises(BundleError):
        trt_compat.profile_of(entry(profile={"min_t": 9, "opt_t": 4, "max_t": 8, "max_batch": 1}))
    with pytest.raises(BundleError):
        trt_compat.profile_of(entry(profile=None))


# =========================================================================== #
#                              compatibility                                  #
# =========================================================================== #
def test_same_version_and_arch_ok():
    check_engine_compatible(entry(), "10.3.0.26", "Orin", "8.7")
    check_engine_compatible(entry(), "10.3.0", "Orin", "sm_87")  # metadata without the build number
    # another GPU of the same architecture runs it (TensorRT warns, it works)
    check_engine_compatible(entry(gpu_name="NVIDIA A10", compute_capability="8.6"), "10.3.0.26",
                            "NVIDIA RTX A6000", "8.6")


def test_other_version_refused():
    with pytest.raises(BundleError) as err:
        check_engine_compatible(entry(file="hamnet_orin_sm87_trt10.3.0_fp16.engine"), "10.8.0.43",
                                "NVIDIA H100", "9.0")
    msg = str(err.value)
    assert "engine hamnet_orin_sm87_trt10.3.0_fp16.engine was built for TensorRT 10.3 on sm_87 (Orin)" in msg
    assert "this machine has TensorRT 10.8 on sm_90 (NVIDIA H100)" in msg
    assert "hamnet export" in msg and "--backend onnxruntime" in msg
    assert "\n" not in msg
    # patch-level difference: shown with enough digits to tell them apart
    with pytest.raises(BundleError, match=r"TensorRT 10\.3\.0\.26 .*TensorRT 10\.3\.0\.30"):
        check_engine_compatible(entry(), "10.3.0.30", "Orin", "8.7")


def test_other_arch_refused():
    with pytest.raises(BundleError, match="GPU architecture"):
        check_engine_compatible(entry(), "10.3.0.26", "NVIDIA H100", "9.0")


def test_version_compatible_rules():
    vc = entry(version_compatible=True, tensorrt_version="10.3.0.26")
    check_engine_compatible(vc, "10.8.0.43", "Orin", "8.7")  # later TensorRT: ok
    check_engine_compatible(vc, "11.4.0", "Orin", "8.7")  # later major too (documented 10 -> 11)
    with pytest.raises(BundleError, match="not an older one"):
        check_engine_compatible(vc, "10.1.0", "Orin", "8.7")
    old = entry(version_compatible=True, tensorrt_version="8.5.2.2")
    with pytest.raises(BundleError, match="8.6 or newer"):
        check_engine_compatible(old, "8.6.1", "Orin", "8.7")
    # version compatibility does not lift the architecture tie
    with pytest.raises(BundleError, match="GPU architecture"):
        check_engine_compatible(vc, "10.8.0", "NVIDIA H100", "9.0")


def test_hardware_compatible_rules():
    hc = entry(hardware_compatible=True, gpu_name="NVIDIA A100", compute_capability="8.0")
    check_engine_compatible(hc, "10.3.0.26", "NVIDIA H100", "9.0")
    check_engine_compatible(hc, "10.3.0.26", "NVIDIA RTX 4090", "8.9")
    with pytest.raises(BundleError, match="sm_80"):
        check_engine_compatible(hc, "10.3.0.26", "Tesla T4", "7.5")
    with pytest.raises(BundleError, match="Jetson"):
        check_engine_compatible(hc, "10.3.0.26", "Orin", "8.7")
    with pytest.raises(BundleError, match="TensorRT version"):
        check_engine_compatible(hc, "10.8.0", "NVIDIA H100", "9.0")
    both = dict(hc, version_compatible=True)
    check_engine_compatible(both, "10.8.0", "NVIDIA H100", "9.0")
    with pytest.raises(BundleError, match="SoC"):
        check_engine_compatible(entry(dla_core=0, hardware_compatible=True), "10.3.0.26", "X", "9.0")
    with pytest.raises(BundleError, match="valid TensorRT version"):
        check_engine_compatible(entry(tensorrt_version="?"), "10.3.0", "Orin", "8.7")


def test_choose_engine():
    native = entry(file="native_fp32.engine", precision="fp32")
    fp16 = entry(file="native_fp16.engine", precision="fp16")
    int8 = entry(file="native_int8.engine", precision="int8")
    vc = entry(file="vc_fp16.engine", tensorrt_version="10.1.0", version_compatible=True)
    dla = entry(file="dla.engine", dla_core=0)
    other = entry(file="h100.engine", gpu_name="H100", compute_capability="9.0")
    entries = [other, vc, native, int8, fp16, dla]
    assert choose_engine(entries, "10.3.0.26", "Orin", "8.7")["file"] == "native_fp16.engine"
    assert choose_engine(entries, "10.3.0.26", "Orin", "8.7", precision="int8")["file"] == "native_int8.engine"
    assert choose_engine(entries, "10.3.0.26", "Orin", "8.7", dla=True)["file"] == "dla.engine"
    assert choose_engine([vc, native], "10.3.0.26", "Orin", "8.7", precision="fp16")["file"] == "vc_fp16.engine"
    assert choose_engine([dla], "10.3.0.26", "Orin", "8.7")["file"] == "dla.engine"
    assert choose_engine([dla], "10.3.0.26", "Orin", "8.7", dla=False) is None
    assert choose_engine(entries, "10.8.0", "Orin", "8.7")["file"] == "vc_fp16.engine"
    assert choose_engine(entries, "9.9", "X", "7.5") is None
    wide = entry(file="wide.engine", profile={"min_t": 1, "opt_t": 512, "max_t": 8192, "max_batch": 4})
    assert choose_engine([fp16, wide], "10.3.0.26", "Orin", "8.7")["file"] == "wide.engine"
    with pytest.raises(ConfigError):
        choose_engine(entries, "10.3.0", "Orin", "8.7", precision="fp8")


def test_compat_accepts_bundle_engine_entries():
    import hamnet_deploy.runtime.bundle as bundle
    raw = entry(file="a.engine", sha256="a" * 64, input_dim=D)
    obj = bundle.EngineEntry.from_dict(raw, "test")
    check_engine_compatible(obj, "10.3.0.26", "Orin", "8.7")
    assert profile_allows(obj, 4, 4096)
    assert choose_engine([obj], "10.3.0.26", "Orin", "8.7") is obj


# =========================================================================== #
#                        installed TensorRT / CUDA devices                    #
# =========================================================================== #
def test_installed_tensorrt_and_cuda_devices_never_raise():
    version = devices.installed_tensorrt()
    assert version is None or parse_version(version)
    found = devices.cuda_devices()
    assert isinstance(found, list)
    for dev in found:
        assert {"name", "compute_capability", "memory_bytes"} <= set(dev)


def test_installed_tensorrt_absent(monkeypatch):
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: None)
    assert devices.installed_tensorrt() is None


def _fake_cudart_module() -> types.ModuleType:
    rt = types.ModuleType("cuda.bindings.runtime")

    class Err(int):
        pass

    class Prop:
        name = b"NVIDIA H100 80GB HBM3\x00\x00junk"
        major, minor, totalGlobalMem = 9, 0, 85_000_000_000

    rt.cudaGetDeviceCount = lambda: (Err(0), 1)
    rt.cudaGetDeviceProperties = lambda i: (Err(0), Prop())
    return rt


def test_cuda_devices_through_cuda_python(monkeypatch):
    rt = _fake_cudart_module()
    pkg, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    bindings.runtime = rt
    pkg.bindings = bindings
    monkeypatch.setitem(sys.modules, "cuda", pkg)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    found = devices.cuda_devices()
    assert found == [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
                        "memory_bytes": 85_000_000_000, "source": "cuda-python"}]


def test_runtime_modules_import_without_torch_or_tensorrt():
    import subprocess

    code = ("import sys; import hamnet_deploy.runtime.trt_compat, hamnet_deploy.runtime.backends.tensorrt; "
            "bad = [m for m in ('torch', 'tensorrt', 'onnx') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    assert out.stdout.strip() == "[]"


# =========================================================================== #
#                            precision paths                                  #
# =========================================================================== #
def test_precision_path_dispatch():
    assert precision_path(8) == "builder_flags"
    assert precision_path(10) == "builder_flags"
    assert precision_path(11) == "graph"
    assert precision_path(12) == "graph"
    with pytest.raises(ConfigError):
        precision_path(7)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A small HamNet (D=16, C=3) exported as the deployment contract says."""
    import onnx  # noqa: F401
    import torch

    from hamnet_deploy.training.model import HamNet

    torch.manual_seed(0)
    net = HamNet(D, C, attention_dim=ATT).eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    axes = {"batch": 0, "T": 1}
    dyn = {k: {v: n for n, v in axes.items()} for k in ("features", "cas", "attention")}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(2, 8, D), str(path), input_names=["features"],
                          output_names=["cas", "attention"], dynamic_axes=dyn, opset_version=17,
                          dynamo=False)
    return path


def _ort_run(path: Path | str, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["cas", "attention"], {"features": x})


def test_fp16_graph_conversion_matches_fp32(tiny_onnx, tmp_path):
    import onnx
    out = trt_precision.convert_onnx_fp16(tiny_onnx, tmp_path / "fp16.onnx")
    model = onnx.load(str(out))
    FLOAT, HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    # inputs and outputs stay float32
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [FLOAT, FLOAT]
    assert {o.name for o in model.graph.output} == {"cas", "attention"}
    # weights are float16
    assert {i.data_type for i in model.graph.initializer} == {HALF}
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["Conv"] == 6 and ops["Sigmoid"] == 1
    # the Sigmoid runs in float32: its input is a Cast to float, and attention needs no cast back
    producers = {o: n for n in model.graph.node for o in n.output}
    sigmoid = next(n for n in model.graph.node if n.op_type == "Sigmoid")
    cast = producers[sigmoid.input[0]]
    assert cast.op_type == "Cast" and cast.attribute[0].i == FLOAT
    assert producers["attention"].op_type == "Transpose"
    assert producers["cas"].op_type == "Cast"
    onnx.checker.check_model(model, full_check=True)
    # numerics: several T (smallest, odd, longer) and batch sizes, within FP16 tolerance
    rng = np.random.default_rng(1)
    for shape in ((1, 1, D), (2, 7, D), (3, 40, D)):
        x = rng.standard_normal(shape).astype(np.float32)
        ref_cas, ref_att = _ort_run(tiny_onnx, x)
        cas, att = _ort_run(out, x)
        assert cas.dtype == np.float32 and att.dtype == np.float32
        assert cas.shape == ref_cas.shape and att.shape == ref_att.shape
        np.testing.assert_allclose(cas, ref_cas, rtol=1e-2, atol=1e-2 * max(1.0, np.abs(ref_cas).max()))
        np.testing.assert_allclose(att, ref_att, atol=2e-3)


def test_fp16_conversion_keep_nodes_and_saturation(tiny_onnx):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(tiny_onnx))
    # an out-of-range weight saturates at the FP16 maximum instead of becoming inf
    w = next(i for i in model.graph.initializer if i.name == "classifier.5.weight")
    arr = numpy_helper.to_array(w).copy()
    arr.flat[0] = 1e6
    w.CopyFrom(numpy_helper.from_array(arr, w.name))
    last_conv = next(n.name for n in model.graph.node if "classifier.5" in n.name)
    conv = convert_model_fp16(model, keep_fp32_nodes=[last_conv])
    w16 = next(i for i in conv.graph.initializer if i.name == "classifier.5.weight")
    assert numpy_helper.to_array(w16).flat[0] == np.float16(65504)
    node = next(n for n in conv.graph.node if n.name == last_conv)
    producers = {o: n for n in conv.graph.node for o in n.output}
    # kept in fp32: its inputs come through Casts to float
    assert all(producers[i].op_type == "Cast" for i in node.input[1:] if i in producers)
    onnx.checker.check_model(conv)


def test_qdq_quantization_for_trt11(tiny_onnx, tmp_path):
    import onnx
    import onnxruntime.quantization  # noqa: F401
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((2, 32, D)).astype(np.float32) for _ in range(4)]
    out = trt_precision.quantize_onnx_qdq(tiny_onnx, tmp_path / "q.onnx", lambda: batches)
    model = onnx.load(str(out))
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["QuantizeLinear"] >= 6 and ops["DequantizeLinear"] >= 6
    assert ops["Sigmoid"] == 1
    # TensorRT: symmetric INT8 (zero point 0)
    zps = [numpy_helper.to_array(i) for i in model.graph.initializer if "zero_point" in i.name]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT]
    assert not list(tmp_path.glob("*.pre.onnx"))
    x = rng.standard_normal((2, 9, D)).astype(np.float32)
    ref_cas, ref_att = _ort_run(tiny_onnx, x)
    cas, att = _ort_run(out, x)
    assert cas.shape == ref_cas.shape and att.shape == ref_att.shape
    assert np.abs(cas - ref_cas).max() < 0.1 * np.abs(ref_cas).max()
    assert np.abs(att - ref_att).max() < 0.05
    with pytest.raises(ConfigError):
        trt_precision.quantize_onnx_qdq(tiny_onnx, tmp_path / "q2.onnx", [])


# =========================================================================== #
#                            calibration data                                 #
# =========================================================================== #
def test_calibration_batches_shapes():
    rng = np.random.default_rng(0)
    videos = [rng.standard_normal((t, 4)).astype(np.float32) for t in (5, 30, 12)]
    stream = np.concatenate(videos)
    out = calibration_batches(videos, chunk_t=8, batch=2)
    assert len(out) == 2 and all(b.shape == (2, 8, 4) and b.dtype == np.float32 for b in out)
    np.testing.assert_array_equal(out[0][0], stream[:8])  # videos joined end to end, in order
    np.testing.assert_array_equal(out[0][1], stream[8:16])
    capped = calibration_batches(videos, chunk_t=2, batch=3, max_chunks=6)
    assert len(capped) == 2 and capped[0].shape == (3, 2, 4)
    # fewer chunks than a batch: repeated; shorter than a chunk: tiled
    assert calibration_batches([videos[0]], chunk_t=4, batch=3)[0].shape == (3, 4, 4)
    assert calibration_batches([videos[0]], chunk_t=12, batch=1)[0].shape == (1, 12, 4)
    with pytest.raises(DataError):
        calibration_batches([], 4, 1)
    with pytest.raises(DataError):
        calibration_batches([np.zeros((4, 3)), np.zeros((4, 5))], 2, 1)


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> Path:
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset

    out = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(videos=6, dim=D, num_classes=C, seed=3, duration_median_s=30.0, duration_min_s=20.0,
                      duration_max_s=40.0, instance_median_s=3.0, instance_min_s=1.0, instance_max_s=6.0)
    generate_dataset(out, cfg, workers=1)
    return out


def test_load_calibration_features_train_split(synth_dataset):
    from hamnet_deploy.training.data import load_dataset

    feats = load_calibration_features(synth_dataset, feature_dim=D, max_videos=2)
    train = load_dataset(synth_dataset, subset="validation")
    assert len(feats) == 2 and all(f.shape[1] == D and f.dtype == np.float32 for f in feats)
    train_lengths = set(train.lengths.tolist())
    assert all(len(f) in train_lengths for f in feats)
    np.testing.assert_array_equal(feats[0], train.features[0])  # evenly spaced: first and last
    np.testing.assert_array_equal(feats[-1], train.features[-1])
    with pytest.raises(DataError):
        load_calibration_features(synth_dataset, feature_dim=D + 1)


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


# =========================================================================== #
#                     fakes of the TensorRT Python API                        #
# =========================================================================== #
class _Enum:
    def __init__(self, **members: int) -> None:
        for k, v in members.items():
            setattr(self, k, _Member(k, v))


class _Member(int):
    def __new__(cls, name: str, value: int) -> _Member:
        obj = int.__new__(cls, value)
        obj.label = name
        return obj

    def __repr__(self) -> str:
        return self.label


def make_fake_trt(version: str, dla_cores: int = 0, bindings_api: bool = False) -> types.ModuleType:
    """A minimal `tensorrt` module following the documented API of `version`'s major."""
    major = parse_version(version)[0]
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []

    class Logger:
        WARNING = 2

        def __init__(self, severity: int = 2) -> None:
            self.severity = severity

    trt.Logger = Logger
    flags = {"STRONGLY_TYPED": 1} if major >= 10 else {}
    if major < 11:
        flags["EXPLICIT_BATCH"] = 0
    trt.NetworkDefinitionCreationFlag = _Enum(**flags)
    bflags = {"GPU_FALLBACK": 3, "VERSION_COMPATIBLE": 13}
    if major < 11:
        bflags.update(FP16=0, INT8=1)
    trt.BuilderFlag = _Enum(**bflags)
    trt.MemoryPoolType = _Enum(WORKSPACE=0)
    trt.DeviceType = _Enum(GPU=0, DLA=1)
    trt.TensorIOMode = _Enum(NONE=0, INPUT=1, OUTPUT=2)
    trt.HardwareCompatibilityLevel = _Enum(NONE=0, AMPERE_PLUS=1)
    trt.float32 = _Member("FLOAT", 0)
    trt.nptype = lambda dt: {0: np.float32}[int(dt)]
    if major < 11:
        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                self.base_initialised = True

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Tensor] = []
            self.outputs: list[Tensor] = []
            self.source: dict[str, Any] = {}

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

        def get_output(self, i: int) -> Tensor:
            return self.outputs[i]

    class ParserError:
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

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network, self.errors = network, []

        def parse_from_file(self, path: str) -> bool:
            import onnx

            model = onnx.load(path)
            if any(n.op_type == "Unsupported" for n in model.graph.node):
                self.errors = [ParserError(i, n.name, n.op_type, f"No importer registered for op: {n.op_type}")
                               for i, n in enumerate(model.graph.node) if n.op_type == "Unsupported"]
                return False

            def dims(vi: Any) -> tuple[int, ...]:
                return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)

            self.network.inputs = [Tensor(vi.name, dims(vi)) for vi in model.graph.input]
            self.network.outputs = [Tensor(vi.name, dims(vi)) for vi in model.graph.output]
            self.network.source = {
                "path": path,
                "ops": dict(Counter(n.op_type for n in model.graph.node)),
                "init_types": sorted({i.data_type for i in model.graph.initializer}),
            }
            return True

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i: int) -> ParserError:
            return self.errors[i]

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, list[tuple[int, ...]]] = {}

        def set_shape(self, name: str, mn: tuple, opt: tuple, mx: tuple) -> None:
            self.shapes[name] = [tuple(mn), tuple(opt), tuple(mx)]

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = bytes(blob)

        def serialize(self) -> bytes:
            return self.blob + b"+timed"

    class Config:
        def __init__(self) -> None:
            self.flags: list[str] = []
            self.profiles: list[Profile] = []
            self.pool: dict[str, int] = {}
            self.cache: TimingCache | None = None
            self.calib_profile: Profile | None = None
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1
            self.hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE
            if major < 11:
                self.int8_calibrator = None

        def set_flag(self, flag: _Member) -> None:
            self.flags.append(flag.label)

        def set_memory_pool_limit(self, pool: _Member, nbytes: int) -> None:
            self.pool[pool.label] = nbytes

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, blob: bytes) -> TimingCache:
            return TimingCache(blob)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            assert ignore_mismatch is False
            if cache.blob.startswith(b"other-gpu"):
                return False
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return self.cache

        if major < 11:
            def set_calibration_profile(self, profile: Profile) -> None:
                self.calib_profile = profile

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.num_DLA_cores = dla_cores
            if major < 11:
                self.platform_has_fast_fp16 = True

        def create_network(self, flags: int = 0) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            calib = getattr(config, "int8_calibrator", None)
            calibration = None
            if calib is not None:
                cached = calib.read_calibration_cache()
                if cached is None:
                    shape = config.calib_profile.shapes["features"][1]
                    n = 0
                    while (ptrs := calib.get_batch(["features"])) is not None:
                        assert len(ptrs) == 1 and ptrs[0] != 0
                        n += 1
                    calib.write_calibration_cache(b"scales:%d" % n)
                    calibration = {"batches": n, "shape": shape}
                else:
                    calibration = {"from_cache": cached.decode()}
            prof = config.profiles[0].shapes["features"]
            cas = next(o for o in network.outputs if o.name == "cas")
            desc = {"version": version, "network_flags": network.flags, "flags": config.flags,
                    "pool": config.pool, "profile": prof, "source": network.source,
                    "channels": cas.shape[2], "calibration": calibration,
                    "device": repr(config.default_device_type), "dla_core": config.DLA_core,
                    "hw_level": repr(config.hardware_compatibility_level)}
            trt.calls.append(desc)
            return b"FAKEPLAN" + json.dumps(desc).encode()

    # ---------------------------------------------------------------- runtime
    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.shape: tuple[int, ...] | None = None
            self.addr: dict[str, int] = {}
            self.executions = 0

        def _in_profile(self, shape: tuple[int, ...]) -> bool:
            mn, _, mx = self.engine.prof
            return all(a <= s <= b for a, s, b in zip(mn, shape, mx, strict=True))

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            assert name == "features"
            if not self._in_profile(tuple(shape)):
                trt.calls.append(("refused", tuple(shape)))
                return False
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            b, t, _ = self.shape
            return {"features": self.shape, "cas": (b, t, self.engine.channels), "attention": (b, t, 1)}[name]

        def set_tensor_address(self, name: str, ptr: int) -> None:
            self.addr[name] = ptr

        def _run(self, addr: dict[str, int]) -> bool:
            b, t, d = self.shape
            x = np.ctypeslib.as_array((ctypes.c_float * (b * t * d)).from_address(addr["features"])).reshape(b, t, d)
            cas, att = fake_forward(x, self.engine.channels)  # contiguous, and alive during the copies
            ctypes.memmove(addr["cas"], cas.ctypes.data, cas.nbytes)
            ctypes.memmove(addr["attention"], att.ctypes.data, att.nbytes)
            self.executions += 1
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert stream_handle == 1234
            return self._run(self.addr)

        # bindings API (8.0-8.4)
        def set_binding_shape(self, index: int, shape: tuple[int, ...]) -> bool:
            return self.set_input_shape(self.engine.names[index], shape)

        def get_binding_shape(self, index: int) -> tuple[int, ...]:
            return self.get_tensor_shape(self.engine.names[index])

        def execute_async_v2(self, bindings: list[int], stream_handle: int) -> bool:
            assert stream_handle == 1234
            return self._run(dict(zip(self.engine.names, bindings, strict=True)))

    class Engine:
        names = ["features", "cas", "attention"]

        def __init__(self, desc: dict[str, Any]) -> None:
            self.prof = [tuple(s) for s in desc["profile"]]
            self.channels = desc["channels"]
            self.dim = self.prof[0][2]

        def create_execution_context(self) -> Context:
            ctx = Context(self)
            trt.contexts.append(ctx)
            return ctx

        def _shape(self, name: str) -> tuple[int, ...]:
            return {"features": (-1, -1, self.dim), "cas": (-1, -1, self.channels), "attention": (-1, -1, 1)}[name]

    class TensorEngine(Engine):
        num_io_tensors = 3

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> _Member:
            return trt.TensorIOMode.INPUT if name == "features" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> _Member:
            return trt.float32

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self._shape(name)

        def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
            assert name == "features" and profile == 0
            return self.prof

    class BindingEngine(Engine):
        num_bindings = 3

        def get_binding_name(self, i: int) -> str:
            return self.names[i]

        def get_binding_index(self, name: str) -> int:
            return self.names.index(name)

        def binding_is_input(self, i: int) -> bool:
            return i == 0

        def get_binding_dtype(self, i: int) -> _Member:
            return trt.float32

        def get_binding_shape(self, i: int) -> tuple[int, ...]:
            return self._shape(self.names[i])

        def get_profile_shape(self, profile: int, i: int) -> list[tuple[int, ...]]:
            assert profile == 0 and i == 0
            return self.prof

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.DLA_core = -1
            self.engine_host_code_allowed = False
            trt.runtimes.append(self)

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            if not data.startswith(b"FAKEPLAN"):
                return None
            desc = json.loads(data[len(b"FAKEPLAN"):])
            return (BindingEngine if bindings_api else TensorEngine)(desc)

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    trt.contexts, trt.runtimes = [], []
    return trt


def fake_forward(x: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """What the fake engine computes: any fixed function of the input will do."""
    idx = np.arange(channels) % x.shape[2]
    cas = (x[:, :, idx] * 2.0 + np.arange(channels)).astype(np.float32)
    att = (1.0 / (1.0 + np.exp(-x[:, :, :1]))).astype(np.float32)
    return np.ascontiguousarray(cas), np.ascontiguousarray(att)


@pytest.fixture
def fake_env(monkeypatch, tmp_path):
    """Install a fake TensorRT + GPU + CUDA memory; returns a setter for the TensorRT version."""
    cuda = FakeCuda()
    monkeypatch.setattr(tb, "cuda_devices", lambda: [dict(H100)])
    monkeypatch.setattr(trt_backend, "cuda_devices", lambda: [dict(H100)])
    monkeypatch.setattr(trt_backend, "cuda_memory_api", lambda: cuda)
    monkeypatch.setenv("HAMNET_CACHE", str(tmp_path / "cache"))

    def install(version: str = "10.3.0.26", **kw: Any) -> types.ModuleType:
        fake = make_fake_trt(version, **kw)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        return fake

    install.cuda = cuda
    return install


def trt_options(**kw: Any) -> Any:
    from hamnet_deploy.export.options import TrtOptions

    base = {"min_t": 1, "opt_t": 16, "max_t": 64, "max_batch": 2, "workspace_mb": 64}
    base.update(kw)
    return TrtOptions(**base)


# =========================================================================== #
#                         builder (against the fakes)                         #
# =========================================================================== #
def test_build_engines_without_tensorrt(monkeypatch, tiny_onnx, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(BackendUnavailable) as err:
        tb.build_engines(tiny_onnx, tmp_path, trt_options(fp16=True))
    msg = str(err.value)
    assert msg == tb.TRT_MISSING
    assert "pip install 'hamnet-deploy[trt]'" in msg and "python3-libnvinfer" in msg
    assert "runs with ONNX Runtime" in msg
    assert not list(tmp_path.iterdir())


def test_build_engines_without_gpu(monkeypatch, tiny_onnx, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("10.3.0.26"))
    monkeypatch.setattr(tb, "cuda_devices", lambda: [])
    monkeypatch.setattr(tb, "_torch_devices", lambda: [])
    with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
        tb.build_engines(tiny_onnx, tmp_path, trt_options())


def _desc(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    assert data.startswith(b"FAKEPLAN")
    return json.loads(data[len(b"FAKEPLAN"):])


def test_build_trt10_fp16_entry_profile_workspace_timing_cache(fake_env, tiny_onnx, tmp_path):
    fake = fake_env("10.3.0.26")
    bundle = tmp_path / "bundle"
    cache = tmp_path / "timing.cache"
    [e] = tb.build_engines(tiny_onnx, bundle, trt_options(fp16=True, timing_cache=str(cache)))
    assert e["file"] == "hamnet_h100-80gb-hbm3_sm90_trt10.3.0_fp16.engine"
    path = bundle / e["file"]
    assert e["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert e["precision"] == "fp16" and e["tensorrt_version"] == "10.3.0.26"
    assert e["gpu_name"] == "NVIDIA H100 80GB HBM3" and e["compute_capability"] == "9.0"
    assert e["profile"] == {"min_t": 1, "opt_t": 16, "max_t": 64, "min_batch": 1, "max_batch": 2}
    assert e["dla_core"] is None and e["version_compatible"] is False and e["hardware_compatible"] is False
    assert e["timing_cache"] == "timing.cache" and e["input_dim"] == D and e["output_channels"] == C + 1
    assert e["precision_path"] == "builder_flags"
    desc = _desc(path)
    assert desc["flags"] == ["FP16"]
    assert desc["network_flags"] == 0  # 10.x: no EXPLICIT_BATCH, builder-flag precision is weakly typed
    assert desc["pool"] == {"WORKSPACE": 64 << 20}
    assert desc["profile"] == [[1, 1, D], [2, 16, D], [2, 64, D]]
    assert desc["source"]["init_types"] == [1]  # the FP32 graph as exported
    # timing cache written, then reused (and extended) by the next build
    assert cache.read_bytes() == b"+timed"
    tb.build_engines(tiny_onnx, bundle, trt_options(fp16=True, timing_cache=str(cache)))
    assert cache.read_bytes() == b"+timed+timed"
    # a cache from another GPU/TensorRT is replaced, not fatal
    cache.write_bytes(b"other-gpu")
    tb.build_engines(tiny_onnx, bundle, trt_options(fp16=True, timing_cache=str(cache)))
    assert cache.read_bytes() == b"+timed"
    assert len(fake.calls) == 3


def test_build_default_timing_cache_location(fake_env, tiny_onnx, tmp_path):
    fake_env("10.3.0.26")
    [e] = tb.build_engines(tiny_onnx, tmp_path / "b", trt_options())
    expected = tmp_path / "cache" / "trt_timing_h100-80gb-hbm3_sm90_trt10.3.0.cache"  # $HAMNET_CACHE
    assert expected.is_file() and e["timing_cache"] == expected.name
    assert e["precision"] == "fp32" and e["file"].endswith("_fp32.engine")


def test_build_trt8_int8_calibrator_and_cache(fake_env, tiny_onnx, synth_dataset, tmp_path, monkeypatch):
    fake = fake_env("8.6.1.6")
    bundle = tmp_path / "bundle"
    opts = trt_options(int8=True, fp16=True, calib_data=str(synth_dataset), calib_videos=3)
    [e] = tb.build_engines(tiny_onnx, bundle, opts)
    desc = _desc(bundle / e["file"])
    assert desc["network_flags"] == 1 << 0  # 8.x: EXPLICIT_BATCH
    assert desc["flags"] == ["FP16", "INT8"]
    assert desc["calibration"]["shape"] == [2, 16, D]  # calibration profile: (max_batch, opt_t, D)
    assert desc["calibration"]["batches"] >= 1
    assert e["precision"] == "int8" and e["file"].endswith("_trt8.6.1_int8.engine")
    calib = bundle / e["calibration_cache"]
    assert calib.read_bytes() == b"scales:%d" % desc["calibration"]["batches"]
    # second build: the calibration cache is used and the dataset is never loaded
    monkeypatch.setattr(tb, "load_calibration_features",
                        lambda *a, **k: pytest.fail("dataset loaded despite the calibration cache"))
    [e2] = tb.build_engines(tiny_onnx, bundle, opts)
    assert _desc(bundle / e2["file"])["calibration"] == {"from_cache": calib.read_text()}
    assert len(fake.calls) == 2


def test_build_int8_needs_calibration_data(fake_env, tiny_onnx, tmp_path):
    fake_env("10.3.0.26")
    opts = trt_options(fp16=True)
    opts.int8 = True  # bypass TrtOptions.validate, as a caller might
    with pytest.raises(ConfigError, match="--calib"):
        tb.build_engines(tiny_onnx, tmp_path, opts)


def test_build_trt11_fp16_uses_fp16_graph_and_strong_typing(fake_env, tiny_onnx, tmp_path):
    fake_env("11.4.0.1")
    [e] = tb.build_engines(tiny_onnx, tmp_path, trt_options(fp16=True))
    desc = _desc(tmp_path / e["file"])
    assert desc["flags"] == []  # 11.x has no precision flags (the fake raises on BuilderFlag.FP16)
    assert desc["network_flags"] == 1 << 1  # STRONGLY_TYPED
    assert desc["source"]["init_types"] == [10]  # FLOAT16 weights
    assert desc["source"]["ops"]["Cast"] >= 2
    assert e["precision"] == "fp16" and e["precision_path"] == "graph"
    assert "calibration_cache" not in e


def test_build_trt11_int8_uses_qdq_graph(fake_env, tiny_onnx, synth_dataset, tmp_path):
    import onnxruntime.quantization  # noqa: F401
    fake_env("11.4.0.1")
    opts = trt_options(int8=True, calib_data=str(synth_dataset), calib_videos=2)
    [e] = tb.build_engines(tiny_onnx, tmp_path, opts)
    desc = _desc(tmp_path / e["file"])
    assert desc["flags"] == [] and desc["calibration"] is None
    assert desc["source"]["ops"]["QuantizeLinear"] >= 6 and desc["source"]["ops"]["DequantizeLinear"] >= 6
    assert e["precision"] == "int8"


def test_build_dla_static_profile(fake_env, tiny_onnx, tmp_path):
    fake_env("8.6.2.3", dla_cores=2)
    opts = trt_options(fp16=True, min_t=32, opt_t=32, max_t=32, dla_core=1)
    [e] = tb.build_engines(tiny_onnx, tmp_path, opts)
    desc = _desc(tmp_path / e["file"])
    assert desc["device"] == "DLA" and desc["dla_core"] == 1
    assert desc["flags"] == ["FP16", "GPU_FALLBACK"]
    assert desc["profile"] == [[2, 32, D], [2, 32, D], [2, 32, D]]  # static: min = opt = max
    assert e["dla_core"] == 1 and e["file"].endswith("_fp16_dla1.engine")
    assert e["profile"]["min_batch"] == e["profile"]["max_batch"] == 2


def test_build_dla_refusals(fake_env, tiny_onnx, tmp_path):
    fake_env("8.6.2.3", dla_cores=0)
    with pytest.raises(BackendUnavailable, match="no DLA"):
        tb.build_engines(tiny_onnx, tmp_path, trt_options(fp16=True, min_t=8, opt_t=8, max_t=8, dla_core=0))
    fake_env("8.6.2.3", dla_cores=1)
    with pytest.raises(ConfigError, match="DLA cores 0..0"):
        tb.build_engines(tiny_onnx, tmp_path, trt_options(fp16=True, min_t=8, opt_t=8, max_t=8, dla_core=1))
    with pytest.raises(ConfigError, match="static T"):
        tb.build_engines(tiny_onnx, tmp_path, trt_options(fp16=True, dla_core=0))
    with pytest.raises(ConfigError, match="FP16 or INT8"):
        tb.build_engines(tiny_onnx, tmp_path, trt_options(min_t=8, opt_t=8, max_t=8, dla_core=0))


def test_build_compatibility_options(fake_env, tiny_onnx, tmp_path, monkeypatch):
    fake_env("10.3.0.26")
    opts = trt_options(fp16=True)
    opts.version_compatible = True
    opts.hardware_compatible = True
    [e] = tb.build_engines(tiny_onnx, tmp_path, opts)
    desc = _desc(tmp_path / e["file"])
    assert "VERSION_COMPATIBLE" in desc["flags"] and desc["hw_level"] == "AMPERE_PLUS"
    assert e["version_compatible"] is True and e["hardware_compatible"] is True
    monkeypatch.setattr(tb, "cuda_devices", lambda: [dict(ORIN)])
    with pytest.raises(ConfigError, match="not Jetson"):
        tb.build_engines(tiny_onnx, tmp_path, opts)


def test_parser_errors_listed_node_by_node(fake_env, tiny_onnx, tmp_path):
    import onnx
    fake_env("10.3.0.26")
    model = onnx.load(str(tiny_onnx))
    for name in ("/classifier.1/LeakyRelu", "/attention.5/Sigmoid"):
        node = next(n for n in model.graph.node if n.name == name)
        node.op_type = "Unsupported"
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(BundleError) as err:
        tb.build_engines(bad, tmp_path / "b", trt_options())
    msg = str(err.value)
    assert "could not parse the ONNX graph (2 errors)" in msg
    assert "'/classifier.1/LeakyRelu' (Unsupported): No importer registered" in msg
    assert "'/attention.5/Sigmoid' (Unsupported)" in msg
    assert "node " in msg and "\n" not in msg


def test_format_parser_errors_old_parser_without_node_details():
    class OldError:
        def desc(self) -> str:
            return "Assertion failed: k must be a constant"

        def node(self) -> int:
            return -1

    parser = types.SimpleNamespace(num_errors=1, get_error=lambda i: OldError())
    msg = tb.format_parser_errors(parser, "model.onnx", "8.5.2.2")
    assert msg.startswith("model.onnx: TensorRT 8.5.2.2 could not parse the ONNX graph (1 error): graph: "
                          "Assertion failed")


def test_network_flags_and_workspace_per_version():
    for version, typed, expected in (("8.5.2", False, 1), ("10.3.0", False, 0), ("10.3.0", True, 2),
                                     ("11.4.0", True, 2), ("11.4.0", False, 0)):
        fake = make_fake_trt(version)
        assert tb.network_flags(fake, parse_version(version)[0], typed) == expected
    old = types.SimpleNamespace()  # TensorRT < 8.4: no memory pools
    cfg = types.SimpleNamespace()
    tb.set_workspace(old, cfg, 256)
    assert cfg.max_workspace_size == 256 << 20


# =========================================================================== #
#                          runner (against the fakes)                         #
# =========================================================================== #
def _built(fake_env, tiny_onnx, tmp_path, version="10.3.0.26", **kw: Any) -> tuple[Path, dict]:
    [e] = tb.build_engines(tiny_onnx, tmp_path, trt_options(**kw))
    return tmp_path / e["file"], e


def test_runner_infer_named_tensor_api(fake_env, tiny_onnx, tmp_path):
    fake = fake_env("10.3.0.26")
    path, e = _built(fake_env, tiny_onnx, tmp_path, fp16=True)
    runner = TensorRTRunner(path, e)
    assert runner.name == "tensorrt" and runner.max_t == 64 and runner.max_batch == 2 and runner.input_dim == D
    assert not runner.is_active
    rng = np.random.default_rng(0)
    with runner as r:
        assert r.is_active
        for shape in ((1, 1, D), (2, 17, D), (2, 64, D), (1, 5, D)):
            x = rng.standard_normal(shape).astype(np.float32)
            cas, att = r.infer(x)
            ref_cas, ref_att = fake_forward(x, C + 1)
            assert cas.shape == (shape[0], shape[1], C + 1) and att.shape == (shape[0], shape[1], 1)
            assert cas.dtype == att.dtype == np.float32
            np.testing.assert_allclose(cas, ref_cas)
            np.testing.assert_allclose(att, ref_att, rtol=1e-6)
        # every runner takes float32 only (the one input check of BaseRunner)
        with pytest.raises(DataError, match="float32"):
            r.infer(np.ones((1, 3, D)))
    assert not runner.is_active
    cuda = fake_env.cuda
    assert not cuda.mem and cuda.streams == 0 and len(cuda.freed) == 3  # input + 2 outputs freed
    runner.deactivate()  # idempotent
    assert fake.contexts[0].executions == 4  # the float64 call was refused before TensorRT ran


def test_runner_refuses_shapes_outside_profile_before_tensorrt(fake_env, tiny_onnx, tmp_path):
    fake = fake_env("10.3.0.26")
    path, e = _built(fake_env, tiny_onnx, tmp_path)
    with TensorRTRunner(path, e) as r:
        for bad in ((1, 65, D), (3, 8, D)):
            with pytest.raises(ShapeOutsideProfile, match="chunks of at most 64"):
                r.infer(np.zeros(bad, np.float32))
        with pytest.raises(DataError, match="17-D but the engine"):
            r.infer(np.zeros((1, 8, D + 1), np.float32))
        with pytest.raises(DataError, match=r"\[batch, T, D\]"):
            r.infer(np.zeros((8, D), np.float32))
    assert not any(c[0] == "refused" for c in fake.calls if isinstance(c, tuple))
    with pytest.raises(BackendUnavailable, match="before activate"):
        TensorRTRunner(path, e).infer(np.zeros((1, 8, D), np.float32))


def test_runner_bindings_api_fallback(fake_env, tiny_onnx, tmp_path):
    fake_env("8.4.3.1", bindings_api=True)
    path, e = _built(fake_env, tiny_onnx, tmp_path)
    x = np.random.default_rng(2).standard_normal((2, 9, D)).astype(np.float32)
    with TensorRTRunner(path, e) as r:
        assert r._state["io"].api == "bindings"
        cas, att = r.infer(x)
    ref_cas, ref_att = fake_forward(x, C + 1)
    np.testing.assert_allclose(cas, ref_cas)
    np.testing.assert_allclose(att, ref_att, rtol=1e-6)


def test_runner_pads_static_dla_batch(fake_env, tiny_onnx, tmp_path, monkeypatch):
    fake = fake_env("8.6.2.3", dla_cores=2)
    path, e = _built(fake_env, tiny_onnx, tmp_path, fp16=True, min_t=12, opt_t=12, max_t=12, dla_core=0)
    monkeypatch.setattr(trt_backend, "cuda_devices", lambda: [dict(H100)])
    x = np.random.default_rng(3).standard_normal((1, 12, D)).astype(np.float32)
    with TensorRTRunner(path, e) as r:
        cas, att = r.infer(x)
        assert fake.runtimes[-1].DLA_core == 0
        assert fake.contexts[-1].shape == (2, 12, D)  # padded to the static batch
        with pytest.raises(ShapeOutsideProfile):
            r.infer(np.zeros((1, 11, D), np.float32))
    assert cas.shape == (1, 12, C + 1)
    np.testing.assert_allclose(cas, fake_forward(x, C + 1)[0])


def test_runner_refuses_incompatible_or_damaged_engines(fake_env, tiny_onnx, tmp_path, monkeypatch):
    fake_env("10.3.0.26")
    path, e = _built(fake_env, tiny_onnx, tmp_path)
    fake_env("10.8.0.43")  # TensorRT upgraded since the build
    with pytest.raises(BundleError, match="built for TensorRT 10.3 on sm_90"):
        TensorRTRunner(path, e).activate()
    fake_env("10.3.0.26")
    monkeypatch.setattr(trt_backend, "cuda_devices", lambda: [dict(ORIN)])
    with pytest.raises(BundleError, match="this machine has TensorRT 10.3 on sm_87"):
        TensorRTRunner(path, e).activate()
    monkeypatch.setattr(trt_backend, "cuda_devices", lambda: [dict(H100)])
    damaged = tmp_path / "damaged.engine"
    damaged.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(BundleError, match="checksum"):
        TensorRTRunner(damaged, e).activate()
    with pytest.raises(BundleError, match="could not deserialize"):
        damaged.write_bytes(b"garbage")
        TensorRTRunner(damaged, dict(e, sha256=hashlib.sha256(b"garbage").hexdigest())).activate()
    with pytest.raises(BundleError, match="missing"):
        TensorRTRunner(tmp_path / "nope.engine", e).activate()
    wrong = dict(e, profile=dict(e["profile"], max_t=128))
    with pytest.raises(BundleError, match="differs from the manifest"):
        TensorRTRunner(path, wrong).activate()
    assert not fake_env.cuda.mem  # nothing leaked by the failed activations
    monkeypatch.setattr(trt_backend, "cuda_devices", lambda: [])
    with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
        TensorRTRunner(path, e).activate()


def test_runner_version_compatible_allows_host_code(fake_env, tiny_onnx, tmp_path):
    fake_env("10.3.0.26")
    opts = trt_options()
    opts.version_compatible = True
    [e] = tb.build_engines(tiny_onnx, tmp_path, opts)
    fake = fake_env("10.8.0.43")
    with TensorRTRunner(tmp_path / e["file"], e) as r:
        r.infer(np.zeros((1, 4, D), np.float32))
    assert fake.runtimes[-1].engine_host_code_allowed is True


def test_runner_without_tensorrt(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    runner = TensorRTRunner(tmp_path / "x.engine", entry())
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed.*--backend onnxruntime"):
        runner.activate()


def test_calibrator_feeds_device_batches():
    fake = make_fake_trt("10.3.0.26")
    cuda = FakeCuda()
    batches = [np.full((2, 4, 3), k, np.float32) for k in range(3)]
    calls = []

    def source() -> list[np.ndarray]:
        calls.append(1)
        return batches

    calib = make_entropy_calibrator(fake, source, None, cuda=cuda)
    assert calib.base_initialised and calib.get_batch_size() == 1
    assert calib.read_calibration_cache() is None
    assert not calls  # lazy: nothing loaded until TensorRT asks for data
    for k in range(3):
        [ptr] = calib.get_batch(["features"])
        np.testing.assert_array_equal(cuda.read(ptr, (2, 4, 3)), batches[k])
    assert calib.get_batch(["features"]) is None
    assert not cuda.mem and calls == [1]


def test_calibrator_unavailable_on_trt11():
    assert not hasattr(make_fake_trt("11.4.0"), "IInt8EntropyCalibrator2")
    assert precision_path(trt_compat.trt_major("11.4.0")) == "graph"


def test_cuda_memory_api_without_driver(monkeypatch):
    from hamnet_deploy.runtime.backends import cuda_memory

    monkeypatch.setattr(cuda_memory, "load_cudart", lambda: None)
    monkeypatch.setattr(cuda_memory, "load_libcuda", lambda: None)
    with pytest.raises(BackendUnavailable, match="no CUDA driver"):
        trt_backend.cuda_memory_api()


# =========================================================================== #
#                   real TensorRT on a real GPU (skipped here)                #
# =========================================================================== #
def _have_trt_gpu() -> bool:
    return devices.installed_tensorrt() is not None and bool(devices.cuda_devices())


needs_trt_gpu = pytest.mark.skipif(
    not _have_trt_gpu(),
    reason="TensorRT and a CUDA GPU are needed: pip install 'hamnet-deploy[trt]' on an NVIDIA GPU "
           "machine (or JetPack's TensorRT on Jetson)")


@needs_trt_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_engine_build_and_run_matches_onnxruntime(precision, tiny_onnx, tmp_path):
    opts = trt_options(fp16=precision == "fp16", timing_cache=str(tmp_path / "timing.cache"))
    [e] = tb.build_engines(tiny_onnx, tmp_path, opts)
    version = devices.installed_tensorrt()
    gpu = devices.cuda_devices()[0]
    check_engine_compatible(e, version, gpu["name"], gpu["compute_capability"])
    assert (tmp_path / "timing.cache").stat().st_size > 0
    rng = np.random.default_rng(0)
    tol = 1e-3 if precision == "fp32" else 2e-2
    with TensorRTRunner(tmp_path / e["file"], e) as runner:
        for shape in ((1, 1, D), (2, 17, D), (2, 64, D)):
            x = rng.standard_normal(shape).astype(np.float32)
            cas, att = runner.infer(x)
            ref_cas, ref_att = _ort_run(tiny_onnx, x)
            np.testing.assert_allclose(cas, ref_cas, atol=tol * max(1.0, np.abs(ref_cas).max()), rtol=tol)
            np.testing.assert_allclose(att, ref_att, atol=tol)
        with pytest.raises(ShapeOutsideProfile):
            runner.infer(np.zeros((1, 65, D), np.float32))


@needs_trt_gpu
def test_real_int8_engine(tiny_onnx, synth_dataset, tmp_path):
    opts = trt_options(int8=True, fp16=True, calib_data=str(synth_dataset), calib_videos=3)
    [e] = tb.build_engines(tiny_onnx, tmp_path, opts)
    x = np.random.default_rng(1).standard_normal((1, 16, D)).astype(np.float32)
    with TensorRTRunner(tmp_path / e["file"], e) as runner:
        cas, att = runner.infer(x)
    ref_cas, ref_att = _ort_run(tiny_onnx, x)
    assert cas.shape == ref_cas.shape and np.isfinite(cas).all()
    assert np.abs(att - ref_att).max() < 0.1


def test_calibrator_keeps_callback_errors_for_the_builder():
    fake = make_fake_trt("8.6.1")

    def broken() -> list[np.ndarray]:
        raise DataError("calibration dataset unreadable")

    calib = make_entropy_calibrator(fake, broken, None, cuda=FakeCuda())
    assert calib.get_batch(["features"]) is None  # nothing escapes into TensorRT
    assert isinstance(calib.error, DataError)


def test_build_int8_dataset_errors_surface_before_tensorrt(fake_env, tiny_onnx, tmp_path):
    fake = fake_env("10.3.0.26")
    (tmp_path / "no-dataset").mkdir()  # exists (the options accept it) but holds no dataset
    opts = trt_options(int8=True, calib_data=str(tmp_path / "no-dataset"))
    with pytest.raises(DataError):
        tb.build_engines(tiny_onnx, tmp_path / "b", opts)
    assert fake.calls == []  # failed before the build started
