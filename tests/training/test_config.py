"""Training configuration: recipes with SPEC values, overrides, errors, JSON round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hamnet_deploy.runtime.errors import ConfigError
from hamnet_deploy.training.config import ABLATIONS, LossConfig, TrainConfig, apply_ablation
from hamnet_deploy.training.recipes import available_recipes, load_recipe


def test_recipes_are_shipped():
    assert {"thumos14", "activitynet12"} <= set(available_recipes())


def test_thumos14_recipe_matches_spec_and_defaults():
    cfg = load_recipe("thumos14")
    lo, m, o, d = cfg.loss, cfg.model, cfg.optim, cfg.data
    assert (lo.alpha, lo.beta, lo.lm1, lo.lm2, lo.p, lo.gamma, lo.r) == (
        0.8,
        0.8,
        1.0,
        1.0,
        0.2,
        0.2,
        10.0,
    )
    assert lo.drop_mode == "relative" and lo.sparsity_reduce == "mean" and lo.keep_min_logit
    assert (m.feature_dim, m.num_classes, m.dropout, m.pool_kernel, m.attention_dim) == (
        2048,
        20,
        0.7,
        1,
        512,
    )
    assert (o.name, o.lr, o.weight_decay) == ("adam", 1e-5, 1e-3)
    assert (d.num_snippets, d.batch_size, d.sampling, d.snippet_seconds) == (
        500,
        20,
        "random",
        0.64,
    )
    assert cfg.epochs == 100 and cfg.recipe == "thumos14" and cfg.ablation is None
    # the dataclass defaults are the THUMOS14 column too
    default = TrainConfig()
    assert default.loss == lo and default.model == m and default.optim == o
    assert default.epochs == 100 and default.data.num_snippets == 500


def test_activitynet_recipe_matches_spec():
    cfg = load_recipe("activitynet12")
    lo, m = cfg.loss, cfg.model
    assert (lo.alpha, lo.beta, lo.lm1, lo.lm2, lo.p, lo.gamma, lo.r) == (
        0.5,
        0.1,
        0.25,
        2.0,
        0.5,
        0.2,
        20.0,
    )
    assert (m.dropout, m.pool_kernel) == (0.5, 17)
    assert cfg.data.num_snippets == 80 and cfg.data.batch_size == 20
    assert cfg.epochs == 20 and cfg.optim.lr == 1e-5 and cfg.optim.weight_decay == 1e-3


def test_load_recipe_by_path_and_partial_file(tmp_path):
    p = tmp_path / "mine.json"
    p.write_text(json.dumps({"epochs": 3, "loss": {"alpha": 0.1}}))
    cfg = load_recipe(p)
    assert cfg.epochs == 3 and cfg.loss.alpha == 0.1 and cfg.loss.beta == 0.8
    assert load_recipe(str(p)).epochs == 3


def test_load_recipe_errors(tmp_path):
    with pytest.raises(ConfigError, match="thumos14"):
        load_recipe("thumos15")
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_recipe(bad)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"loss": {"alpah": 0.1}}))
    with pytest.raises(ConfigError, match="alpha"):
        load_recipe(unknown)
    wrong_type = tmp_path / "wrong.json"
    wrong_type.write_text(json.dumps({"epochs": "many"}))
    with pytest.raises(ConfigError, match="epochs"):
        load_recipe(wrong_type)


def test_overrides_coerce_types():
    base = load_recipe("thumos14")
    cfg = base.with_overrides(
        [
            "loss.alpha=0.5",
            "optim.lr=1e-4",
            "epochs=3",
            "amp=true",
            "loss.use_guide=off",
            "optim.grad_clip=1",
            "loss.drop_mode=absolute",
            "data.path=/data/thumos",
            "model.pool_kernel=17",
            "seed = 7",
        ],
    )
    assert cfg.loss.alpha == 0.5 and isinstance(cfg.loss.alpha, float)
    assert cfg.optim.lr == 1e-4
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.amp is True and cfg.loss.use_guide is False
    assert cfg.optim.grad_clip == 1.0 and cfg.loss.drop_mode == "absolute"
    assert cfg.data.path == "/data/thumos" and cfg.model.pool_kernel == 17 and cfg.seed == 7
    # the input is not modified
    assert base.loss.alpha == 0.8 and base.epochs == 100
    back = cfg.with_overrides(["optim.grad_clip=null", "data.path=none"])
    assert back.optim.grad_clip is None and back.data.path is None


@pytest.mark.parametrize(
    "item, pattern",
    [
        ("loss.alpah=0.5", "alpha"),
        ("los.alpha=0.5", "unknown setting"),
        ("nosuch=1", "unknown setting"),
        ("loss=1", "unknown setting"),
        ("loss.alpha", "key=value"),
        ("loss.alpha=abc", "number"),
        ("loss.alpha=nan", "number"),
        ("epochs=2.5", "whole number"),
        ("amp=maybe", "true or false"),
        ("loss.drop_mode=paper", "relative"),
        ("loss.p=1.5", r"loss.p=1.5: must be <= 1"),
        ("model.pool_kernel=16", "odd"),
        ("model.feature_dim=1024", "data.feature_dim"),
        ("epochs=0", "epochs"),
        ("device=tpu", "device"),
        ("ablation=exp99", "exp1"),
        ("optim.lr=none", "number"),
    ],
)
def test_bad_overrides_raise_config_error(item, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_recipe("thumos14").with_overrides([item])


def test_feature_dim_overrides_together():
    cfg = TrainConfig().with_overrides(["model.feature_dim=1024", "data.feature_dim=1024"])
    assert cfg.model.feature_dim == cfg.data.feature_dim == 1024


def test_round_trip_through_json():
    cfg = load_recipe("activitynet12").with_overrides(["ablation=exp5", "optim.grad_clip=2.5", "data.path=x"])
    text = json.dumps(cfg.to_dict())
    again = TrainConfig.from_dict(json.loads(text))
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()


def test_ablations_and_effective_loss():
    assert {"exp1", "exp2", "exp5", "exp9", "exp10", "exp11"} <= set(ABLATIONS)
    for entry in ABLATIONS.values():
        assert entry["description"] and "\n" not in entry["description"]
        assert set(entry["overrides"]) <= set(LossConfig.__dataclass_fields__)
    cfg = TrainConfig().with_overrides(["ablation=exp9"])
    eff = cfg.effective_loss()
    assert eff.use_ssal is False and eff.use_hal is True and eff.use_guide is True
    assert cfg.loss.use_ssal is True  # the section keeps the recipe's switches
    assert cfg.resolved().loss == eff
    assert apply_ablation(LossConfig(), "exp1").active_terms() == ("bcl",)
    # conflicting individual switches are refused, matching ones accepted
    with pytest.raises(ConfigError, match="ablation"):
        TrainConfig().with_overrides(["ablation=exp9", "loss.use_bcl=false"])
    ok = TrainConfig().with_overrides(["ablation=exp10", "loss.use_hal=false"])
    assert ok.effective_loss().use_hal is False
    with pytest.raises(ConfigError, match="switched off"):
        TrainConfig().with_overrides(
            [f"loss.use_{t}=false" for t in ("bcl", "sal", "ssal", "hal", "sparsity", "guide")])


def test_config_module_does_not_import_torch():
    code = "import sys, hamnet_deploy.training.config; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
