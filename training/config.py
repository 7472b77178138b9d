"""Training settings: dataclasses with the SPEC defaults, recipes, overrides.

Everything here is plain Python (no PyTorch), so the CLI can load, check and print
a configuration on a machine without torch.

- Defaults are SPEC §3's THUMOS14 column; ``training/recipes/<name>.json`` holds
  the two published recipes (``thumos14``, ``activitynet12``).
- :func:`load_recipe` reads a recipe by name or path, :func:`apply_overrides`
  applies ``section.key=value`` strings (``loss.alpha=0.5``, ``optim.lr=1e-4``,
  ``epochs=3``) with type coercion, :func:`to_dict` / :func:`from_dict` round-trip
  the resolved configuration through JSON.
- :data:`ABLATIONS` names the loss-term sets of the paper's Table 1.

Every mistake raises :class:`runtime.errors.ConfigError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hamnet_deploy.runtime.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"

LOSS_TERMS = ("bcl", "sal", "ssal", "hal", "sparsity", "guide")
"""The six terms of the objective, in SPEC §3 order."""


# --------------------------------------------------------------------------- #
#                                  sections                                   #
# --------------------------------------------------------------------------- #
@dataclass
class ModelConfig:
    """HAM-Net network (SPEC §2).

    Attributes:
        feature_dim: D, size of one snippet feature row (2048 = I3D RGB + flow).
        num_classes: C, number of action classes; the network outputs C + 1 logits
            (last column = background). 20 on THUMOS14, 100 on ActivityNet1.2.
        dropout: dropout before the last classification conv (0.7; 0.5 ActivityNet).
        pool_kernel: temporal average pool on both outputs (1 = none; 17 ActivityNet).
            Must be odd.
        attention_dim: width of the attention branch (512).
    """

    feature_dim: int = 2048
    num_classes: int = 20
    dropout: float = 0.7
    pool_kernel: int = 1
    attention_dim: int = 512


@dataclass
class LossConfig:
    """Training objective (SPEC §3).

    ``L = lm1 * ((1-p) BCL + p HAL) + lm2 * ((1-p) SAL + p SSAL) + alpha * sparse
    + beta * guide``.

    Switching a term off (``use_* = False``) sets that term's weight to 0 and leaves
    the other weights unchanged (no renormalisation): the paper's ablation rows drop
    lambdas, they do not rescale the rest.

    Attributes:
        alpha: weight of the sparsity loss (0.8; 0.5 ActivityNet).
        beta: weight of the guide loss (0.8; 0.1 ActivityNet).
        lm1: weight of the background-kept pair BCL/HAL (1; 0.25 ActivityNet).
        lm2: weight of the background-suppressed pair SAL/SSAL (1; 2 ActivityNet).
        p: drop blend, share of HAL in lm1's pair and of SSAL in lm2's (0.2; 0.5).
        gamma: drop threshold (0.2).
        r: top-k ratio, ``k = max(1, floor(T / r))`` (10; 20 ActivityNet).
        drop_mode: ``"relative"`` (released code: threshold ``gamma * max_t a`` per
            video) or ``"absolute"`` (paper: threshold ``gamma``).
        keep_min_logit: released code's multiplication for SSAL/HAL,
            ``m * (s - min_j s) + min_j s``; False gives the paper's plain ``m * s``.
        sparsity_reduce: ``"mean"`` over time (released code) or ``"sum"`` (paper).
        use_bcl, use_sal, use_ssal, use_hal, use_sparsity, use_guide: term switches.
    """

    alpha: float = 0.8
    beta: float = 0.8
    lm1: float = 1.0
    lm2: float = 1.0
    p: float = 0.2
    gamma: float = 0.2
    r: float = 10.0
    drop_mode: Literal["relative", "absolute"] = "relative"
    keep_min_logit: bool = True
    sparsity_reduce: Literal["mean", "sum"] = "mean"
    use_bcl: bool = True
    use_sal: bool = True
    use_ssal: bool = True
    use_hal: bool = True
    use_sparsity: bool = True
    use_guide: bool = True

    def weights(self) -> dict[str, float]:
        """Weight of each term in the total (0.0 for a switched-off term)."""
        w = {
            "bcl": self.lm1 * (1.0 - self.p),
            "hal": self.lm1 * self.p,
            "sal": self.lm2 * (1.0 - self.p),
            "ssal": self.lm2 * self.p,
            "sparsity": self.alpha,
            "guide": self.beta,
        }
        return {t: (w[t] if getattr(self, f"use_{t}") else 0.0) for t in LOSS_TERMS}

    def paper_lambdas(self) -> tuple[float, float, float, float]:
        """The paper's (lambda0, lambda1, lambda2, lambda3) for BCL, SAL, SSAL, HAL."""
        w = self.weights()
        return (w["bcl"], w["sal"], w["ssal"], w["hal"])

    def active_terms(self) -> tuple[str, ...]:
        """Names of the switched-on terms, in SPEC order."""
        return tuple(t for t in LOSS_TERMS if getattr(self, f"use_{t}"))


