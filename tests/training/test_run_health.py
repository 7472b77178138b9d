"""Training that tells the truth: a run that learned nothing says so (metrics.jsonl and
the end of `hamnet train`) with the likely causes; run folders are numbered instead of
refused; the best and the last checkpoints are kept, and export takes the best."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from hamnet_deploy.training.health import chance_ap, chance_classification_map, diagnose
from tests.helpers import cli

TINY_TRAIN = ["--set", "model.attention_dim=8", "--set", "data.num_snippets=8", "--set", "data.batch_size=4"]


def test_chance_ap_is_the_mean_ap_of_every_ranking():
    for n, k in ((1, 1), (4, 1), (5, 2), (6, 3), (6, 6)):
        aps = []
        for ranking in itertools.permutations(range(n)):
            hits = np.isin(np.array(ranking), np.arange(k))  # items 0..k-1 are the positives
            ranks = np.flatnonzero(hits) + 1
            aps.append(np.mean(np.arange(1, k + 1) / ranks))
        assert chance_ap(k, n) == pytest.approx(np.mean(aps), abs=1e-12), (n, k)
    labels = np.array([[1, 0], [0, 1], [0, 1], [0, 0]])
    assert chance_classification_map(labels) == pytest.approx((chance_ap(1, 4) + chance_ap(2, 4)) / 2)


def _record(epoch, total, sal, cls_map=None, predictions=3):
    record = {"epoch": epoch, "loss": {"sal": sal, "total": total}}
    if cls_map is not None:
        record["eval"] = {"classification_map": cls_map, "per_class": {"a": {"predictions": predictions}}}
    return record


LABELS = np.eye(3)[np.arange(60) % 3]  # 20 videos per class


def test_a_model_that_learned_is_healthy():
    records = [_record(e, 3.0 - 0.1 * e, 1.5 - 0.05 * e) for e in range(1, 20)] + [_record(20, 1.0, 0.4, 0.9)]
    health = diagnose(records, 3, LABELS, LABELS, ["a", "b", "c"], 1e-4, 20)
    assert not health.dead and health.to_dict() == {"learned": True, "signs": [], "causes": []}


@pytest.mark.parametrize("case", ["uniform", "chance", "nothing"])
def test_each_sign_of_a_dead_model(case):
    uniform = math.log(4)
    sal = 0.95 * uniform if case == "uniform" else 0.4
    cls_map = chance_classification_map(LABELS) + 0.01 if case == "chance" else 0.9
    records = [_record(e, 2.0, sal) for e in range(1, 20)]
    records.append(_record(20, 1.0, sal, cls_map, predictions=0 if case == "nothing" else 5))
    health = diagnose(records, 3, LABELS, LABELS, ["a", "b", "c"], 1e-4, 20)
    assert health.dead and len(health.signs) == 1
    assert {"uniform": "ln(C+1)", "chance": "near chance", "nothing": "no detection"}[case] in health.signs[0]


def test_the_likely_causes():
    uniform = math.log(4)
    few = np.eye(3)[[0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]]  # 2 videos of class "a"
    rising = [_record(e, 1.0 + 0.1 * e, uniform) for e in range(1, 11)]
    causes = diagnose(rising, 3, few, None, ["a", "b", "c"], 1e-3, 10).causes
    assert "2 for 'a'" in causes[0] and "too high" in causes[1] and "optim.lr=0.0001" in causes[1]
    assert "only 10 epochs" in causes[2]
    still = [_record(e, 2.0 - 0.001 * e, uniform) for e in range(1, 31)]
    causes = diagnose(still, 3, LABELS, None, ["a", "b", "c"], 1e-6, 30).causes
    assert len(causes) == 1 and "barely moved" in causes[0] and "optim.lr=1e-05" in causes[0]
    two = [_record(1, 1.0, uniform), _record(2, 3.0, uniform)]  # two epochs say nothing about the trend
    assert all("loss" not in c for c in diagnose(two, 3, LABELS, None, ["a", "b", "c"], 1e-4, 2).causes)


def test_a_dead_run_says_so_at_the_end_and_in_its_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("synth", "data", "--videos", 8, "--dim", 8, "--classes", 2).exit_code == 0
    result = cli("train", "--data", "data", "--out", "run", "--epochs", 2, *TINY_TRAIN)
    assert result.exit_code == 0, result.output
    assert "done, but the model learned nothing" in result.output and "likely causes:" in result.output
    assert "too few training videos per class" in result.output
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["epoch"] == 2 and last["health"]["learned"] is False and last["health"]["signs"]
    logged = cli("train", "--data", "data", "--out", "run2", "--epochs", 1, "--json", *TINY_TRAIN)
    events = [json.loads(line) for line in logged.output.splitlines()]
    assert [e["event"] for e in events if e["event"] == "train.health"] == ["train.health"]
    assert events[-1]["event"] == "train.done" and events[-1]["health"]["learned"] is False


def test_a_run_that_learned_keeps_its_best_checkpoint_and_export_takes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("synth", "data", "--videos", 80, "--dim", 32, "--classes", 4).exit_code == 0
    result = cli("train", "--data", "data", "--out", "run", "--epochs", 30, "--eval-every", 10, "--set",
                 "model.attention_dim=16", "--set", "data.num_snippets=64", "--set", "data.batch_size=8", "--set",
                 "optim.lr=1e-3")
    assert result.exit_code == 0, result.output
    assert "learned nothing" not in result.output and "best: epoch" in result.output
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["health"] == {"learned": True, "signs": [], "causes": []}
    scored = {r["epoch"]: r["eval"]["average_mAP"] for r in lines if "eval" in r}
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["epoch"] == max(scored, key=lambda e: (scored[e], -e))
    assert (tmp_path / "run" / best["path"] / "model.safetensors").is_file()
    exported = cli("export", "run", "--skip-parity-long")
    assert exported.exit_code == 0, exported.output
    assert f"best checkpoint (epoch {best['epoch']}" in exported.output
    manifest = json.loads((tmp_path / "run" / "bundle" / "manifest.json").read_text())
    assert manifest["source"]["epoch"] == best["epoch"]


def test_pruning_keeps_the_last_two_and_the_best(tmp_path):
    import shutil

    import torch

    from hamnet_deploy.training.checkpoint import (
        choose_checkpoint,
        load_checkpoint,
        mark_best,
        save_checkpoint,
    )

    net = torch.nn.Linear(2, 2)
    state = {"classes": ["a", "b"], "config": {}}
    for epoch in range(1, 6):
        save_checkpoint(tmp_path, epoch, net, None, state)
        if epoch == 2:
            mark_best(tmp_path, 2, 0.25)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["epoch-0002", "epoch-0004", "epoch-0005"]
    assert load_checkpoint(tmp_path).epoch == 5  # --resume continues from the last
    folder, what = choose_checkpoint(tmp_path, "best")
    assert folder.name == "epoch-0002" and what == "best checkpoint (epoch 2, average mAP 25.0 %)"
    assert choose_checkpoint(tmp_path / "latest.json")[0].name == "epoch-0005"
    assert choose_checkpoint(tmp_path / "best.json")[0].name == "epoch-0002"
    save_checkpoint(tmp_path, 6, net, None, state)
    assert (tmp_path / "checkpoints" / "epoch-0002").is_dir()
    shutil.rmtree(tmp_path / "checkpoints" / "epoch-0002")  # the best is gone: the last, and it says why
    assert choose_checkpoint(tmp_path, "best") == (tmp_path / "checkpoints" / "epoch-0006",
                                                   "last checkpoint (epoch 6; no evaluation picked a best)")


def test_a_new_run_is_numbered_when_its_default_folder_is_taken(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("synth", "data", "--videos", 8, "--dim", 8, "--classes", 2).exit_code == 0
    first = cli("train", "--data", "data", "--epochs", 1, *TINY_TRAIN)
    second = cli("train", "--data", "data", "--epochs", 1, *TINY_TRAIN)
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    assert "run: runs/thumos14-2 (runs/thumos14 is taken)" in second.output
    assert "next: hamnet export runs/thumos14-2" in second.output
    assert (tmp_path / "runs" / "thumos14-2" / "latest.json").is_file()
    named = cli("train", "--data", "data", "--epochs", 1, "--out", "runs/thumos14", *TINY_TRAIN)
    assert named.exit_code == 2 and "--resume" in named.output  # a folder named with --out is never renamed
