"""Runners (ONNX Runtime, PyTorch), the auto choice, and exact chunking/batching with a
real exported model. The model has random non-zero biases so that zero padding would
show (HAM-Net's initialisation has zero biases, which would hide padding errors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hamnet_deploy.export.onnx_export import export_onnx
from hamnet_deploy.runtime.backends.onnxruntime import (
    CPU,
    CUDA,
    TRT,
    OnnxRuntimeRunner,
    OrtTensorRTOptions,
    provider_list,
    usable_cores,
)
from hamnet_deploy.runtime.backends.select import resolve_model, select_runner
from hamnet_deploy.runtime.bundle import load_bundle
from hamnet_deploy.runtime.errors import BackendUnavailable, BundleError, ConfigError, DataError
from hamnet_deploy.runtime.inference import Inference
from hamnet_deploy.runtime.profile import Profile
from hamnet_deploy.training.checkpoint import load_model
from hamnet_deploy.training.model import HamNet
from hamnet_deploy.training.torch_runner import TorchRunner
from tests.helpers import add_fake_engine

D, C = 16, 3
CLASSES = [f"Class{c:02d}" for c in range(C)]  # the shared tiny dataset's (tests/conftest.py)


def make_model(pool: int = 1, seed: int = 0) -> HamNet:
    torch.manual_seed(seed)
    model = HamNet(D, C, pool_kernel=pool, attention_dim=16).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv1d):
                m.bias.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def built(tiny_run, built_bundle, tmp_path_factory):
    """The shared tiny checkpoint and bundle (tests/conftest.py), plus an ONNX file of a
    model with the ActivityNet pool (receptive radius 10)."""
    root = tmp_path_factory.mktemp("backends")
    pooled = make_model(pool=17, seed=1)
    export_onnx(pooled, root / "pooled.onnx", classes=CLASSES, snippet_seconds=0.64)
    return {"root": root, "run": tiny_run, "bundle": built_bundle, "model": load_model(tiny_run).model,
            "pooled": pooled, "pooled_onnx": root / "pooled.onnx"}


def feats(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(t, D)).astype(np.float32) for t in lengths]


def torch_outputs(model, x):
    with torch.inference_mode():
        cas, att = model(torch.from_numpy(x[None]))
    return cas[0].numpy(), att[0, :, 0].numpy()


def one_at_a_time(runner, videos):
    out = []
    for x in videos:
        cas, att = runner.infer(x[None])
        out.append((cas[0], att[0, :, 0]))
    return out


def assert_close(got, ref, atol=2e-5):
    for (c1, a1), (c2, a2) in zip(got, ref, strict=True):
        assert c1.shape == c2.shape and a1.shape == a2.shape
        np.testing.assert_allclose(c1, c2, rtol=0, atol=atol)
        np.testing.assert_allclose(a1, a2, rtol=0, atol=atol)


# ------------------------------------------------------------------ ONNX Runtime runner
def test_ort_runner_contract_and_parity(built):
    bundle = load_bundle(built["bundle"])
    runner = OnnxRuntimeRunner(bundle.model_path(), bundle.model("onnx"))
    assert runner.input_dim == D and runner.threads == usable_cores() and runner.max_t is None
    with pytest.raises(BackendUnavailable, match="before activate"):
        runner.infer(np.zeros((1, 4, D), np.float32))
    (x,) = feats([57])
    with runner as active:
        assert active is runner and runner.providers == [CPU]
        cas, att = runner.infer(x[None])
        assert cas.shape == (1, 57, C + 1) and att.shape == (1, 57, 1) and cas.dtype == np.float32
        ref = torch_outputs(built["model"], x)
        assert_close([(cas[0], att[0, :, 0])], [ref])
        with pytest.raises(DataError, match="float32"):
            runner.infer(x[None].astype(np.float64))
        with pytest.raises(DataError, match=r"\[batch, T, D\]"):
            runner.infer(x)
        with pytest.raises(DataError, match="17-D but model.onnx takes 16-D"):
            runner.infer(np.zeros((1, 5, D + 1), np.float32))
    assert not runner.is_active
    runner.deactivate()  # idempotent


def test_ort_runner_checks_the_manifest(built, tmp_path):
    bundle = load_bundle(built["bundle"])
    entry = bundle.model("onnx").to_dict()
    wrong_name = {**entry, "inputs": [{**entry["inputs"][0], "name": "x"}]}
    with pytest.raises(BundleError, match="input is 'features' but the manifest says 'x'"):
        OnnxRuntimeRunner(bundle.model_path(), wrong_name).activate()
    wrong_dim = {**entry, "inputs": [{**entry["inputs"][0], "shape": ["batch", "T", 32]}]}
    with pytest.raises(BundleError, match="16-D features but the manifest says 32"):
        OnnxRuntimeRunner(bundle.model_path(), wrong_dim).activate()
    copy = tmp_path / "model.onnx"
    copy.write_bytes(bundle.model_path().read_bytes() + b"\0")
    with pytest.raises(BundleError, match="checksum"):
        OnnxRuntimeRunner(copy, entry).activate()
    with pytest.raises(BundleError, match="model file missing"):
        OnnxRuntimeRunner(tmp_path / "nope.onnx", entry).activate()
    with pytest.raises(ConfigError, match="device"):
        OnnxRuntimeRunner(copy, entry, device="gpu")


def test_provider_lists_and_tensorrt_provider_options():
    assert provider_list("cpu", [CPU], "features", D) == [CPU]
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        provider_list("cuda", [CPU], "features", D)
    assert provider_list("cuda", [CUDA, CPU], "features", D) == [CUDA, CPU]
    opts = OrtTensorRTOptions(fp16=True, cache_path="/tmp/c", profile=Profile(opt_t=8, max_t=2048, max_batch=2))
    providers = provider_list("tensorrt", [TRT, CUDA, CPU], "features", 2048, opts)
    (name, options), *rest = providers
    assert name == TRT and rest == [CUDA, CPU]
    assert options["trt_fp16_enable"] == "True" and options["trt_engine_cache_enable"] == "True"
    assert options["trt_engine_cache_path"] == "/tmp/c" and options["trt_timing_cache_enable"] == "True"
    assert options["trt_profile_min_shapes"] == "features:1x1x2048"
    assert options["trt_profile_opt_shapes"] == "features:1x8x2048"
    assert options["trt_profile_max_shapes"] == "features:2x2048x2048"
    assert options["trt_timing_cache_path"] == "/tmp/c"
    old = provider_list("tensorrt", [TRT, CPU], "features", 8, opts, ort_version="1.16.3")[0][1]
    assert "trt_timing_cache_path" not in old and old["trt_timing_cache_enable"] == "True"
    runner = OnnxRuntimeRunner("m.onnx", device="tensorrt", trt=opts, feature_dim=2048)
    assert (runner.max_t, runner.max_batch) == (2048, 2)  # the driver chunks to the provider's profile
    with pytest.raises(ConfigError, match="profile"):
        OrtTensorRTOptions(profile=Profile(min_t=10, opt_t=5))


# --------------------------------------------------------- exactness with the real model
@pytest.mark.parametrize("which", ["bundle", "pooled"])
def test_ort_chunked_equals_unchunked(built, which):
    if which == "bundle":
        bundle = load_bundle(built["bundle"])
        runner, radius, W = OnnxRuntimeRunner(bundle.model_path(), bundle.model("onnx")), 2, 24
    else:
        runner, radius, W = OnnxRuntimeRunner(built["pooled_onnx"], feature_dim=D), 10, 40
    assert radius == (built["model"] if which == "bundle" else built["pooled"]).receptive_radius
    videos = feats([3 * W, W + 1, W - 1, 7])
    with runner:
        ref = one_at_a_time(runner, videos)
        for batch_size in (1, 3):
            got = Inference(runner, radius, max_t=W, batch_size=batch_size).run(videos)
            assert_close(got, ref)


def test_ort_batched_mixed_lengths_equal_one_at_a_time(built):
    runner = OnnxRuntimeRunner(built["pooled_onnx"], feature_dim=D)
    rng = np.random.default_rng(5)
    videos = feats(rng.integers(1, 120, size=20).tolist() + [30, 30, 30], seed=3)
    with runner:
        ref = one_at_a_time(runner, videos)
        for short in ("bucket", "pad"):
            infer = Inference(runner, 10, max_t=48, batch_size=6, short=short)
            assert_close(infer.run(videos), ref)
            assert infer.stats.batches < len(videos)


# -------------------------------------------------------------------- PyTorch runner
def test_torch_runner_matches_onnx(built):
    (x,) = feats([45], seed=9)
    with TorchRunner(built["run"], device="cpu") as runner:
        assert runner.classes == CLASSES and runner.receptive_radius == 2 and runner.input_dim == D
        cas, att = runner.infer(x[None])
        with pytest.raises(DataError, match="float32"):
            runner.infer(x[None].astype(np.float64))
    bundle = load_bundle(built["bundle"])
    with OnnxRuntimeRunner(bundle.model_path(), bundle.model("onnx")) as ort_runner:
        ref = ort_runner.infer(x[None])
    np.testing.assert_allclose(cas, ref[0], atol=2e-5)
    np.testing.assert_allclose(att, ref[1], atol=2e-5)


# ---------------------------------------------------------------------- auto choice
def test_select_auto_on_a_cpu_machine(built):
    sel = select_runner(built["bundle"])
    with sel.runner:
        assert sel.backend == "onnxruntime" and sel.runner.providers == [CPU]
        assert sel.reason.startswith("ONNX Runtime CPU")
        assert "not tensorrt (cuda): no TensorRT engine" in sel.reason and "not onnxruntime (cuda)" in sel.reason
        assert sel.info.classes == CLASSES and sel.info.receptive_radius == 2 and sel.info.feature_dim == D
    sel = select_runner(built["bundle"], device="cpu", threads=1)
    with sel.runner:
        assert sel.reason == "ONNX Runtime CPU, model.onnx (fp32)" and sel.runner.threads == 1
    with pytest.raises(BackendUnavailable, match="no backend can run"):
        select_runner(built["bundle"], device="cuda")
    with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider"):
        select_runner(built["bundle"], "onnxruntime", "cuda")
    with pytest.raises(BundleError, match="no TensorRT engine"):
        select_runner(built["bundle"], "tensorrt")
    with pytest.raises(BundleError, match="--int8-cpu"):
        select_runner(built["bundle"], "onnxruntime-int8")
    with pytest.raises(ConfigError, match="--backend"):
        select_runner(built["bundle"], "openvino")


def test_select_torch_from_checkpoint_or_bundle_source(built):
    sel = select_runner(built["run"])
    with sel.runner:
        assert sel.backend == "torch" and "training checkpoint" in sel.reason
        assert sel.info.kind == "checkpoint" and sel.info.classes == CLASSES
    # a bundle's recorded checkpoint is never loaded: only a checkpoint the user names
    with pytest.raises(ConfigError, match="never loaded"):
        select_runner(built["bundle"], "torch", "cpu")
    with pytest.raises(ConfigError, match="is a training checkpoint"):
        select_runner(built["run"], "onnxruntime")


def test_auto_prefers_a_matching_engine_and_falls_back(built, tmp_path, monkeypatch):
    import hamnet_deploy.runtime.devices as compat
    from hamnet_deploy.runtime.backends.tensorrt import TensorRTRunner

    bundle = add_fake_engine(built["bundle"], tmp_path / "b")
    monkeypatch.setattr(compat, "installed_tensorrt", lambda: "10.3.0.26")
    monkeypatch.setattr(compat, "cuda_devices", lambda: [{"index": 0, "name": "NVIDIA H100",
                                                          "compute_capability": "9.0"}])
    # TensorRT itself is not importable here: auto notes why and runs ONNX Runtime
    sel = select_runner(bundle)
    with sel.runner:
        assert sel.backend == "onnxruntime" and "not tensorrt (cuda): TensorRT is not installed" in sel.reason
    # with a runner that starts, the matching engine wins and the reason says why
    monkeypatch.setattr(TensorRTRunner, "activate", lambda self: self)
    sel = select_runner(bundle)
    assert sel.backend == "tensorrt" and sel.runner.max_t == 128 and sel.runner.max_batch == 4
    assert sel.reason == "engine hamnet.engine (fp16) matches NVIDIA H100 (sm_90) and TensorRT 10.3.0.26"
    assert Inference(sel.runner, 2, max_t=1000, batch_size=16).window == 128  # the profile caps chunks
    # an engine built for another GPU is refused with the reason
    other = add_fake_engine(built["bundle"], tmp_path / "c", cc="8.7")
    with pytest.raises(BundleError, match="sm_87"):
        select_runner(other, "tensorrt")
    sel = select_runner(other)
    assert sel.backend == "onnxruntime" and "sm_87" in sel.reason


def test_default_model_location(tmp_path, monkeypatch, built):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HAMNET_MODEL", raising=False)
    with pytest.raises(BundleError, match=r"no model at bundle .*hamnet export RUN --out bundle"):
        resolve_model(None)
    monkeypatch.setenv("HAMNET_MODEL", str(built["bundle"]))
    assert resolve_model(None) == built["bundle"]
    monkeypatch.setenv("HAMNET_MODEL", str(tmp_path / "gone"))
    with pytest.raises(BundleError, match=r"\$HAMNET_MODEL"):
        resolve_model(None)
    (tmp_path / "bundle").mkdir()
    monkeypatch.delenv("HAMNET_MODEL")
    assert resolve_model(None) == Path("bundle")
    with pytest.raises(BundleError, match="not found"):
        resolve_model(tmp_path / "missing")