def _switches(*on: str) -> dict[str, bool]:
    return {f"use_{t}": (t in on) for t in LOSS_TERMS}


ABLATIONS: dict[str, dict[str, Any]] = {
    "exp1": {
        "description": "BCL only (Table 1 row 1, paper avg mAP 24.6)",
        "overrides": _switches("bcl"),
    },
    "exp2": {
        "description": "BCL + SAL (row 2, 30.8)",
        "overrides": _switches("bcl", "sal"),
    },
    "exp3": {
        "description": "BCL + SAL + guide (row 3, 28.9)",
        "overrides": _switches("bcl", "sal", "guide"),
    },
    "exp4": {
        "description": "BCL + SAL + sparsity (row 4, 30.9)",
        "overrides": _switches("bcl", "sal", "sparsity"),
    },
    "exp5": {
        "description": "BCL + SAL + sparsity + guide, the 'MIL-only' model (row 5, 34.8)",
        "overrides": _switches("bcl", "sal", "sparsity", "guide"),
    },
    "exp6": {
        "description": "BCL + SAL + HAL + SSAL, no regularisers (row 6, 30.9)",
        "overrides": _switches("bcl", "sal", "hal", "ssal"),
    },
    "exp7": {
        "description": "BCL + SAL + HAL + SSAL + guide (row 7, 31.1)",
        "overrides": _switches("bcl", "sal", "hal", "ssal", "guide"),
    },
    "exp8": {
        "description": "BCL + SAL + HAL + SSAL + sparsity (row 8, 37.9)",
        "overrides": _switches("bcl", "sal", "hal", "ssal", "sparsity"),
    },
    "exp9": {
        "description": "all but SSAL (row 9, 36.6)",
        "overrides": _switches("bcl", "sal", "hal", "sparsity", "guide"),
    },
    "exp10": {
        "description": "all but HAL (row 10, 38.1)",
        "overrides": _switches("bcl", "sal", "ssal", "sparsity", "guide"),
    },
    "exp11": {
        "description": "all six terms, the full HAM-Net (row 11, 39.8)",
        "overrides": _switches(*LOSS_TERMS),
    },
}
"""Paper Table 1 rows: name -> {"description": one line, "overrides": LossConfig fields}.

Only the ``use_*`` switches change; the weights stay the recipe's (a switched-off
term gets weight 0, the others are not rescaled)."""


def apply_ablation(loss: LossConfig, name: str) -> LossConfig:
    """Return a copy of ``loss`` with the term switches of ablation ``name``."""
    if name not in ABLATIONS:
        raise ConfigError(
            f"unknown ablation {name!r}: choose one of {', '.join(ABLATIONS)}"
            f"{_suggest(name, ABLATIONS)}"
        )
    return dataclasses.replace(loss, **ABLATIONS[name]["overrides"])


@dataclass
class OptimConfig:
    """Optimiser (SPEC §3: Adam, lr 1e-5, weight decay 1e-3, both recipes).

    Attributes:
        name: ``"adam"`` (released code) or ``"adamw"``.
        lr: learning rate.
        weight_decay: L2 weight decay (Adam's coupled form for ``adam``).
        grad_clip: clip the gradient norm to this value; None = no clipping (the
            released code defines ``gradient_clip_val`` but never passes it on).
    """

    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-5
    weight_decay: float = 1e-3
    grad_clip: float | None = None


