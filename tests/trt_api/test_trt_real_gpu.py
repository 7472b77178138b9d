"""Real TensorRT engines on a real GPU: skipped unless TensorRT and a CUDA GPU are here
(never in CI: see tests/trt_api/test_trt_conformance.py for what runs there)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hamnet_deploy.export import tensorrt_build as tb
from hamnet_deploy.runtime import devices
from hamnet_deploy.runtime.backends.tensorrt import TensorRTRunner
from hamnet_deploy.runtime.profile import ShapeOutsideProfile
from hamnet_deploy.runtime.trt_compat import (
    check_engine_compatible,
)
from tests.trt_api.fake_trt import trt_options

D, C, ATT = 16, 3, 8


def _ort_run(path: Path | str, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["cas", "attention"], {"features": x})


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


