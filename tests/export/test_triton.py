"""Triton model repository: config.pbtxt parses into Triton's ModelConfig protobuf."""

from __future__ import annotations

import os

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from hamnet_deploy.export.bundle_writer import BundleStage, build_manifest
from hamnet_deploy.export.triton import config_pbtxt, pick_engine, write_triton_repository
from hamnet_deploy.runtime.bundle import load_bundle
from hamnet_deploy.runtime.errors import BundleError
from hamnet_deploy.runtime.manifest import EngineEntry, TensorSpec
from hamnet_deploy.runtime.profile import Profile

D, C = 16, 3
CLASSES = ["jump", "run", "throw"]
IO_IN = (TensorSpec("features", "float32", ("batch", "T", D)),)
IO_OUT = (TensorSpec("cas", "float32", ("batch", "T", C + 1)), TensorSpec("attention", "float32", ("batch", "T", 1)))


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _engine(name: str, precision: str = "fp16", dla: int | None = None, max_batch: int = 8) -> dict:
    return {"file": name, "precision": precision, "tensorrt_version": "10.3.0", "gpu_name": "NVIDIA A10",
            "compute_capability": "8.6", "dla_core": dla,
            "profile": {"min_t": 1, "opt_t": 512, "max_t": 4096, "max_batch": max_batch}}


@pytest.fixture()
def bundle(tmp_path):
    with BundleStage(tmp_path / "bundle") as stage:
        stage.file("model.onnx").write_bytes(b"fp32")
        stage.file("model.int8.onnx").write_bytes(b"int8")
        for name in ("a.engine", "b.engine"):
            stage.file(name).write_bytes(name.encode())
        models = {kind: stage.model_entry(name, opset=17, precision=prec, inputs=IO_IN, outputs=IO_OUT)
                  for kind, name, prec in (("onnx", "model.onnx", "fp32"), ("onnx_int8", "model.int8.onnx", "int8"))}
        engines = stage.engine_entries([_engine("a.engine", "int8", max_batch=2), _engine("b.engine", "fp16")])
        stage.commit(build_manifest(classes=CLASSES, feature_dim=D, snippet_seconds=0.64, receptive_radius=2,
                                    postprocess={}, models=models, engines=engines))
    return load_bundle(tmp_path / "bundle")


def test_onnx_config_parses_into_model_config():
    cfg = parse(config_pbtxt("hamnet", "onnxruntime_onnx", 2048, 20, 4, "model.onnx"))
    assert cfg.name == "hamnet" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 4
    assert cfg.default_model_filename == "model.onnx"
    (inp,) = cfg.input
    assert inp.name == "features" and list(inp.dims) == [-1, 2048]
    assert inp.data_type == model_config_pb2.TYPE_FP32
    cas, att = cfg.output
    assert (cas.name, list(cas.dims), cas.label_filename) == ("cas", [-1, 21], "labels.txt")
    assert (att.name, list(att.dims)) == ("attention", [-1, 1])
    assert not cfg.instance_group  # Triton picks GPU if there is one, else CPU


def test_tensorrt_config_parses():
    cfg = parse(config_pbtxt("hamnet_trt", "tensorrt_plan", D, C, 8, "model.plan", gpu=True))
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 8
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    with pytest.raises(BundleError, match="max_batch_size"):
        config_pbtxt("x", "onnxruntime_onnx", D, C, 0, "model.onnx")


def test_repository_from_a_bundle(bundle, tmp_path):
    repo = tmp_path / "repo"
    written = write_triton_repository(bundle, repo, max_batch=4)
    assert [p.name for p in written] == ["hamnet", "hamnet_int8", "hamnet_trt"]
    for folder, platform, fname, src, batch in (
            ("hamnet", "onnxruntime_onnx", "model.onnx", "model.onnx", 4),
            ("hamnet_int8", "onnxruntime_onnx", "model.onnx", "model.int8.onnx", 4),
            ("hamnet_trt", "tensorrt_plan", "model.plan", "b.engine", 8)):  # the FP16 engine, its batch
        cfg = parse((repo / folder / "config.pbtxt").read_text())
        assert cfg.name == folder and cfg.platform == platform and cfg.max_batch_size == batch
        assert list(cfg.input[0].dims) == [-1, D] and list(cfg.output[0].dims) == [-1, C + 1]
        assert (repo / folder / "1" / fname).read_bytes() == (bundle.path / src).read_bytes()
        assert (repo / folder / "labels.txt").read_text().split() == [*CLASSES, "background"]
        assert (repo / folder / "hamnet_manifest.json").is_file()
    assert sorted(os.listdir(repo)) == ["hamnet", "hamnet_int8", "hamnet_trt"]  # no temp folders


def test_existing_models_need_force_and_other_models_stay(bundle, tmp_path):
    repo = tmp_path / "repo"
    (repo / "other_model" / "1").mkdir(parents=True)
    write_triton_repository(bundle, repo)
    with pytest.raises(BundleError, match="pass --force"):
        write_triton_repository(bundle, repo)
    write_triton_repository(bundle, repo, max_batch=2, force=True)
    assert parse((repo / "hamnet" / "config.pbtxt").read_text()).max_batch_size == 2
    assert (repo / "other_model" / "1").is_dir()
    (repo / "hamnet" / "config.pbtxt").unlink()
    with pytest.raises(BundleError, match="not a Triton model folder"):
        write_triton_repository(bundle, repo, force=True)


def test_pick_engine_skips_dla():
    def entry(precision, dla=None):
        return EngineEntry("x", "a" * 64, precision, "10.3", "Orin", "8.7", Profile(1, 1, 1, 1), dla)

    assert pick_engine([]) is None
    assert pick_engine([entry("fp16", dla=0)]) is None
    # the runtime's one precision order: an INT8 engine (calibrated on purpose) before FP32
    assert pick_engine([entry("int8"), entry("fp32"), entry("fp16", 0)]).precision == "int8"
    assert pick_engine([entry("fp32"), entry("fp16"), entry("int8")]).precision == "fp16"