@dataclass
class DataConfig:
    """Data and sampling.

    Attributes:
        path: dataset location (W-TALC folder or per-video layout); None = set later.
        num_snippets: T of a training sample (500 THUMOS14; 80 ActivityNet).
        sampling: ``"random"`` ("random perturb": one random index in each of T
            equal bins, sorted), ``"uniform"`` (deterministic, each bin's start as in
            the released code; see ``training.sampling``), ``"all"`` (no sampling).
        batch_size: videos per batch (20).
        feature_dim: D of the feature rows; must equal ``model.feature_dim``.
        snippet_seconds: duration of one snippet (16 frames at 25 fps = 0.64 s).
        train_subset: split used for training (W-TALC THUMOS14: ``validation``).
        test_subset: split used for evaluation (W-TALC THUMOS14: ``test``).
        num_workers: DataLoader worker processes (0 = main process).
    """

    path: str | None = None
    num_snippets: int = 500
    sampling: Literal["random", "uniform", "all"] = "random"
    batch_size: int = 20
    feature_dim: int = 2048
    snippet_seconds: float = 0.64
    train_subset: str = "validation"
    test_subset: str = "test"
    num_workers: int = 0


@dataclass
class TrainConfig:
    """A whole training run.

    Attributes:
        recipe: name of the recipe the run started from (``thumos14``, ...).
        epochs: training epochs (100 THUMOS14; 20 ActivityNet); the released code
            evaluates the last epoch.
        seed: random seed (runs are reproducible on CPU for a given seed).
        eval_every: evaluate every this many epochs (0 = only at the end).
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"`` or ``"mps"``.
        amp: mixed-precision training; None (default) = on for CUDA, off elsewhere.
        ablation: None (use ``loss.use_*`` as set) or a key of :data:`ABLATIONS`,
            which then decides the six term switches (see :meth:`effective_loss`).
        output_dir: folder for checkpoints, logs and the resolved config.
        model, loss, optim, data: the sections above.
    """

    recipe: str = "thumos14"
    epochs: int = 100
    seed: int = 0
    eval_every: int = 5
    device: str = "auto"
    amp: bool | None = None
    ablation: str | None = None
    output_dir: str = "runs/thumos14"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def effective_loss(self) -> LossConfig:
        """The loss settings the trainer uses: ``loss`` with the ablation's switches."""
        if self.ablation is None:
            return dataclasses.replace(self.loss)
        return apply_ablation(self.loss, self.ablation)

    def resolved(self) -> TrainConfig:
        """A validated copy whose ``loss`` already carries the ablation's switches."""
        self.validate()
        return dataclasses.replace(self, loss=self.effective_loss())

    def validate(self) -> TrainConfig:
        """Check every value and combination; raise ConfigError on the first problem."""
        _validate(self)
        return self


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "data": DataConfig,
}


