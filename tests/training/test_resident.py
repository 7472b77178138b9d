"""Batches on the device (`data.loader=device`), here on the CPU device: the same
sampling rules as the host loader, every video once per epoch, and no value of ours read
back on the host during an epoch."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from hamnet_deploy.runtime.errors import ConfigError
from hamnet_deploy.training.losses import HamNetLoss
from hamnet_deploy.training.model import HamNet
from hamnet_deploy.training.recipes import load_recipe
from hamnet_deploy.training.resident import ResidentBatches
from hamnet_deploy.training.trainer import _make_optimizer, _Step, train_epoch

CPU = torch.device("cpu")


def _data(*sets: str):
    return load_recipe("thumos14").with_overrides(list(sets)).data


def _batches(lengths, *sets, dim=3, world=1, rank=0, seed=0):
    feats = [np.full((t, dim), i, dtype=np.float32) + np.arange(t, dtype=np.float32)[:, None] / 10_000
             for i, t in enumerate(lengths)]
    labels = np.eye(4, dtype=np.float32)[np.arange(len(lengths)) % 4]
    return ResidentBatches(feats, labels, _data(*sets), seed, CPU, world, rank), feats


def _allowed(t, n, closed=True):
    """Per position, the closed range of snippets the released rules allow."""
    low = (np.arange(n) * t) // n
    high = ((np.arange(n) + 1) * t) // n - (0 if closed or t < n else 1)
    high[-1] = t - 1
    return low, np.maximum(high, low)


@pytest.mark.parametrize("t", [200, 500, 2000, 501])
@pytest.mark.parametrize("bins", ["released", "disjoint"])
def test_device_draws_follow_the_sampling_rules(t, bins):
    n = 500
    batches, _ = _batches([t], f"data.bins={bins}")
    draws = torch.stack([batches.indices(torch.tensor([t]))[0][0] for _ in range(200)]).numpy()
    if t == n:
        assert (draws == np.arange(n)).all()
        return
    low, high = _allowed(t, n, closed=bins == "released")
    assert (draws >= low).all() and (draws <= high).all()
    widths = high - low + 1
    for width in set(widths.tolist()) - {1}:  # every allowed snippet drawn about equally often
        offsets = (draws - low)[:, widths == width].reshape(-1)
        if offsets.size < 5000:
            continue  # the odd last bin: too few draws to judge
        share = np.bincount(offsets, minlength=width) / offsets.size
        assert np.abs(share - 1 / width).max() < 0.03, (width, share)


def test_short_video_variants_on_the_device():
    batches, _ = _batches([7, 40], "data.num_snippets=20", "data.short_videos=mask")
    idx, real = batches.indices(torch.tensor([7, 40]))
    assert real.tolist() == [7, 20]
    assert idx[0, :7].tolist() == list(range(7)) and (idx[0, 7:] == 6).all()  # padding, masked out
    rep, _ = _batches([7], "data.num_snippets=20", "data.short_videos=repeat")
    assert rep.indices(torch.tensor([7]))[0][0].tolist() == ((np.arange(20) * 7) // 20).tolist()
    uniform, _ = _batches([40], "data.num_snippets=8", "data.sampling=uniform")
    assert uniform.indices(torch.tensor([40]))[0][0].tolist() == list(range(0, 40, 5))
    with pytest.raises(ConfigError, match="data.loader=device needs data.sampling"):
        _batches([7], "data.sampling=all")


def test_every_video_once_per_epoch_in_a_new_order():
    batches, feats = _batches([30 + i for i in range(45)], "data.num_snippets=16")
    assert len(batches) == 3

    def epoch(e):
        out = list(batches.epoch(e))
        assert [len(f) for f, _, _ in out] == [20, 20, 5]
        assert all(lengths is None for _, _, lengths in out)  # all 16 long: no mask
        return [int(round(float(f[b, 0, 0]))) for f, _, _ in out for b in range(len(f))]

    first, second = epoch(1), epoch(2)
    assert sorted(first) == list(range(45)) and sorted(second) == list(range(45))
    assert first != second and epoch(1) == first
    # two ranks share the epoch's order without overlap
    r0 = [int(round(float(f[b, 0, 0]))) for f, _, _ in _batches([30] * 9, "data.num_snippets=8", world=2)[0].epoch(1)
          for b in range(len(f))]
    r1 = [int(round(float(f[b, 0, 0]))) for f, _, _ in
          _batches([30] * 9, "data.num_snippets=8", world=2, rank=1)[0].epoch(1) for b in range(len(f))]
    assert len(r0) == len(r1) == 5 and set(r0) | set(r1) == set(range(9))


def test_an_epoch_reads_nothing_of_ours_back_and_learns(monkeypatch):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(t, 6)).astype(np.float32) for t in rng.integers(10, 40, size=24)]
    labels = np.eye(3, dtype=np.float32)[np.arange(24) % 3]
    for i, f in enumerate(feats):  # a learnable signal: the class shows in one feature
        f[:, i % 3] += 2.0
    cfg = load_recipe("thumos14").with_overrides(["data.num_snippets=16", "data.batch_size=4", "optim.lr=1e-3",
                                                  "model.attention_dim=8", "data.loader=device"])
    model = HamNet(6, 3, attention_dim=8)
    step = _Step(model, model, HamNetLoss(cfg.loss), _make_optimizer(cfg, model), CPU, None, None, None)
    batches = ResidentBatches(feats, labels, cfg.data, 0, CPU)

    reads: list[str] = []
    ours = "hamnet_deploy" + ("\\" if sys.platform == "win32" else "/") + "training"

    def counting(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if ours in caller:
                reads.append(f"{name} at {caller}:{sys._getframe(1).f_lineno}")
            return original(self, *args, **kwargs)
        return read

    first, _, _ = train_epoch(step, batches.epoch(1), 1, 1, lambda *a, **k: None, len(batches), sync=False)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    seen = []
    for epoch in range(2, 12):
        reads.clear()
        losses, videos, snippets = train_epoch(step, batches.epoch(epoch), epoch, 1,
                                               lambda *a, **k: seen.append(k), len(batches), sync=False)
        assert len(reads) == 1 and "tolist" in reads[0], reads  # the epoch's one read: its loss means
        assert (videos, snippets) == (24, 24 * 16)
    assert all(event["losses"] == {} for event in seen) and len(seen) == 60
    assert losses["total"] < first["total"] * 0.9  # it learns


def test_training_with_the_device_loader_end_to_end(tmp_path):
    from hamnet_deploy.training.data import load_dataset
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset
    from hamnet_deploy.training.trainer import train

    folder = tmp_path / "data"
    generate_dataset(folder, SynthConfig(videos=12, dim=8, num_classes=3, seed=1, duration_median_s=20.0,
                                         duration_min_s=12.0, duration_max_s=40.0, instance_median_s=2.0,
                                         instance_min_s=1.0, instance_max_s=4.0), workers=1)
    data = load_dataset(folder)
    sets = ["epochs=2", "eval_every=0", "device=cpu", "data.loader=device", "data.num_snippets=16",
            "data.batch_size=4", "model.attention_dim=8"]
    cfg = load_recipe("thumos14").with_overrides(sets)
    one = train(cfg, data, tmp_path / "a")
    two = train(cfg, data, tmp_path / "b")
    assert one.epochs == 2 and one.last_eval is not None
    assert one.last_loss == two.last_loss  # reproducible for a seed
    assert one.last_loss["total"] > 0


def test_a_split_too_large_for_the_device_is_one_line(monkeypatch):
    def full(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(torch.Tensor, "to", full)
    with pytest.raises(ConfigError, match=r"does not fit on cpu; use data.loader=host"):
        _batches([30, 40])
