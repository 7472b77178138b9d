"""Static INT8 (QDQ) quantization for CPUs: calibration data, the quantized graph, it runs.

The accuracy guard on a trained model (`hamnet export --verify`) needs
training.evaluate; see tests/cli/test_export_cli.py.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch

from hamnet_deploy.export.calibration import calibration_features
from hamnet_deploy.export.int8_cpu import float_nodes, make_reader, quantize_int8_cpu
from hamnet_deploy.export.onnx_export import export_onnx, read_metadata
from hamnet_deploy.export.parity import compare, random_features
from hamnet_deploy.runtime.backends.onnxruntime import OnnxRuntimeRunner
from hamnet_deploy.runtime.errors import DataError
from hamnet_deploy.training.data import load_dataset
from hamnet_deploy.training.model import HamNet
from hamnet_deploy.training.synth import SynthConfig, generate_dataset

D, C = 16, 3


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    generate_dataset(folder, SynthConfig(videos=8, dim=D, num_classes=C, seed=1))
    return folder


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, synth):
    torch.manual_seed(0)
    model = HamNet(D, C).eval()
    folder = tmp_path_factory.mktemp("int8")
    fp32 = folder / "model.onnx"
    export_onnx(model, fp32, classes=["a", "b", "c"], snippet_seconds=0.64)
    feats = calibration_features(synth, videos=4, feature_dim=D)
    result = quantize_int8_cpu(fp32, folder / "model.int8.onnx", feats)
    return model, fp32, result, feats


def test_calibration_features_come_from_the_train_split(synth):
    ds = load_dataset(synth)
    train = {n for n in ds.names if ds.annotations.videos[n].subset == "validation"}
    feats = calibration_features(synth, videos=100, feature_dim=D)
    assert len(feats) == len(train)
    train_arrays = [ds.features[ds.names.index(n)] for n in sorted(train)]
    for x in feats:
        assert x.dtype == np.float32 and x.shape[1] == D
        assert any(np.array_equal(x, y) for y in train_arrays)
    short = calibration_features(synth, videos=2, feature_dim=D, max_snippets=50)
    assert len(short) == 2 and all(len(x) <= 50 for x in short)
    assert [x.tolist() for x in short] == [x.tolist() for x in
                                          calibration_features(synth, videos=2, feature_dim=D, max_snippets=50)]


def test_calibration_errors(synth, tmp_path):
    with pytest.raises(DataError, match="16-D but 64-D are expected"):
        calibration_features(synth, feature_dim=64)
    with pytest.raises(DataError, match="at least 1"):
        calibration_features(synth, videos=0)
    with pytest.raises(DataError):
        calibration_features(tmp_path / "missing")


def test_reader_rewinds():
    feats = [np.zeros((5, D), np.float32), np.ones((7, D), np.float32)]
    reader = make_reader(feats)
    shapes = [reader.get_next()["features"].shape for _ in range(2)]
    assert shapes == [(1, 5, D), (1, 7, D)] and reader.get_next() is None
    reader.rewind()
    assert reader.get_next()["features"].shape == (1, 5, D)


def test_quantized_graph(quantized):
    _, fp32, result, feats = quantized
    proto = onnx.load(str(result.path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") >= 4 and ops.count("DequantizeLinear") >= 4
    assert result.settings["format"] == "QDQ" and result.settings["per_channel"]
    assert result.calib_videos == 4 and result.calib_snippets == sum(len(f) for f in feats)
    # the 3-tap convs run as MatMuls over the unfolded input [T, 3C] and are quantized: their
    # weights [3C, O] are INT8 initialisers with one scale per output channel ...
    assert result.settings["convolutions"] == "4 as unfolded MatMul"
    assert ops.count("MatMul") == 4 and "Concat" in ops
    ints = {i.name: tuple(i.dims) for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    assert sorted(d for d in ints.values() if len(d) == 2) == sorted([(3 * D, D), (3 * D, D), (3 * D, 512),
                                                                      (3 * 512, 512)])
    inits = {i.name: i for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and len(ints.get(node.input[0], ())) == 2:
            assert tuple(inits[node.input[1]].dims) == (ints[node.input[0]][1],)  # per output channel
    # ... the 1x1 output convs and the sigmoid stay float
    assert len(result.float_nodes) == 3
    assert len(float_nodes(fp32)) == 3
    floats = {tuple(i.dims) for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert (C + 1, D, 1, 1) in floats and (1, 512, 1, 1) in floats
    assert result.path.stat().st_size < 0.5 * fp32.stat().st_size
    meta = read_metadata(result.path)
    assert meta["precision"] == "int8" and meta["classes"] == ["a", "b", "c"] and meta["feature_dim"] == D


def test_quantized_model_runs_close_to_fp32(quantized):
    _, fp32, result, feats = quantized
    run8 = OnnxRuntimeRunner(result.path)
    with run8:
        for b, t in ((1, 1), (4, 37), (1, 2615)):
            cas, att = run8.infer(random_features(b, t, D))
            assert cas.shape == (b, t, C + 1) and att.shape == (b, t, 1)
            assert np.isfinite(cas).all()
    report = compare(OnnxRuntimeRunner(fp32), run8, feature_dim=D, name="int8", atol=0.0, rtol=0.1,
                     inputs=[(f"video {i}", x[None]) for i, x in enumerate(feats)], enforced=False)
    cas_abs, cas_rel = report.worst("cas")
    att_abs, _ = report.worst("attention")
    assert cas_rel < 0.1 and att_abs < 0.1, report.summary()


# --------------------------------------------------------------------------- #
#              accuracy guard: hamnet export --int8-cpu --verify              #
# --------------------------------------------------------------------------- #
def _train_small(data_dir, run_dir, steps: int = 150):
    """A briefly trained HAM-Net (D = 16, attention width 16) saved as a checkpoint."""
    from hamnet_deploy.runtime.postprocess import PostprocessConfig
    from hamnet_deploy.training.checkpoint import save_checkpoint
    from hamnet_deploy.training.config import DataConfig, ModelConfig, TrainConfig
    from hamnet_deploy.training.losses import HamNetLoss

    ds = load_dataset(data_dir)
    train = ds.select("validation")
    cfg = TrainConfig(model=ModelConfig(feature_dim=D, num_classes=C, attention_dim=16), data=DataConfig(feature_dim=D))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: avoid thread spin-waits on a busy 2-core machine
    torch.manual_seed(0)
    model = HamNet.from_config(cfg.model)
    loss_fn = HamNetLoss(cfg.loss)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.choice(len(train), 4)
        x = np.stack([f[np.sort(rng.choice(len(f), 64, replace=len(f) < 64))]
                      for f in (train.features[i] for i in idx)])
        cas, att = model(torch.from_numpy(x))
        loss, _ = loss_fn(cas, att, torch.from_numpy(train.labels[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    save_checkpoint(run_dir, 1, model.eval(), None, {"classes": ds.classes, "config": cfg.to_dict(),
                                                     "postprocess": PostprocessConfig().to_dict()})
    return run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synth):
    return _train_small(synth, tmp_path_factory.mktemp("trained") / "run")


def _export(*args):
    from typer.testing import CliRunner

    from hamnet_deploy.cli import app

    return CliRunner().invoke(app, ["export", *map(str, args)])


def test_accuracy_guard_passes_and_is_recorded(trained, synth, tmp_path):
    from hamnet_deploy.runtime.bundle import load_bundle

    out = tmp_path / "b"
    result = _export(trained, "--out", out, "--int8-cpu", "--calib", synth, "--verify", synth, "--skip-parity-long")
    assert result.exit_code == 0, result.output
    assert "accuracy on 4 test videos" in result.output and "accuracy guard ok" in result.output
    verify = load_bundle(out).manifest.source["verify"]
    assert verify["passed"] and verify["subset"] == "test" and verify["videos"] == 4
    ref, fp32, int8 = verify["pytorch"], verify["onnx"], verify["onnx_int8"]
    assert len(ref["mAP"]) == 7  # THUMOS14 tIoU 0.1 .. 0.7
    assert 0.0 <= ref["average_mAP"] <= 1.0 and 0.0 <= ref["classification_mAP"] <= 1.0
    # FP32 ONNX localizes exactly like PyTorch (masked batches) ...
    assert fp32["average_mAP"] == pytest.approx(ref["average_mAP"], abs=1e-6)
    # ... and the INT8 model stays within the guard's 1 point
    assert 100 * (ref["average_mAP"] - int8["average_mAP"]) <= 1.0
    assert int8["sha256"] == load_bundle(out).model("onnx_int8").sha256  # the record names the file it measured

    # so `--backend auto` on a CPU runs the INT8 model, and says why
    from hamnet_deploy.runtime.backends.select import select_runner
    from hamnet_deploy.runtime.environment import Environment

    cpu = Environment(("CPUExecutionProvider",))
    chosen = select_runner(out, env=cpu)
    with chosen.runner:
        assert chosen.backend == "onnxruntime-int8"
        assert "model.int8.onnx (int8), chosen because --verify kept its average mAP within 1 points" in chosen.reason
    # an INT8 model made again (from the bundle, not measured): FP32 again, and why
    result = _export(out, "--int8-cpu", "--calib", synth, "--calib-videos", 2, "--force")
    assert result.exit_code == 0, result.output
    chosen = select_runner(out, env=cpu)
    with chosen.runner:
        assert chosen.backend == "onnxruntime" and "model.onnx (fp32)" in chosen.reason
        assert "not onnxruntime-int8 (cpu): its onnx_int8 model is not the one --verify measured" in chosen.reason


def test_accuracy_guard_failure_writes_nothing_unless_allowed(trained, synth, tmp_path, monkeypatch):
    from hamnet_deploy.export import verify
    from hamnet_deploy.runtime.bundle import load_bundle

    monkeypatch.setattr(verify, "accuracy_guard", lambda ref, cands, max_drop: [
        f"{cands[-1].name}: a drop of 5.00 points > --max-drop {max_drop:g}"])
    args = (trained, "--out", tmp_path / "b", "--int8-cpu", "--calib", synth, "--verify", synth,
            "--skip-parity-long", "--max-drop", "0.5")
    result = _export(*args)
    assert result.exit_code == 2, result.output
    assert "accuracy guard: onnx_int8: a drop of 5.00 points > --max-drop 0.5" in result.output
    assert "--allow-drop" in result.output
    assert not (tmp_path / "b").exists() and os.listdir(tmp_path) == []
    result = _export(*args, "--allow-drop")
    assert result.exit_code == 0, result.output
    assert "accuracy drop allowed" in result.output
    assert load_bundle(tmp_path / "b").manifest.source["verify"]["passed"] is False


def test_accuracy_guard_rule():
    from hamnet_deploy.export.verify import accuracy_guard
    from hamnet_deploy.runtime.detections import Detections
    from hamnet_deploy.runtime.evaluation import DetectionResult
    from hamnet_deploy.runtime.scoring import EvalSummary

    def score(name, avg):
        result = DetectionResult((0.5,), ["a"], np.array([[avg]]), np.array([1]), np.array([1]), 1)
        return EvalSummary(result, 0.5, Detections.empty(["a"]), name)

    ref = score("pytorch", 0.40)
    assert accuracy_guard(ref, [score("onnx", 0.40), score("onnx_int8", 0.392)], 1.0) == []
    (msg,) = accuracy_guard(ref, [score("onnx_int8", 0.385)], 1.0)
    assert msg.startswith("onnx_int8: average mAP 38.50 vs 40.00") and "1.50 points" in msg
    assert accuracy_guard(ref, [score("onnx_int8", float("nan"))], 1.0)


def test_calibration_prefers_the_train_split(tmp_path):
    """ActivityNet-style subsets: `training` is the train split, `validation` the test split."""
    from hamnet_deploy.export.calibration import calibration_features
    from hamnet_deploy.training.data import load_dataset, write_per_video

    synth = tmp_path / "s"
    generate_dataset(synth, SynthConfig(videos=8, dim=8, num_classes=2, seed=5))
    ds = load_dataset(synth)
    renamed = {"validation": "training", "test": "validation"}
    from dataclasses import replace

    for name in ds.names:
        ds.annotations.videos[name] = replace(ds.annotations.videos[name],
                                              subset=renamed[ds.annotations.videos[name].subset])
    write_per_video(ds, tmp_path / "anet")
    anet = load_dataset(tmp_path / "anet")
    feats = calibration_features(tmp_path / "anet", videos=100)
    train = [f for f, s in zip(anet.features, anet.subsets, strict=True) if s == "training"]
    assert len(feats) == len(train)
    assert all(any(a.shape == b.shape and (a == b).all() for b in train) for a in feats)


def test_unfolded_matmuls_compute_the_convolutions(quantized, tmp_path):
    # The float graph after convs_as_matmuls gives the exported model's outputs (the same
    # sums in another order), at every T including 1 and 2, and touches nothing else.
    from hamnet_deploy.export.onnx_graph import convs_as_matmuls

    _, fp32, _, _ = quantized
    proto = onnx.load(str(fp32))
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert convs_as_matmuls(proto) == 4
    assert [n.op_type for n in proto.graph.node].count("Conv") == len(convs) - 4 == 2  # the 1x1 convs stay
    onnx.checker.check_model(proto, full_check=True)
    unfolded = tmp_path / "unfolded.onnx"
    onnx.save(proto, str(unfolded))
    cases = [(1, 1), (1, 2), (3, 3), (1, 37), (3, 300)]
    report = compare(OnnxRuntimeRunner(fp32), OnnxRuntimeRunner(unfolded), cases, feature_dim=D, name="unfolded",
                     atol=1e-5, rtol=1e-5)
    assert report.ok and len(report.rows) == 2 * len(cases), report.rows
    assert convs_as_matmuls(proto) == 0  # nothing left to rewrite