# --------------------------------------------------------------------------- #
#                                 validation                                  #
# --------------------------------------------------------------------------- #
def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _validate(cfg: TrainConfig) -> None:
    m, lo, o, d = cfg.model, cfg.loss, cfg.optim, cfg.data
    _check(m.feature_dim >= 1, f"model.feature_dim={m.feature_dim}: must be >= 1")
    _check(m.num_classes >= 1, f"model.num_classes={m.num_classes}: must be >= 1")
    _check(0.0 <= m.dropout < 1.0, f"model.dropout={m.dropout}: must be in [0, 1)")
    _check(
        m.pool_kernel >= 1 and m.pool_kernel % 2 == 1,
        f"model.pool_kernel={m.pool_kernel}: must be an odd number >= 1 (1 = no pooling)",
    )
    _check(m.attention_dim >= 1, f"model.attention_dim={m.attention_dim}: must be >= 1")
    _check(
        m.feature_dim == d.feature_dim,
        f"model.feature_dim={m.feature_dim} but data.feature_dim={d.feature_dim}: set both "
        "to the width of the feature rows",
    )
    for name in ("alpha", "beta", "lm1", "lm2"):
        v = getattr(lo, name)
        _check(math.isfinite(v) and v >= 0, f"loss.{name}={v}: must be a finite number >= 0")
    _check(0.0 <= lo.p <= 1.0, f"loss.p={lo.p}: the drop blend must be in [0, 1]")
    _check(0.0 <= lo.gamma <= 1.0, f"loss.gamma={lo.gamma}: the drop threshold must be in [0, 1]")
    _check(math.isfinite(lo.r) and lo.r >= 1,
           f"loss.r={lo.r}: the top-k ratio must be >= 1 (k = T / r snippets cannot exceed T)")
    if cfg.ablation is not None:
        if cfg.ablation not in ABLATIONS:
            raise ConfigError(
                f"ablation={cfg.ablation!r} is unknown: choose one of "
                f"{', '.join(ABLATIONS)} or null{_suggest(cfg.ablation, ABLATIONS)}"
            )
        switches = {k: getattr(lo, k) for k in _switches()}
        if switches != _switches(*LOSS_TERMS) and switches != ABLATIONS[cfg.ablation]["overrides"]:
            raise ConfigError(
                f"ablation={cfg.ablation} sets the loss.use_* switches itself: remove the "
                "loss.use_* settings or set ablation=null"
            )
    if not any(getattr(cfg.effective_loss(), f"use_{t}") for t in LOSS_TERMS):
        raise ConfigError("every loss term is switched off: switch at least one loss.use_* on")
    _check(math.isfinite(o.lr) and o.lr > 0, f"optim.lr={o.lr}: must be > 0")
    _check(o.weight_decay >= 0, f"optim.weight_decay={o.weight_decay}: must be >= 0")
    _check(
        o.grad_clip is None or o.grad_clip > 0,
        f"optim.grad_clip={o.grad_clip}: must be > 0, or null for no clipping",
    )
    _check(d.num_snippets >= 1, f"data.num_snippets={d.num_snippets}: must be >= 1")
    _check(d.batch_size >= 1, f"data.batch_size={d.batch_size}: must be >= 1")
    _check(d.feature_dim >= 1, f"data.feature_dim={d.feature_dim}: must be >= 1")
    _check(d.snippet_seconds > 0, f"data.snippet_seconds={d.snippet_seconds}: must be > 0")
    _check(d.num_workers >= 0, f"data.num_workers={d.num_workers}: must be >= 0")
    _check(cfg.epochs >= 1, f"epochs={cfg.epochs}: must be >= 1")
    _check(cfg.eval_every >= 0, f"eval_every={cfg.eval_every}: must be >= 0 (0 = at the end)")
    dev = cfg.device
    ok_dev = dev in ("auto", "cpu", "cuda", "mps") or (
        dev.startswith("cuda:") and dev[5:].isdigit()
    )
    _check(ok_dev, f"device={dev!r}: use auto, cpu, cuda, cuda:N or mps")
    _check(bool(cfg.output_dir), "output_dir is empty: name a folder for the run")
    # Literal-typed fields set directly in Python (not through overrides).
    for sec_name, cls in SECTIONS.items():
        sec = getattr(cfg, sec_name)
        for f in dataclasses.fields(cls):
            _coerce(getattr(sec, f.name), _hints(cls)[f.name], f"{sec_name}.{f.name}")


# --------------------------------------------------------------------------- #
#                           dict round trip, recipes                          #
# --------------------------------------------------------------------------- #
def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain JSON-ready dict of ``cfg`` (sections as nested dicts)."""
    return dataclasses.asdict(cfg)


def _section_from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object of settings, got {type(data).__name__}")
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(
                f"{where}: unknown setting {key!r}{_suggest(key, hints)}; valid: {', '.join(hints)}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    return cls(**kwargs)


def from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    """Build a TrainConfig from a (possibly partial) dict; missing keys keep defaults.

    Unknown keys and values of the wrong type raise ConfigError naming ``where``.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    top = dict(data)
    sections = {}
    for name, cls in SECTIONS.items():
        if name in top:
            sections[name] = _section_from_dict(cls, top.pop(name), f"{where}: {name}")
    cfg = _section_from_dict(TrainConfig, {}, where)
    hints = _hints(TrainConfig)
    for key, value in top.items():
        if key not in hints:
            raise ConfigError(
                f"{where}: unknown setting {key!r}{_suggest(key, hints)}; valid: {', '.join(hints)}"
            )
        setattr(cfg, key, _coerce(value, hints[key], f"{where}: {key}"))
    for name, sec in sections.items():
        setattr(cfg, name, sec)
    return cfg.validate()


