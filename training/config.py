"""Training settings: the sections of a run with the SPEC defaults (THUMOS14 column)
and their limits, declared on the fields and checked by `runtime.settings` (one
validator and one `key=value` override syntax for every layer).

- ``cfg.with_overrides(["loss.alpha=0.5", "optim.lr=1e-4", "epochs=3"])`` applies
  command-line settings, ``TrainConfig.from_dict(d, where)`` / ``cfg.to_dict()``
  round-trip the resolved configuration through JSON.
- :data:`ABLATIONS` names the loss-term sets of the paper's Table 1.
- Recipes (``training/recipes/<name>.json``) are read by ``training.recipes``.

Plain Python (no PyTorch), so the CLI can load, check and print a configuration on a
machine without torch. Every mistake raises ConfigError with a one-line message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from hamnet_deploy.runtime.devices import parse_device
from hamnet_deploy.runtime.errors import ConfigError, HamnetError
from hamnet_deploy.runtime.settings import Invalid, Settings, option, suggest

LOSS_TERMS = ("bcl", "sal", "ssal", "hal", "sparsity", "guide")
"""The six terms of the objective, in SPEC §3 order."""


# --------------------------------------------------------------------------- #
#                                  sections                                   #
# --------------------------------------------------------------------------- #
@dataclass
class ModelConfig(Settings):
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

    where = "model setting"

    feature_dim: int = option(2048, ge=1, le=1 << 20)
    num_classes: int = option(20, ge=1, le=1 << 16)
    dropout: float = option(0.7, ge=0.0, lt=1.0)
    pool_kernel: int = option(1, ge=1, le=1 << 10, odd=True)
    attention_dim: int = option(512, ge=1, le=1 << 16)


@dataclass
class LossConfig(Settings):
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
        label_eps: the MIL target is the labels (with the background target) divided
            by their sum plus this (1e-4, released code; 0 = exactly normalised).
        use_bcl, use_sal, use_ssal, use_hal, use_sparsity, use_guide: term switches.
    """

    where = "loss setting"

    alpha: float = option(0.8, ge=0.0)
    beta: float = option(0.8, ge=0.0)
    lm1: float = option(1.0, ge=0.0)
    lm2: float = option(1.0, ge=0.0)
    p: float = option(0.2, ge=0.0, le=1.0)
    gamma: float = option(0.2, ge=0.0, le=1.0)
    r: float = option(10.0, ge=1.0)
    drop_mode: Literal["relative", "absolute"] = "relative"
    keep_min_logit: bool = True
    sparsity_reduce: Literal["mean", "sum"] = "mean"
    label_eps: float = option(1e-4, ge=0.0, le=1.0)
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
        raise ConfigError(f"unknown ablation {name!r}: choose one of {', '.join(ABLATIONS)}"
                          f"{suggest(name, ABLATIONS)}")
    return dataclasses.replace(loss, **ABLATIONS[name]["overrides"])


@dataclass
class OptimConfig(Settings):
    """Optimiser (SPEC §3: Adam, lr 1e-5, weight decay 1e-3, both recipes).

    Attributes:
        name: ``"adam"`` (released code) or ``"adamw"``.
        lr: learning rate.
        weight_decay: L2 weight decay (Adam's coupled form for ``adam``).
        grad_clip: clip the gradient norm to this value; None = no clipping (the
            released code defines ``gradient_clip_val`` but never passes it on).
    """

    where = "optimiser setting"

    name: Literal["adam", "adamw"] = "adam"
    lr: float = option(1e-5, gt=0.0)
    weight_decay: float = option(1e-3, ge=0.0)
    grad_clip: float | None = option(None, gt=0.0)


