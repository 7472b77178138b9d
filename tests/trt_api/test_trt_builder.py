"""The TensorRT engine builder (`export.tensorrt_build`) against the fake TensorRT of
each major (tests/trt_api/fake_trt.py, held to the real bindings): which API each
version path calls, and the data flow (profiles, flags, calibration, caches, entries)."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hamnet_deploy.export import tensorrt_build as tb
from hamnet_deploy.export.trt_calibrator import (
    make_entropy_calibrator,
)
from hamnet_deploy.runtime.errors import BackendUnavailable, BundleError, ConfigError, DataError
from hamnet_deploy.runtime.trt_compat import (
    parse_version,
)
from tests.trt_api.fake_trt import ORIN, FakeCuda, make_fake_trt, trt_options

D, C, ATT = 16, 3, 8


def test_build_engines_without_tensorrt(monkeypatch, tiny_onnx, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(BackendUnavailable) as err:
        tb.build_engines(tiny_onnx, tmp_path, trt_options(fp16=True))
    msg = str(err.value)
    assert msg.startswith("TensorRT is not installed") and msg.endswith(tb.BUILD_FALLBACK)
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
    monkeypatch.setattr(tb, "calibration_features",
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
    assert desc["network_flags"] == 1  # 1 << STRONGLY_TYPED, which is 0 in 11.x (1 in 10.x)
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
    # the real values: EXPLICIT_BATCH 0 (8.x, 10.x); STRONGLY_TYPED 1 in 10.x, 0 in 11.x
    for version, typed, expected in (("8.5.2", False, 1), ("10.3.0", False, 0), ("10.3.0", True, 2),
                                     ("11.4.0", True, 1), ("11.4.0", False, 0)):
        fake = make_fake_trt(version)
        assert tb.network_flags(fake, parse_version(version)[0], typed) == expected
    old = types.SimpleNamespace()  # TensorRT < 8.4: no memory pools
    cfg = types.SimpleNamespace()
    tb.set_workspace(old, cfg, 256)
    assert cfg.max_workspace_size == 256 << 20




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
