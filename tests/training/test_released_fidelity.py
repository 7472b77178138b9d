"""The rows docs/FIDELITY.md marks "same as released": each checked here against the
released HAM-Net code's behaviour, written out independently of `training/` (the sampler
rules themselves are in test_sampling.py, the post-processing in tests/runtime)."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from torch import nn

from hamnet_deploy.training.batches import collate
from hamnet_deploy.training.config import TrainConfig
from hamnet_deploy.training.evaluate import model_outputs
from hamnet_deploy.training.losses import HamNetLoss
from hamnet_deploy.training.model import HamNet
from hamnet_deploy.training.recipes import load_recipe
from hamnet_deploy.training.trainer import _make_optimizer, load_run_config, make_loader


def _videos(lengths, dim=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    feats = [rng.normal(size=(t, dim)).astype(np.float32) for t in lengths]
    labels = np.zeros((len(lengths), classes), dtype=np.float32)
    labels[np.arange(len(lengths)), np.arange(len(lengths)) % classes] = 1
    return types.SimpleNamespace(features=feats, labels=labels)


def _recipe(*overrides: str) -> TrainConfig:
    return load_recipe("thumos14").with_overrides(list(overrides))


# ------------------------------------------------------------------ recipe defaults

@pytest.mark.parametrize("name, n, r", [("thumos14", 500, 10), ("activitynet12", 80, 20)])
def test_recipes_default_to_the_released_settings(name, n, r):
    cfg = load_recipe(name)
    assert (cfg.data.num_snippets, cfg.loss.r, cfg.data.batch_size) == (n, r, 20)
    assert cfg.data.sampling == "random" and cfg.data.short_videos == "released" and cfg.data.bins == "released"
    assert cfg.loss.label_eps == 1e-4 and cfg.loss.drop_mode == "relative" and cfg.loss.keep_min_logit
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.grad_clip) == ("adam", 1e-5, 1e-3, None)
    assert TrainConfig().data.short_videos == "released" and TrainConfig().loss.label_eps == 1e-4


def test_runs_from_before_keep_the_sampler_they_started_with(tmp_path):
    cfg = _recipe().to_dict()
    for section, key in (("data", "short_videos"), ("data", "bins"), ("loss", "label_eps")):
        del cfg[section][key]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    old = load_run_config(tmp_path)
    assert (old.data.short_videos, old.data.bins, old.loss.label_eps) == ("mask", "disjoint", 0.0)


# ------------------------------------------------------------------ samples and batches

def test_every_training_video_becomes_exactly_n_snippets():
    n = 40
    data = _videos([13, 40, 97, 3])
    samples, _, loader = make_loader(_recipe(f"data.num_snippets={n}", "data.batch_size=4"), data)
    samples.epoch = 1
    for i, t in enumerate([13, 40, 97, 3]):
        feats, _ = samples[i]
        assert feats.shape == (n, 4)
        rows = [int(np.flatnonzero((data.features[i] == row).all(axis=1))[0]) for row in feats]
        assert rows == sorted(rows) and max(rows) < t  # real snippets of the video, in order
    feats, _, lengths = next(iter(loader))
    assert feats.shape == (4, n, 4) and lengths.tolist() == [n] * 4  # nothing padded, nothing masked
    masked, _, _ = make_loader(_recipe(f"data.num_snippets={n}", "data.short_videos=mask"), data)
    masked.epoch = 1
    assert masked[0][0].shape == (13, 4)  # the variant keeps the real length


def test_batches_are_a_new_random_order_each_epoch_with_the_last_batch_smaller():
    data = _videos(np.full(45, 8))
    _, sampler, loader = make_loader(_recipe("data.num_snippets=8"), data)

    def order(epoch):
        sampler.set_epoch(epoch)
        return list(sampler)

    first, second = order(1), order(2)
    assert sorted(first) == list(range(45)) and sorted(second) == list(range(45))
    assert first != second and order(1) == first  # reshuffled per epoch, reproducible
    sampler.set_epoch(1)
    assert [len(labels) for _, labels, _ in loader] == [20, 20, 5]  # batch 20, last kept


# ------------------------------------------------------------------ the loss on an upsampled batch

def _released_objective(cas, att, labels, r, lm1=1.0, lm2=1.0, p=0.2, alpha=0.8, beta=0.8, gamma=0.2, eps=1e-4):
    """The released objective on (B, n, C+1) logits and (B, n, 1) attention with no
    padding, computed over the whole batch at once as the released code does."""
    k = max(1, cas.shape[1] // r)

    def mil(z, background):
        target = np.concatenate([labels, np.full((len(labels), 1), background)], axis=1)
        target = target / (target.sum(axis=1, keepdims=True) + eps)
        pooled = -np.sort(-z, axis=1)[:, :k].mean(axis=1)
        logp = pooled - np.log(np.exp(pooled).sum(axis=1, keepdims=True))
        return -(target * logp).sum(axis=1)

    def with_min(m, s):
        low = s.min(axis=2, keepdims=True)
        return m * (s - low) + low

    drop = (att < gamma * att.max(axis=1, keepdims=True)).astype(float)
    bcl, hal = mil(cas, 1.0), mil(with_min(drop, cas), 1.0)
    sal, ssal = mil(att * cas, 0.0), mil(with_min(drop * att, cas), 0.0)
    e = np.exp(cas)
    guide = np.abs(1 - att[..., 0] - e[..., -1] / e.sum(axis=2)).mean()
    return (lm1 * (p * hal + (1 - p) * bcl).mean() + lm2 * (p * ssal + (1 - p) * sal).mean()
            + alpha * att.mean() + beta * guide)


def test_loss_on_an_upsampled_batch_is_the_released_objective():
    n, c1 = 50, 4
    rng = np.random.default_rng(3)
    data = _videos([13, 50, 170], dim=2)
    samples, _, _ = make_loader(_recipe(f"data.num_snippets={n}"), data)
    samples.epoch = 1
    _, labels, lengths = collate([samples[i] for i in range(3)])
    cas = rng.normal(size=(3, n, c1))
    att = rng.uniform(0.01, 0.99, size=(3, n, 1))
    mask = torch.arange(n)[None] < lengths[:, None]  # what the trainer builds: all True
    lab = labels.numpy().astype(np.float64)[:, : c1 - 1]
    total, _ = HamNetLoss(_recipe().loss)(torch.tensor(cas), torch.tensor(att), torch.tensor(lab), mask=mask)
    assert float(total) == pytest.approx(_released_objective(cas, att, lab, 10), rel=1e-12)
    # k = n // r = 5 on the upsampled sequence, not the 13 real snippets' 1
    short, _ = HamNetLoss(_recipe().loss)(torch.tensor(cas[:1]), torch.tensor(att[:1]), torch.tensor(lab[:1]))
    assert float(short) == pytest.approx(_released_objective(cas[:1], att[:1], lab[:1], 10), rel=1e-12)


# ------------------------------------------------------------------ network, init, optimiser

def _released_network(d, c, a, dropout):
    """The released construction order: both branches, then every conv re-initialised
    (Kaiming uniform, fan_in, leaky_relu; zero bias) visiting the modules in order."""
    classifier = nn.Sequential(nn.Conv1d(d, d, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv1d(d, d, 3, padding=1),
                               nn.LeakyReLU(0.2), nn.Dropout(dropout), nn.Conv1d(d, c + 1, 1))
    attention = nn.Sequential(nn.Conv1d(d, a, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv1d(a, a, 3, padding=1),
                              nn.LeakyReLU(0.2), nn.Conv1d(a, 1, 1), nn.Sigmoid())
    for branch in (classifier, attention):
        for m in branch:
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
    return classifier, attention


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_a_seed_gives_the_released_initial_weights(seed):
    torch.manual_seed(seed)
    ours = HamNet(6, 3, dropout=0.7, attention_dim=5)
    torch.manual_seed(seed)
    classifier, attention = _released_network(6, 3, 5, 0.7)
    theirs = {f"classifier.{k}": v for k, v in classifier.state_dict().items()}
    theirs.update({f"attention.{k}": v for k, v in attention.state_dict().items()})
    mine = ours.state_dict()
    assert set(mine) == set(theirs)
    for name, value in theirs.items():
        assert torch.equal(mine[name], value), name
    assert isinstance(ours.classifier[4], nn.Dropout) and ours.classifier[4].p == 0.7
    assert HamNet.from_config(load_recipe("activitynet12").model).classifier[4].p == 0.5


def test_optimiser_is_the_released_adam():
    opt = _make_optimizer(_recipe(), HamNet(4, 2, attention_dim=3))
    assert type(opt) is torch.optim.Adam
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"], group["eps"], group["amsgrad"]) == (
        1e-5, 1e-3, (0.9, 0.999), 1e-8, False)


# ------------------------------------------------------------------ evaluation input

def test_evaluation_runs_every_snippet_of_each_test_video_in_eval_mode():
    torch.manual_seed(0)
    model = HamNet(4, 2, attention_dim=3)
    model.train()
    data = types.SimpleNamespace(names=["a", "b", "c"], features=[f for f in _videos([9, 300, 9]).features])
    outputs = model_outputs(model, data)
    assert model.training  # its mode is given back
    model.eval()
    with torch.no_grad():
        for name, feats in zip(data.names, data.features, strict=True):
            cas, att = model(torch.from_numpy(feats)[None])
            got_cas, got_att = outputs[name]
            assert got_cas.shape == (len(feats), 3)
            np.testing.assert_allclose(got_cas, cas[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(np.reshape(got_att, -1), att[0, :, 0].numpy(), atol=1e-6)
