"""Shared fixtures: ../shared, a tiny synthetic dataset, a checkpoint and its exported
bundle (helpers such as the CLI runner live in tests/helpers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
THUMOS = SHARED / "data" / "thumos14-reduced"
TINY_D, TINY_C = 16, 3


@pytest.fixture(scope="session")
def thumos_dir() -> Path:
    if not THUMOS.is_dir():
        pytest.fail(f"{THUMOS} is missing: the tests need ../shared beside the checkout")
    return THUMOS


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 16-video synthetic dataset (D = 16, 3 classes)."""
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset

    folder = tmp_path_factory.mktemp("tiny") / "data"
    generate_dataset(folder, SynthConfig(videos=16, dim=TINY_D, num_classes=TINY_C, seed=3))
    return folder


@pytest.fixture(scope="session")
def tiny_run(tiny_data) -> Path:
    """A checkpoint of an untrained HAM-Net for `tiny_data` with random non-zero biases
    (zero padding would show; HAM-Net's initialisation has zero biases)."""
    import torch

    from hamnet_deploy.runtime.postprocess import PostprocessConfig
    from hamnet_deploy.training.checkpoint import save_checkpoint
    from hamnet_deploy.training.config import DataConfig, ModelConfig, TrainConfig
    from hamnet_deploy.training.model import HamNet

    classes = json.loads((tiny_data / "annotations.json").read_text())["classes"]
    run = tiny_data.parent / "run"
    cfg = TrainConfig(model=ModelConfig(feature_dim=TINY_D, num_classes=TINY_C, attention_dim=16),
                      data=DataConfig(feature_dim=TINY_D), epochs=1, output_dir=str(run))
    torch.manual_seed(0)
    model = HamNet.from_config(cfg.model).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv1d):
                m.bias.normal_(0, 0.5)
    save_checkpoint(run, 1, model, None, {"classes": classes, "config": cfg.to_dict(),
                                          "postprocess": PostprocessConfig().to_dict(),
                                          "feature_dim": TINY_D, "num_classes": TINY_C})
    return run


@pytest.fixture(scope="session")
def built_bundle(tiny_run) -> Path:
    """`tiny_run` exported (ONNX only, short parity)."""
    from hamnet_deploy.export.options import ExportOptions
    from hamnet_deploy.export.pipeline import run_export

    bundle = tiny_run.parent / "bundle"
    run_export(tiny_run, bundle, ExportOptions(skip_parity_long=True))
    return bundle


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A small untrained HamNet (D = 16, C = 3) as an ONNX file, exported as the deployment contract says."""
    import onnx  # noqa: F401
    import torch

    from hamnet_deploy.training.model import HamNet

    torch.manual_seed(0)
    net = HamNet(TINY_D, TINY_C, attention_dim=8).eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    axes = {"batch": 0, "T": 1}
    dyn = {k: {v: n for n, v in axes.items()} for k in ("features", "cas", "attention")}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(2, 8, TINY_D), str(path), input_names=["features"],
                          output_names=["cas", "attention"], dynamic_axes=dyn, opset_version=17,
                          dynamo=False)
    return path



@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> Path:
    """A 6-video synthetic dataset of 20-40 s videos (D = 16, 3 classes)."""
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset

    out = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(videos=6, dim=TINY_D, num_classes=TINY_C, seed=3, duration_median_s=30.0, duration_min_s=20.0,
                      duration_max_s=40.0, instance_median_s=3.0, instance_min_s=1.0, instance_max_s=6.0)
    generate_dataset(out, cfg, workers=1)
    return out