def available_recipes() -> list[str]:
    """Names of the recipes shipped in ``training/recipes``."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def load_recipe(name_or_path: str | Path) -> TrainConfig:
    """Load a recipe by name (``thumos14``, ``activitynet12``) or by JSON file path."""
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix == ".json" or path.is_file()):
        path = RECIPES_DIR / f"{text}.json"
        if not path.is_file():
            names = available_recipes()
            raise ConfigError(
                f"unknown recipe {text!r}: choose one of {', '.join(names)} or give a .json "
                f"path{_suggest(text, names)}"
            )
    if not path.is_file():
        raise ConfigError(f"recipe file {path} does not exist: check the path")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(
            f"recipe file {path} is not valid JSON ({exc}): fix or re-create it"
        ) from None
    return from_dict(data, where=str(path))


# --------------------------------------------------------------------------- #
#                                 overrides                                   #
# --------------------------------------------------------------------------- #
def _unknown_hint(parts: list[str]) -> str:
    """'(did you mean ...?)' when a key is close, else the valid keys where it was looked up."""
    key = ".".join(parts)
    suggestion = _suggest(key, _all_keys())
    if suggestion:
        return suggestion
    if len(parts) == 2 and parts[0] in SECTIONS:
        return f"; valid {parts[0]}.* keys: {', '.join(_hints(SECTIONS[parts[0]]))}"
    top = [k for k in _hints(TrainConfig) if k not in SECTIONS]
    return f"; valid keys: {', '.join(top)}, or section.key in {', '.join(SECTIONS)}"


def _all_keys() -> list[str]:
    keys = [k for k in _hints(TrainConfig) if k not in SECTIONS]
    for name, cls in SECTIONS.items():
        keys += [f"{name}.{k}" for k in _hints(cls)]
    return keys


def apply_overrides(cfg: TrainConfig, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
    """Return a validated copy of ``cfg`` with ``key=value`` overrides applied in order.

    Keys are ``section.field`` (``loss.alpha``, ``optim.lr``, ``model.pool_kernel``,
    ``data.batch_size``) or top-level fields (``epochs``, ``seed``, ``ablation``).
    Values are coerced to the field's type: numbers, booleans (true/false, yes/no,
    on/off, 1/0), ``null``/``none`` for optional fields, choices for fixed sets.
    """
    new = from_dict(to_dict(cfg), where="config")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value: write e.g. loss.alpha=0.5")
        key, raw = (s.strip() for s in item.split("=", 1))
        parts = key.split(".")
        if len(parts) == 1 and parts[0] in _hints(TrainConfig) and parts[0] not in SECTIONS:
            target, fname, cls = new, parts[0], TrainConfig
        elif len(parts) == 2 and parts[0] in SECTIONS and parts[1] in _hints(SECTIONS[parts[0]]):
            target, fname, cls = getattr(new, parts[0]), parts[1], SECTIONS[parts[0]]
        else:
            raise ConfigError(f"unknown setting {key!r} in override {item!r}{_unknown_hint(parts)}")
        setattr(target, fname, _coerce(raw, _hints(cls)[fname], key, from_text=True))
    return new.validate()


# --------------------------------------------------------------------------- #
#                                type coercion                                #
# --------------------------------------------------------------------------- #
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null", "~", ""}


def _hints(cls: type) -> dict[str, Any]:
    return {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(value: Any, tp: Any, key: str, from_text: bool = False) -> Any:
    """Convert ``value`` (a JSON value, or a string from the command line) to ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None or (from_text and isinstance(value, str) and value.lower() in _NONE):
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: a value is required (null is not allowed)")
        return _coerce(value, inner[0], key, from_text)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r}: choose one of {', '.join(map(str, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            low = value.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if from_text and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
            try:
                f = float(value)
            except ValueError:
                f = math.nan
            if math.isfinite(f) and f.is_integer():
                return int(f)
        raise ConfigError(f"{key}={value!r}: expected a whole number")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_text and isinstance(value, str):
            try:
                f = float(value.strip())
            except ValueError:
                f = math.nan
            if math.isfinite(f):
                return f
        raise ConfigError(f"{key}={value!r}: expected a finite number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}={value!r}: expected a string")
    raise ConfigError(f"{key}: unsupported setting type {tp!r}")  # pragma: no cover