@dataclass
class DataConfig(Settings):
    """Data and sampling.

    Attributes:
        path: dataset location (W-TALC folder or per-video layout); None = set later.
        num_snippets: T of a training sample (500 THUMOS14; 80 ActivityNet).
        sampling: ``"random"`` ("random perturb": one random index in each of
            ``num_snippets`` equal bins, in order), ``"uniform"`` (deterministic, each
            bin's start as in the released code; see ``training.sampling``), ``"all"``
            (no sampling).
        short_videos: videos shorter than ``num_snippets``: ``"released"`` (upsampled
            to ``num_snippets`` by repeating snippets, with the released code's random
            choice where a bin straddles two), ``"mask"`` (kept at their real length,
            the batch padded and the padding masked: top-k sees the real T) or
            ``"repeat"`` (upsampled as released, without the random choice).
        bins: videos longer than ``num_snippets``: ``"released"`` (each bin draws
            from a closed range, so neighbours may draw the same snippet) or
            ``"disjoint"`` (half-open bins, one distinct snippet each).
        batch_size: videos per batch (20).
        feature_dim: D of the feature rows; must equal ``model.feature_dim``.
        snippet_seconds: duration of one snippet (16 frames at 25 fps = 0.64 s).
        train_subset: split used for training (W-TALC THUMOS14: ``validation``).
        test_subset: split used for evaluation (W-TALC THUMOS14: ``test``).
        num_workers: DataLoader worker processes (0 = main process).
        loader: ``"host"`` (a DataLoader sampling on the CPU, batches copied to the
            device) or ``"device"`` (the training split copied to the device once,
            order and snippets drawn there, no host work or read-back per step: for
            GPUs with room for the split; same rules, another random stream).
    """

    where = "data setting"

    path: str | None = None
    num_snippets: int = option(500, ge=1, le=1 << 20)
    sampling: Literal["random", "uniform", "all"] = "random"
    short_videos: Literal["released", "mask", "repeat"] = "released"
    bins: Literal["released", "disjoint"] = "released"
    batch_size: int = option(20, ge=1, le=1 << 16)
    feature_dim: int = option(2048, ge=1, le=1 << 20)
    snippet_seconds: float = option(0.64, gt=0.0)
    train_subset: str = option("validation", nonempty=True)
    test_subset: str = option("test", nonempty=True)
    num_workers: int = option(0, ge=0, le=1024)
    loader: Literal["host", "device"] = "host"


@dataclass
class TrainConfig(Settings):
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

    where = "training setting"

    recipe: str = "thumos14"
    epochs: int = option(100, ge=1, le=1 << 24)
    seed: int = option(0, ge=0, le=2**63 - 1)
    eval_every: int = option(5, ge=0, le=1 << 24)
    device: str = "auto"
    amp: bool | None = None
    ablation: str | None = None
    output_dir: str = option("runs/thumos14", nonempty=True)
    model: ModelConfig = option(factory=ModelConfig)
    loss: LossConfig = option(factory=LossConfig)
    optim: OptimConfig = option(factory=OptimConfig)
    data: DataConfig = option(factory=DataConfig)

    def effective_loss(self) -> LossConfig:
        """The loss settings the trainer uses: ``loss`` with the ablation's switches."""
        if self.ablation is None:
            return dataclasses.replace(self.loss)
        return apply_ablation(self.loss, self.ablation)

    def resolved(self) -> TrainConfig:
        """A validated copy whose ``loss`` already carries the ablation's switches."""
        self.validate()
        return dataclasses.replace(self, loss=self.effective_loss())

    def check(self) -> None:
        if self.model.feature_dim != self.data.feature_dim:
            raise Invalid("model.feature_dim", self.model.feature_dim,
                          f"differs from data.feature_dim={self.data.feature_dim}; set both to the width "
                          "of the feature rows")
        if self.ablation is not None:
            if self.ablation not in ABLATIONS:
                raise Invalid("ablation", self.ablation, f"unknown; choose one of {', '.join(ABLATIONS)} or "
                                                         f"null{suggest(self.ablation, ABLATIONS)}")
            switches = {k: getattr(self.loss, k) for k in _switches()}
            if switches != _switches(*LOSS_TERMS) and switches != ABLATIONS[self.ablation]["overrides"]:
                raise Invalid("ablation", self.ablation, "sets the loss.use_* switches itself: remove the "
                                                         "loss.use_* settings or set ablation=null")
        if not any(getattr(self.effective_loss(), f"use_{t}") for t in LOSS_TERMS):
            raise Invalid("loss", problem="every loss term is switched off: switch at least one loss.use_* on")
        dev = self.device
        try:
            parse_device(dev)
        except HamnetError:
            raise Invalid("device", dev, "use auto, cpu, cuda, cuda:N, N (a GPU index) or mps") from None


SECTIONS: dict[str, type] = {"model": ModelConfig, "loss": LossConfig, "optim": OptimConfig, "data": DataConfig}
