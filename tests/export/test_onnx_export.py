"""ONNX export: graph contract, metadata, parity against PyTorch at every listed T and batch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from hamnet_deploy import __version__
from hamnet_deploy.export.onnx_export import (
    check_dynamic,
    export_onnx,
    graph_io,
    read_metadata,
    torch_to_onnx,
)
from hamnet_deploy.export.options import DEFAULT_OPSET, TrtOptions, check_opset
from hamnet_deploy.export.parity import (
    PARITY_BATCHES,
    PARITY_LENGTHS,
    check_onnx_parity,
    compare,
    parity_cases,
)
from hamnet_deploy.runtime.backends.onnxruntime import OnnxRuntimeRunner
from hamnet_deploy.runtime.errors import BundleError, ConfigError
from hamnet_deploy.training.model import HamNet
from hamnet_deploy.training.torch_runner import TorchRunner

D, C = 16, 3
CLASSES = ["jump", "run", "throw"]


def _model(pool_kernel: int = 1, seed: int = 0) -> HamNet:
    torch.manual_seed(seed)
    return HamNet(D, C, pool_kernel=pool_kernel).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _model()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    info = export_onnx(model, path, classes=CLASSES, snippet_seconds=0.64)
    return model, path, info


def test_graph_contract_and_metadata(exported):
    model, path, info = exported
    proto = onnx.load(str(path))
    inputs, outputs = graph_io(proto)
    assert [t.name for t in inputs] == ["features"]
    assert [t.name for t in outputs] == ["cas", "attention"]
    assert inputs[0].shape == ("batch", "T", D)
    assert outputs[0].shape == ("batch", "T", C + 1)
    assert outputs[1].shape == ("batch", "T", 1)
    assert all(t.dtype == "float32" for t in inputs + outputs)
    assert info.inputs == inputs and info.outputs == outputs
    assert info.simplified, info.notes
    assert {o.domain: o.version for o in proto.opset_import}[""] == DEFAULT_OPSET == 17
    meta = read_metadata(path)
    assert meta["classes"] == CLASSES
    assert meta["feature_dim"] == D and meta["num_classes"] == C
    assert meta["snippet_seconds"] == pytest.approx(0.64)
    assert meta["receptive_radius"] == 2
    assert meta["package_version"] == __version__
    assert proto.producer_name == "hamnet-deploy"
    # only the branches: no pooling over time, no TopK, no mask inputs
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= {"Transpose", "Conv", "LeakyRelu", "Sigmoid", "AveragePool", "Pad", "Identity", "Unsqueeze",
                   "Squeeze"}
    # every convolution runs as a 2-D one of height 1 (ONNX Runtime's fast CPU kernel)
    weights = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    convs = [weights[n.input[1]] for n in proto.graph.node if n.op_type == "Conv"]
    assert convs and all(len(w) == 4 and w[2] == 1 for w in convs)
    onnx.checker.check_model(proto, full_check=True)


def test_parity_at_every_length_and_batch(exported):
    model, path, _ = exported
    report = check_onnx_parity(model, path)
    cases = {r.case for r in report.rows}
    assert cases == {f"batch {b}, T {t}" for b in PARITY_BATCHES for t in PARITY_LENGTHS}
    assert set(PARITY_LENGTHS) == {1, 2, 37, 339, 2615} and set(PARITY_BATCHES) == {1, 4}
    assert report.ok, report.failures()
    assert report.worst("cas")[0] < 1e-4 and report.worst("attention")[0] < 1e-5
    report.raise_if_failed()
    assert len(parity_cases(skip_long=True)) == len(parity_cases()) - len(PARITY_BATCHES)


def test_onnx_runs_outputs_of_the_right_shapes(exported):
    _, path, _ = exported
    with OnnxRuntimeRunner(path) as run:
        for b, t in ((1, 1), (3, 5), (2, 1000)):
            cas, att = run.infer(np.ones((b, t, D), np.float32))
            assert cas.shape == (b, t, C + 1) and att.shape == (b, t, 1)
            assert ((att > 0) & (att < 1)).all()


def test_activitynet_pool_exports_with_parity(tmp_path):
    model = _model(pool_kernel=17)
    path = tmp_path / "pool.onnx"
    export_onnx(model, path, classes=CLASSES, snippet_seconds=0.64)
    assert read_metadata(path)["receptive_radius"] == 10
    report = check_onnx_parity(model, path)
    assert report.ok, report.failures()


def test_a_different_model_fails_parity(exported):
    model, path, _ = exported
    other = _model(seed=1)
    report = compare(TorchRunner.from_model(other), OnnxRuntimeRunner(path), [(1, 37), (4, 2)], feature_dim=D,
                     name="wrong")
    assert not report.ok
    with pytest.raises(BundleError, match="outputs differ at batch"):
        report.raise_if_failed()
    # a report that is not enforced only reports
    report.enforced = False
    report.raise_if_failed()


def test_a_fixed_time_axis_is_caught(tmp_path):
    model = _model()
    proto = torch_to_onnx(model)
    check_dynamic(proto, D, C)
    for out in list(proto.graph.input) + list(proto.graph.output):
        out.type.tensor_type.shape.dim[1].dim_value = 8  # what a specialised export looks like
    with pytest.raises(BundleError, match="fixed during export"):
        check_dynamic(proto, D, C)
    with pytest.raises(BundleError, match="last dimension"):
        check_dynamic(torch_to_onnx(model), D, C + 1)


def test_class_names_must_match(tmp_path):
    with pytest.raises(BundleError, match="class names"):
        export_onnx(_model(), tmp_path / "m.onnx", classes=["a"], snippet_seconds=0.64)
    assert not (tmp_path / "m.onnx").exists()


def test_opset_range_and_newer_opset(tmp_path):
    for bad in (12, 99, True):
        with pytest.raises(ConfigError, match="opset"):
            check_opset(bad)
    model = _model()
    path = tmp_path / "m20.onnx"
    export_onnx(model, path, classes=CLASSES, snippet_seconds=0.64, opset=20)
    proto = onnx.load(str(path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 20
    assert check_onnx_parity(model, path, skip_long=True).ok


def test_trt_options_validate():
    assert TrtOptions().validate().precision == "fp32"
    assert TrtOptions(fp16=True).precision == "fp16"
    with pytest.raises(ConfigError, match="min-t <= --opt-t"):
        TrtOptions(min_t=10, opt_t=5).validate()
    with pytest.raises(ConfigError, match="--calib"):
        TrtOptions(int8=True).validate()
    with pytest.raises(ConfigError, match="FP16 or INT8"):
        TrtOptions(dla_core=0).validate()
    with pytest.raises(ConfigError, match="static T"):
        TrtOptions(dla_core=0, fp16=True).validate()
    TrtOptions(dla_core=0, fp16=True, min_t=256, opt_t=256, max_t=256).validate()
    with pytest.raises(ConfigError, match="max-batch"):
        TrtOptions(max_batch=0).validate()
    assert TrtOptions().to_dict()["opset"] == 17
