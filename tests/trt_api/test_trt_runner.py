"""The TensorRT runner (`runtime.backends.tensorrt`) against the fake TensorRT and a
NumPy-backed CUDA memory helper: buffers, shapes, profiles, the bindings API fallback,
compatibility and checksum refusals, the calibrator."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hamnet_deploy.runtime.backends.tensorrt as trt_backend
from hamnet_deploy.export import tensorrt_build as tb
from hamnet_deploy.export.trt_calibrator import (
    make_entropy_calibrator,
)
from hamnet_deploy.export.trt_precision import precision_path
from hamnet_deploy.runtime import trt_compat
from hamnet_deploy.runtime.backends.tensorrt import TensorRTRunner
from hamnet_deploy.runtime.errors import BackendUnavailable, BundleError, DataError
from hamnet_deploy.runtime.profile import ShapeOutsideProfile
from tests.trt_api.fake_trt import (
    H100,
    ORIN,
    FakeCuda,
    entry,
    fake_forward,
    make_fake_trt,
    trt_options,
)

D, C, ATT = 16, 3, 8


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
        assert fake.contexts[-1]._shape == (2, 12, D)  # padded to the static batch
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


