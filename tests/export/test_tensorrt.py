"""TensorRT without TensorRT: compatibility rules, engine naming, profiles, precision
paths (FP16 / Q/DQ graphs) and calibration data. The builder and the runner are tested
against fakes held to the real bindings in tests/trt_api/, and against the real bindings
in tests/trt_api/test_trt_conformance.py."""

from __future__ import annotations

import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hamnet_deploy.export import trt_precision
from hamnet_deploy.export.calibration import calibration_features
from hamnet_deploy.export.trt_calibrator import (
    calibration_batches,
)
from hamnet_deploy.export.trt_precision import convert_model_fp16, precision_path
from hamnet_deploy.runtime import devices, trt_compat
from hamnet_deploy.runtime.errors import BundleError, ConfigError, DataError
from hamnet_deploy.runtime.profile import ShapeOutsideProfile
from hamnet_deploy.runtime.trt_compat import (
    check_engine_compatible,
    choose_engine,
    engine_file_name,
    parse_cc,
    parse_version,
    profile_allows,
)
from tests.trt_api.fake_trt import entry

D, C, ATT = 16, 3, 8




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



def test_calibration_features_train_split(synth_dataset):
    from hamnet_deploy.training.data import load_dataset

    feats = calibration_features(synth_dataset, 2, feature_dim=D)
    train = load_dataset(synth_dataset, subset="validation")
    assert len(feats) == 2 and all(f.shape[1] == D and f.dtype == np.float32 for f in feats)
    train_lengths = set(train.lengths.tolist())
    assert all(len(f) in train_lengths for f in feats)
    np.testing.assert_array_equal(feats[0], train.features[0])  # evenly spaced: first and last
    np.testing.assert_array_equal(feats[-1], train.features[-1])
    with pytest.raises(DataError):
        calibration_features(synth_dataset, feature_dim=D + 1)


