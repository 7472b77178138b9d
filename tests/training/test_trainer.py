"""Trainer: a short run learns, resume reproduces an uninterrupted run exactly on CPU,
2-process DDP (gloo) matches one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from hamnet_deploy.training.checkpoint import load_checkpoint
from hamnet_deploy.training.data import load_dataset
from hamnet_deploy.training.recipes import load_recipe
from hamnet_deploy.training.synth import SynthConfig, generate_dataset
from hamnet_deploy.training.trainer import METRICS_FILE, train

SMALL = ["model.attention_dim=16", "data.num_snippets=24", "data.batch_size=4", "optim.lr=1e-3",
         "eval_every=0", "device=cpu"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, SynthConfig(videos=16, dim=16, num_classes=3, seed=3))
    return root


def _cfg(extra=()):
    return load_recipe("thumos14").with_overrides([*SMALL, *extra])


def _weights(run):
    return load_checkpoint(run).model_state


def test_short_run_writes_checkpoint_metrics_and_config(small_data, tmp_path):
    data = load_dataset(small_data)
    out = train(_cfg(["epochs=2", "eval_every=1"]), data, tmp_path / "run")
    assert out.epochs == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / METRICS_FILE).read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert all("eval" in r and 0.0 <= r["eval"]["average_mAP"] <= 1.0 for r in lines)
    assert set(lines[0]["loss"]) >= {"bcl", "sal", "ssal", "hal", "sparsity", "guide", "total"}
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["feature_dim"] == 16 and saved["model"]["num_classes"] == 3
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.epoch == 2 and ckpt.classes == data.classes


def test_existing_run_is_not_overwritten(small_data, tmp_path):
    from hamnet_deploy.runtime.errors import ConfigError

    data = load_dataset(small_data)
    train(_cfg(["epochs=1"]), data, tmp_path / "run")
    with pytest.raises(ConfigError, match="--resume"):
        train(_cfg(["epochs=1"]), data, tmp_path / "run")


def test_resume_matches_uninterrupted_run(small_data, tmp_path):
    data = load_dataset(small_data)
    train(_cfg(["epochs=4"]), data, tmp_path / "full")
    train(_cfg(["epochs=2"]), data, tmp_path / "part")
    train(_cfg(["epochs=4"]), data, tmp_path / "part", resume=True)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "part" / METRICS_FILE).read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def _cli_args(data, out):
    return ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--quiet",
            "--set", "model.dropout=0", "--set", "model.attention_dim=16", "--set", "data.num_snippets=24",
            "--set", "data.batch_size=4", "--set", "optim.lr=1e-3", "--device", "cpu"]


def test_ddp_two_processes_match_single_process(small_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "hamnet_deploy.cli", *_cli_args(small_data, tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "hamnet_deploy.cli", *_cli_args(small_data, tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, (ddp.stdout[-2000:], ddp.stderr[-2000:])
    one = json.loads((tmp_path / "one" / METRICS_FILE).read_text().splitlines()[-1])
    two = json.loads((tmp_path / "two" / METRICS_FILE).read_text().splitlines()[-1])
    for term, value in one["loss"].items():
        assert two["loss"][term] == pytest.approx(value, rel=1e-5, abs=1e-6), term
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_eval_checkpoint_matches_trainer_report(small_data, tmp_path):
    from typer.testing import CliRunner

    from hamnet_deploy.cli import app

    data = load_dataset(small_data)
    train(_cfg(["epochs=2"]), data, tmp_path / "run")
    reported = json.loads((tmp_path / "run" / METRICS_FILE).read_text().splitlines()[-1])["eval"]
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "run"), "--data", str(small_data),
                                      "--json", str(tmp_path / "ev.json")])
    assert result.exit_code == 0, result.output
    ours = json.loads((tmp_path / "ev.json").read_text())
    assert ours["average_mAP"] == pytest.approx(reported["average_mAP"], abs=1e-9)
    assert ours["mAP"] == pytest.approx(reported["mAP"], abs=1e-9)
    missing = CliRunner().invoke(app, ["eval", str(tmp_path / "run")])
    assert missing.exit_code == 2 and "--data" in missing.output


def test_untrained_attention_localizes_with_the_cas():
    """BCL only (exp1) trains no attention: its post-processing uses the CAS foreground."""
    from hamnet_deploy.training.evaluate import attention_trained, postprocess_config

    base = load_recipe("thumos14")
    for name, trained in (("exp1", False), ("exp2", True), ("exp5", True), ("exp11", True)):
        cfg = base.with_overrides([f"ablation={name}"])
        assert attention_trained(cfg) is trained
        post = postprocess_config(cfg)
        assert post.attention_source == ("attention" if trained else "cas")
        assert post.topk_ratio == 10 and post.snippet_seconds == 0.64
    only_hal = base.with_overrides(["loss.use_sal=false", "loss.use_ssal=false", "loss.use_sparsity=false",
                                      "loss.use_guide=false"])
    assert postprocess_config(only_hal).attention_source == "cas"  # HAL's hard mask passes no gradient
