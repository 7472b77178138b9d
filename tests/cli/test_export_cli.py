"""`hamnet export` end to end through typer's CliRunner."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from typer.testing import CliRunner

from hamnet_deploy.cli import app
from hamnet_deploy.export.parity import random_features
from hamnet_deploy.runtime.backends.onnxruntime import OnnxRuntimeRunner
from hamnet_deploy.runtime.bundle import load_bundle
from hamnet_deploy.runtime.postprocess import PostprocessConfig
from hamnet_deploy.training.checkpoint import save_checkpoint
from hamnet_deploy.training.config import DataConfig, ModelConfig, TrainConfig
from hamnet_deploy.training.model import HamNet
from hamnet_deploy.training.synth import SynthConfig, generate_dataset
from hamnet_deploy.training.torch_runner import TorchRunner
from tests.helpers import one_line_error

D, C = 16, 3
CLASSES = ["Class00", "Class01", "Class02"]


def make_run(run_dir: Path, pool_kernel: int = 1) -> Path:
    cfg = TrainConfig(model=ModelConfig(feature_dim=D, num_classes=C, pool_kernel=pool_kernel),
                      data=DataConfig(feature_dim=D), epochs=1, output_dir=str(run_dir))
    torch.manual_seed(0)
    model = HamNet.from_config(cfg.model)
    post = PostprocessConfig(topk_ratio=8.0, nms="hard")
    save_checkpoint(run_dir, 1, model, None, {"classes": CLASSES, "config": cfg.to_dict(),
                                              "postprocess": post.to_dict(), "feature_dim": D,
                                              "num_classes": C})
    return run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "run")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    generate_dataset(folder, SynthConfig(videos=8, dim=D, num_classes=C, seed=2))
    return folder


def invoke(*args: str):
    return CliRunner().invoke(app, ["export", *map(str, args)])


def test_export_end_to_end(run, synth, tmp_path):
    out, repo = tmp_path / "bundle", tmp_path / "triton"
    result = invoke(run, "--out", out, "--int8-cpu", "--calib", synth, "--calib-videos", 3, "--triton", repo,
                    "--max-batch", 2)
    assert result.exit_code == 0, result.output
    text = result.output
    for needle in ("parity ok", "batch 4, T 2615", "model.onnx", "model.int8.onnx", "manifest.json",
                   f"hamnet detect FEATURES.npy --model {out}"):
        assert needle in text, needle
    bundle = load_bundle(out)
    assert sha256(out / "model.onnx")[:12] in text  # the file table shows the sha256 prefix
    m = bundle.manifest
    assert bundle.classes == CLASSES and bundle.feature_dim == D and m.receptive_radius == 2
    assert bundle.postprocess == PostprocessConfig(topk_ratio=8.0, nms="hard")
    assert m.models["onnx"].opset == 17 and m.models["onnx"].extra["parity"]["ok"]
    assert m.models["onnx"].extra["parity"]["cases"] == 10
    q = m.models["onnx_int8"]
    assert q.precision == "int8" and q.extra["quantization"]["calib_videos"] == 3
    assert m.engines == () and m.source["epoch"] == 1 and m.config["recipe"] == "thumos14"
    assert m.config["model"]["feature_dim"] == D
    # the bundle's models compute what the checkpoint computes
    from hamnet_deploy.training.checkpoint import load_model

    x = random_features(2, 50, D)
    with TorchRunner.from_model(load_model(run).model) as torch_runner:
        ref = torch_runner.infer(x)
    with OnnxRuntimeRunner(bundle.model_path()) as ort, OnnxRuntimeRunner(bundle.model_path("onnx_int8")) as q:
        np.testing.assert_allclose(ort.infer(x)[0], ref[0], atol=1e-4)
        assert q.infer(x)[0].shape == (2, 50, C + 1)
    # Triton repository
    for name in ("hamnet", "hamnet_int8"):
        cfg = text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 2
        assert list(cfg.input[0].dims) == [-1, D]
    assert (repo / "hamnet" / "1" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    assert not (repo / "hamnet_trt").exists()
    assert sorted(os.listdir(tmp_path)) == ["bundle", "triton"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_default_out_force_and_epoch_folder(tmp_path):
    run_dir = make_run(tmp_path / "run", pool_kernel=17)
    result = invoke(run_dir, "--skip-parity-long")
    assert result.exit_code == 0, result.output
    assert "batch 4, T 2615" not in result.output
    bundle = load_bundle(run_dir / "bundle")
    assert bundle.receptive_radius == 10
    first = json.loads((run_dir / "bundle" / "manifest.json").read_text())["created"]
    text = one_line_error(invoke(run_dir, "--skip-parity-long"))
    assert "already exists; pass --force" in text
    result = invoke(run_dir, "--skip-parity-long", "--force", "--opset", 18)
    assert result.exit_code == 0, result.output
    assert load_bundle(run_dir / "bundle").manifest.models["onnx"].opset == 18
    assert json.loads((run_dir / "bundle" / "manifest.json").read_text())["created"] >= first
    epoch = run_dir / "checkpoints" / "epoch-0001"
    result = invoke(epoch, "--skip-parity-long")
    assert result.exit_code == 0, result.output
    assert load_bundle(run_dir / "bundle-epoch-0001").classes == CLASSES
    assert sorted(p for p in os.listdir(run_dir) if p.startswith(".")) == []


@pytest.mark.parametrize("args,needle", [
    (["--int8-cpu"], "--int8-cpu: needs calibration data"),
    (["--fp16"], "--fp16 applies to --trt"),
    (["--min-t", "4"], "--min-t applies to --trt"),
    (["--trt", "--min-t", "10", "--opt-t", "5"], "--min-t <= --opt-t <= --max-t"),
    (["--trt", "--int8"], "--int8: needs calibration data"),
    (["--trt", "--dla", "0"], "FP16 or INT8"),
    (["--opset", "99"], "--opset 99"),
    (["--calib", "nowhere"], "--calib applies to --int8-cpu or --trt"),
    (["--trt", "--calib", "nowhere"], "--calib nowhere: is for INT8"),
    (["--int8-cpu", "--calib", "nowhere"], "--calib nowhere: not found"),
    (["--max-drop", "2"], "--verify"),
])
def test_bad_arguments(run, tmp_path, args, needle):
    text = one_line_error(invoke(run, "--out", tmp_path / "b", *args))
    assert needle in text
    assert not (tmp_path / "b").exists()


def test_missing_and_corrupt_checkpoints(run, tmp_path):
    assert "checkpoint not found" in one_line_error(invoke(tmp_path / "nope"))
    (tmp_path / "notrun").mkdir()
    assert "not a checkpoint" in one_line_error(invoke(tmp_path / "notrun"))
    bad = make_run(tmp_path / "bad")
    weights = bad / "checkpoints" / "epoch-0001" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    text = one_line_error(invoke(bad))
    assert "model.safetensors" in text and "corrupt" in text
    assert not (bad / "bundle").exists()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    assert "not a model bundle" in one_line_error(invoke(run, "--out", precious, "--force"))
    assert (precious / "notes.txt").read_text() == "keep"


def test_trt_without_tensorrt_still_writes_the_bundle(run, tmp_path, monkeypatch):
    # whatever this machine has (no TensorRT, no GPU here)
    result = invoke(run, "--out", tmp_path / "b1", "--trt", "--fp16", "--skip-parity-long")
    if result.exit_code == 0:  # pragma: no cover - a machine with TensorRT and a GPU
        assert load_bundle(tmp_path / "b1").engines
    else:
        assert result.exit_code == 2 and "TensorRT" in result.output
        assert load_bundle(tmp_path / "b1").engines == []
    # the builder module missing entirely
    monkeypatch.setitem(sys.modules, "hamnet_deploy.export.tensorrt_build", None)
    result = invoke(run, "--out", tmp_path / "b2", "--trt", "--skip-parity-long")
    assert result.exit_code == 2
    assert "TensorRT engine skipped" in result.output and "bundle without engines" in result.output
    assert sorted(os.listdir(tmp_path / "b2")) == ["manifest.json", "model.onnx"]
    load_bundle(tmp_path / "b2")


def _fake_builder(fail: bool = False) -> types.ModuleType:
    mod = types.ModuleType("hamnet_deploy.export.tensorrt_build")
    calls = []

    def build_engines(onnx_path, bundle_dir, options):
        calls.append((Path(onnx_path), Path(bundle_dir), options))
        name = f"hamnet_fake_sm86_trt10.3_{options.precision}.engine"
        (Path(bundle_dir) / name).write_bytes(b"plan")
        if fail:
            raise RuntimeError("builder ran out of memory")
        return [{"file": name, "precision": options.precision, "tensorrt_version": "10.3.0",
                 "gpu_name": "Fake GPU", "compute_capability": "8.6", "dla_core": options.dla_core,
                 "profile": {"min_t": options.min_t, "opt_t": options.opt_t, "max_t": options.max_t,
                             "min_batch": 1, "max_batch": options.max_batch},
                 "version_compatible": False}]

    mod.build_engines = build_engines
    mod.calls = calls
    return mod


def test_trt_hook_records_engines_and_feeds_triton(run, tmp_path, monkeypatch):
    fake = _fake_builder()
    monkeypatch.setitem(sys.modules, "hamnet_deploy.export.tensorrt_build", fake)
    out, repo = tmp_path / "b", tmp_path / "repo"
    result = invoke(run, "--out", out, "--trt", "--fp16", "--min-t", 8, "--opt-t", 256, "--max-t", 1024,
                    "--max-batch", 2, "--workspace-mb", 512, "--skip-parity-long", "--triton", repo)
    assert result.exit_code == 0, result.output
    (onnx_path, stage_dir, options), = fake.calls
    assert onnx_path.name == "model.onnx" and onnx_path.parent == stage_dir and stage_dir != out
    assert (options.fp16, options.min_t, options.opt_t, options.max_t, options.max_batch,
            options.workspace_mb, options.opset) == (True, 8, 256, 1024, 2, 512, 17)
    (engine,) = load_bundle(out).engines
    assert engine.precision == "fp16" and engine.profile.max_t == 1024 and engine.profile.min_batch == 1
    assert engine.extra == {"version_compatible": False}
    assert "hamnet_fake_sm86" in result.output and engine.sha256[:12] in result.output
    cfg = text_format.Parse((repo / "hamnet_trt" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 2
    assert (repo / "hamnet_trt" / "1" / "model.plan").read_bytes() == b"plan"


def test_a_failed_trt_build_leaves_no_partial_engine(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "hamnet_deploy.export.tensorrt_build", _fake_builder(fail=True))
    result = invoke(run, "--out", tmp_path / "b", "--trt", "--skip-parity-long")
    assert result.exit_code == 2 and "builder ran out of memory" in result.output
    assert sorted(os.listdir(tmp_path / "b")) == ["manifest.json", "model.onnx"]
