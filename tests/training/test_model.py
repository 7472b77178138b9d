"""HAM-Net network: shapes, size, init, ActivityNet pool, receptive field, padded batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hamnet_deploy.training.config import ModelConfig
from hamnet_deploy.training.model import HamNet, lengths_to_mask
from hamnet_deploy.training.recipes import load_recipe

D, C, ATT = 16, 3, 8


def small(pool: int = 1, seed: int = 0) -> HamNet:
    torch.manual_seed(seed)
    return HamNet(D, C, dropout=0.5, pool_kernel=pool, attention_dim=ATT).eval()


def test_output_shapes_and_ranges():
    net = small()
    x = torch.randn(2, 11, D)
    cas, att = net(x)
    assert cas.shape == (2, 11, C + 1)
    assert att.shape == (2, 11, 1)
    assert torch.all((att > 0) & (att < 1))
    with pytest.raises(ValueError):
        net(torch.randn(11, D))


def test_parameter_count_and_flops_at_paper_size():
    net = HamNet(2048, 20)
    expected = (
        2 * (2048 * 2048 * 3 + 2048)  # two classification convs
        + (2048 * 21 + 21)  # class logits
        + (2048 * 512 * 3 + 512)
        + (512 * 512 * 3 + 512)
        + (512 + 1)  # attention branch
    )
    assert net.num_parameters() == expected == 29_146_646
    assert net.num_parameters() / 1e6 == pytest.approx(29.1, abs=0.05)
    assert net.flops_per_snippet() / 1e6 == pytest.approx(58.3, abs=0.1)
    assert net.receptive_radius == 2
    assert HamNet(2048, 100, pool_kernel=17).receptive_radius == 10


def test_init_kaiming_uniform_and_zero_bias():
    net = HamNet(64, 5, attention_dim=32)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv1d)]
    assert len(convs) == 6
    for conv in convs:
        assert torch.all(conv.bias == 0)
        fan_in = conv.in_channels * conv.kernel_size[0]
        bound = math.sqrt(2.0) * math.sqrt(3.0 / fan_in)  # gain(leaky_relu, 0) = sqrt(2)
        w = conv.weight.detach().abs()
        assert float(w.max()) <= bound + 1e-7
        # PyTorch's default init has bound 1/sqrt(fan_in) = bound / sqrt(6): far below
        if conv.weight.numel() >= 1000:
            assert float(w.max()) > 0.9 * bound


def test_module_names_match_released_checkpoints():
    keys = set(small().state_dict())
    assert {"classifier.0.weight", "classifier.2.weight", "classifier.5.weight"} <= keys
    assert {"attention.0.weight", "attention.2.weight", "attention.4.weight"} <= keys


def test_from_config_uses_recipe():
    cfg = load_recipe("activitynet12").model
    cfg = ModelConfig(
        feature_dim=D,
        num_classes=cfg.num_classes,
        dropout=cfg.dropout,
        pool_kernel=cfg.pool_kernel,
        attention_dim=ATT,
    )
    net = HamNet.from_config(cfg)
    assert net.pool_kernel == 17 and net.receptive_radius == 10
    assert net.classifier[4].p == 0.5
    assert HamNet.from_config(ModelConfig()).classifier[4].p == 0.7


def test_activitynet_pool_is_zero_padded_moving_average():
    plain, pooled = small(1), small(17)
    pooled.load_state_dict(plain.state_dict())
    x = torch.randn(1, 40, D)
    with torch.no_grad():
        cas0, att0 = plain(x)
        cas1, att1 = pooled(x)
    kernel = np.ones(17) / 17.0
    for raw, out in ((cas0, cas1), (att0, att1)):
        raw_np, out_np = raw[0].numpy(), out[0].numpy()
        for j in range(raw_np.shape[1]):
            ref = np.convolve(raw_np[:, j], kernel, mode="same")  # zeros outside, /17
            np.testing.assert_allclose(out_np[:, j], ref, rtol=1e-5, atol=1e-6)
    # smoother in time: much smaller total variation
    tv = lambda z: float(z.diff(dim=1).abs().sum())  # noqa: E731
    assert tv(cas1) < 0.5 * tv(cas0) and tv(att1) < 0.5 * tv(att0)


@pytest.mark.parametrize("pool", [1, 17])
def test_receptive_radius(pool):
    net = small(pool)
    t_len, t0 = 41, 20
    x = torch.randn(1, t_len, D)
    y = x.clone()
    y[0, t0] += 3.0 * torch.randn(D)
    with torch.no_grad():
        changed = np.zeros(t_len, dtype=bool)
        for a, b in zip(net(x), net(y), strict=True):
            changed |= (a - b).abs().amax(dim=-1)[0].numpy() > 1e-6
    rad = net.receptive_radius
    expected = np.abs(np.arange(t_len) - t0) <= rad
    np.testing.assert_array_equal(changed, expected)


@pytest.mark.parametrize("pool", [1, 17])
def test_padded_batch_equals_one_at_a_time(pool):
    net = small(pool, seed=1)
    lengths = [7, 25, 3, 18, 1]
    tmax = max(lengths)
    gen = torch.Generator().manual_seed(0)
    videos = [torch.randn(n, D, generator=gen) for n in lengths]
    batch = 100.0 * torch.randn(len(lengths), tmax, D, generator=gen)  # garbage padding
    for b, v in enumerate(videos):
        batch[b, : v.shape[0]] = v
    mask = lengths_to_mask(torch.tensor(lengths), tmax)
    with torch.no_grad():
        cas_b, att_b = net(batch, mask)
        for b, v in enumerate(videos):
            cas_1, att_1 = net(v[None])
            n = v.shape[0]
            torch.testing.assert_close(cas_b[b, :n], cas_1[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(att_b[b, :n], att_1[0], rtol=1e-5, atol=1e-5)
            assert torch.all(cas_b[b, n:] == 0) and torch.all(att_b[b, n:] == 0)
        # without the mask the padding leaks into the last snippets of short videos
        cas_nomask, _ = net(batch)
    assert not torch.allclose(cas_nomask[0, :7], cas_b[0, :7], atol=1e-4)


def test_mask_all_true_equals_no_mask_and_training_mode_runs():
    net = small(17)
    x = torch.randn(2, 30, D)
    with torch.no_grad():
        a = net(x)
        b = net(x, torch.ones(2, 30, dtype=torch.bool))
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v)
    net.train()
    cas, att = net(x, torch.ones(2, 30, dtype=torch.bool))
    (cas.sum() + att.sum()).backward()
    assert net.attention[0].weight.grad is not None


def test_bad_pool_kernel():
    with pytest.raises(ValueError):
        HamNet(D, C, pool_kernel=16)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("pool", [1, 17])
def test_forward_exports_to_onnx_with_dynamic_batch_and_time(pool, tmp_path):
    import onnx  # noqa: F401
    import onnxruntime as ort
    net = small(pool)
    path = tmp_path / "hamnet.onnx"
    dyn = {0: "batch", 1: "T"}
    torch.onnx.export(
        net,
        (torch.randn(1, 29, D),),
        str(path),
        input_names=["features"],
        output_names=["cas", "attention"],
        dynamic_axes={"features": dyn, "cas": dyn, "attention": dyn},
        dynamo=False,
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 45, D)
    cas, att = sess.run(None, {"features": x.numpy()})
    with torch.no_grad():
        ref_cas, ref_att = net(x)
    np.testing.assert_allclose(cas, ref_cas.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(att, ref_att.numpy(), rtol=1e-4, atol=1e-5)
