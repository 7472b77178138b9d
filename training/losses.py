"""HAM-Net training objective (SPEC §3): four attention-guided MIL losses + two regularisers.

All functions work on batched tensors: ``cas`` (class activation sequence, logits)
[B, T, C+1] with the background class last, ``attention`` [B, T, 1] (or [B, T]) in
[0, 1], ``labels`` [B, C] multi-hot. An optional ``mask`` [B, T] (True = real
snippet) makes padded batches exact: padded positions never enter a top-k, a max
or a mean, and the top-k size ``k`` is computed from each video's own length.
Every term is computed per video and averaged over the batch, so a padded batch
gives the same value as the mean of the videos computed one at a time.

Gradients follow the released code (asrafulashiq/hamnet): nothing is detached.
The drop threshold only enters comparisons, so the indicator ``[a < g]`` (and with
it HAL) passes no gradient to the attention branch, while ``a_semi = a * [a < g]``
(SSAL) and ``a * s`` (SAL) do.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from hamnet_deploy.training.config import ABLATIONS, LOSS_TERMS, LossConfig, apply_ablation
from hamnet_deploy.training.model import lengths_to_mask

__all__ = [
    "ABLATIONS",
    "LOSS_TERMS",
    "HamNetLoss",
    "LossConfig",
    "apply_ablation",
    "bcl_loss",
    "drop_masks",
    "guide_loss",
    "hal_loss",
    "lengths_to_mask",
    "mil_loss",
    "min_logit_multiply",
    "sal_loss",
    "sparsity_loss",
    "ssal_loss",
    "topk_k",
    "topk_mil_pool",
]


# --------------------------------------------------------------------------- #
#                                  helpers                                    #
# --------------------------------------------------------------------------- #
def _att3(attention: torch.Tensor) -> torch.Tensor:
    """Attention as [B, T, 1]."""
    return attention if attention.dim() == 3 else attention.unsqueeze(-1)


def _lengths(mask: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
    """Per-video valid lengths [B] (float) from a mask, or T for every video."""
    if mask is None:
        return torch.full((z.shape[0],), float(z.shape[1]), dtype=z.dtype, device=z.device)
    return mask.to(z.dtype).sum(dim=1)


def _masked_time_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """x [B, T] -> [B] mean over each video's valid snippets."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def _reduce(per_video: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_video.mean()
    if reduction == "none":
        return per_video
    raise ValueError(f"reduction={reduction!r}: use 'mean' or 'none'")


# --------------------------------------------------------------------------- #
#                                MIL pooling                                  #
# --------------------------------------------------------------------------- #
def topk_k(T: int, r: float) -> int:
    """Top-k size for a video of T snippets: ``k = max(1, floor(T / r))``.

    ``r`` is the top-k ratio (10 THUMOS14, 20 ActivityNet); videos shorter than
    ``r`` snippets use k = 1.
    """
    if r <= 0:
        raise ValueError(f"top-k ratio r={r} must be > 0")
    return max(1, math.floor(T / r))


def _topk_k_tensor(lengths: torch.Tensor, r: float) -> torch.Tensor:
    """Vectorised :func:`topk_k` over a [B] length vector -> [B] int64."""
    if float(r).is_integer():
        k = torch.div(lengths.round().long(), int(r), rounding_mode="floor")
    else:
        k = torch.floor(lengths / r).long()
    return k.clamp_min(1)


def topk_mil_pool(
    z: torch.Tensor, k: int | torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Top-k MIL pooling: ``v[b, j]`` = mean of the ``k`` largest ``z[b, :, j]`` over time.

    Args:
        z: scores [B, T, C+1].
        k: one k for every video, or a [B] tensor of per-video k (each <= that
            video's valid length).
        mask: optional [B, T] bool, True = real snippet; padded snippets are never
            selected.

    Returns:
        [B, C+1] video-level scores (before the softmax).
    """
    if mask is None and isinstance(k, int):
        return z.topk(k, dim=1).values.mean(dim=1)
    b = z.shape[0]
    if mask is not None:
        z = z.masked_fill(~mask.to(torch.bool)[..., None], float("-inf"))
    k_t = torch.as_tensor(k, device=z.device).long().reshape(-1).expand(b)
    kmax = int(k_t.max())
    vals = z.topk(kmax, dim=1).values  # [B, kmax, C+1]
    take = torch.arange(kmax, device=z.device)[None, :] < k_t[:, None]  # [B, kmax]
    vals = torch.where(take[..., None], vals, torch.zeros((), dtype=z.dtype, device=z.device))
    return vals.sum(dim=1) / k_t[:, None].to(z.dtype)


def mil_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    background_target: float,
    r: float,
    mask: torch.Tensor | None = None,
    reduction: Literal["mean", "none"] = "mean",
    label_eps: float = 0.0,
) -> torch.Tensor:
    """Top-k MIL cross-entropy of a score sequence against the video labels.

    ``v = topk_mil_pool(z, k)`` with ``k = max(1, floor(T_b / r))`` per video;
    ``p = softmax(v)`` over the C+1 classes; the target is the multi-hot label with
    ``background_target`` (1 or 0) appended, divided by its sum (``label_eps = 0``) or,
    as the released code does, by ``sum + label_eps`` (``LossConfig.label_eps = 1e-4``);
    the loss is ``-sum_j target_j log p_j``. A video whose target is all zero
    contributes 0.

    Args:
        z: scores [B, T, C+1].
        labels: multi-hot [B, C].
        background_target: 1 (BCL, HAL) or 0 (SAL, SSAL).
        r: top-k ratio.
        mask: optional [B, T] bool valid-snippet mask.
        reduction: ``"mean"`` over the batch, or ``"none"`` for a [B] vector.
        label_eps: added to the target's sum before dividing (0: exact normalisation).
    """
    if mask is None:
        k: int | torch.Tensor = topk_k(z.shape[1], r)
    else:
        k = _topk_k_tensor(_lengths(mask, z), r)
    v = topk_mil_pool(z, k, mask)
    labels = labels.to(z.dtype)
    bg = torch.full_like(labels[:, :1], float(background_target))
    target = torch.cat([labels, bg], dim=-1)
    total = target.sum(dim=-1, keepdim=True)
    target = target / (total + label_eps if label_eps > 0 else total.clamp_min(torch.finfo(z.dtype).tiny))
    per_video = -(target * F.log_softmax(v, dim=-1)).sum(dim=-1)
    return _reduce(per_video, reduction)


# --------------------------------------------------------------------------- #
#                           hybrid attention pieces                           #
# --------------------------------------------------------------------------- #
def drop_masks(
    attention: torch.Tensor,
    gamma: float,
    mode: Literal["relative", "absolute"] = "relative",
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Semi-soft and hard drop masks of the attention.

    ``a_semi = a * [a < g]`` and ``a_hard = [a < g]``: the snippets with the highest
    attention (the most discriminative) are dropped. ``g = gamma * max_t a`` per
    video in ``"relative"`` mode (released code, default) or ``g = gamma`` in
    ``"absolute"`` mode (paper). Padded positions (``mask`` False) are 0 in both and
    do not enter the per-video max.

    Not detached (released code): ``a_semi`` carries gradient to the attention
    through ``a``; ``a_hard`` is an indicator and carries none.

    Args:
        attention: [B, T, 1] or [B, T].
        gamma: drop threshold in [0, 1].
        mode: ``"relative"`` or ``"absolute"``.
        mask: optional [B, T] bool valid-snippet mask.

    Returns:
        (a_semi, a_hard), each shaped like ``attention``.
    """
    a = attention
    valid = None
    if mask is not None:
        valid = mask.to(torch.bool)
        if a.dim() == 3:
            valid = valid[..., None]
    if mode == "relative":
        a_for_max = a if valid is None else a.masked_fill(~valid, float("-inf"))
        g = gamma * a_for_max.amax(dim=1, keepdim=True)
    elif mode == "absolute":
        g = torch.as_tensor(gamma, dtype=a.dtype, device=a.device)
    else:
        raise ValueError(f"drop mode {mode!r}: use 'relative' or 'absolute'")
    below = a < g
    if valid is not None:
        below = below & valid
    a_hard = below.to(a.dtype)
    a_semi = a * a_hard
    return a_semi, a_hard


def min_logit_multiply(m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Released code's masked product ``m * (s - min_j s) + min_j s``.

    ``min_j s`` is the minimum over the C+1 classes of each snippet, so a snippet
    with ``m = 0`` carries its minimum logit instead of 0. ``m`` [B, T, 1] or
    [B, T] broadcasts over classes; ``s`` [B, T, C+1].
    """
    m = _att3(m)
    s_min = s.amin(dim=-1, keepdim=True)
    return m * (s - s_min) + s_min


# --------------------------------------------------------------------------- #
#                                 the six terms                               #
# --------------------------------------------------------------------------- #
def bcl_loss(cas: torch.Tensor, labels: torch.Tensor, r: float, mask: torch.Tensor | None = None,
             reduction: Literal["mean", "none"] = "mean", label_eps: float = 0.0) -> torch.Tensor:
    """Base classification loss: MIL loss of the plain CAS, background target 1."""
    return mil_loss(cas, labels, 1.0, r, mask, reduction, label_eps)


def sal_loss(cas: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor, r: float,
             mask: torch.Tensor | None = None, reduction: Literal["mean", "none"] = "mean",
             label_eps: float = 0.0) -> torch.Tensor:
    """Soft attention loss: MIL loss of ``a * s`` (plain product), background target 0."""
    return mil_loss(_att3(attention) * cas, labels, 0.0, r, mask, reduction, label_eps)


def _dropped_mil(cas: torch.Tensor, m: torch.Tensor, labels: torch.Tensor, r: float, mask: torch.Tensor | None,
                 keep_min_logit: bool, background: float, reduction: Literal["mean", "none"],
                 label_eps: float = 0.0) -> torch.Tensor:
    """MIL loss of ``m (*) s``: :func:`min_logit_multiply` (released code) or, with
    ``keep_min_logit=False``, the paper's plain product."""
    z = min_logit_multiply(m, cas) if keep_min_logit else _att3(m) * cas
    return mil_loss(z, labels, background, r, mask, reduction, label_eps)


def ssal_loss(cas: torch.Tensor, a_semi: torch.Tensor, labels: torch.Tensor, r: float,
              mask: torch.Tensor | None = None, keep_min_logit: bool = True,
              reduction: Literal["mean", "none"] = "mean", label_eps: float = 0.0) -> torch.Tensor:
    """Semi-soft attention loss: MIL loss of ``a_semi (*) s``, background target 0."""
    return _dropped_mil(cas, a_semi, labels, r, mask, keep_min_logit, 0.0, reduction, label_eps)


def hal_loss(cas: torch.Tensor, a_hard: torch.Tensor, labels: torch.Tensor, r: float,
             mask: torch.Tensor | None = None, keep_min_logit: bool = True,
             reduction: Literal["mean", "none"] = "mean", label_eps: float = 0.0) -> torch.Tensor:
    """Hard attention loss: MIL loss of ``a_hard (*) s``, background target 1.

    ``a_hard`` is a 0/1 indicator, so this term trains only the classification branch."""
    return _dropped_mil(cas, a_hard, labels, r, mask, keep_min_logit, 1.0, reduction, label_eps)


def sparsity_loss(
    attention: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduce: Literal["mean", "sum"] = "mean",
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Sparsity loss: ``mean_t a`` per video (released code) or ``sum_t a`` (paper, L1).

    Args:
        attention: [B, T, 1] or [B, T] (non-negative, so the L1 norm is the sum).
        mask: optional [B, T] bool valid-snippet mask.
        reduce: ``"mean"`` or ``"sum"`` over time.
        reduction: ``"mean"`` over the batch or ``"none"``.
    """
    a = _att3(attention)[..., 0]
    if reduce == "mean":
        per_video = _masked_time_mean(a, mask)
    elif reduce == "sum":
        per_video = (a if mask is None else a * mask.to(a.dtype)).sum(dim=1)
    else:
        raise ValueError(f"sparsity reduce={reduce!r}: use 'mean' or 'sum'")
    return _reduce(per_video, reduction)


def guide_loss(
    cas: torch.Tensor,
    attention: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Guide loss: ``mean_t |1 - a_t - softmax(s_t)[background]|`` per video.

    The background probability is the softmax over all C+1 logits of the
    unattended CAS ``s`` (released code), taken at the last column.
    """
    bg = F.softmax(cas, dim=-1)[..., -1]
    a = _att3(attention)[..., 0]
    per_video = _masked_time_mean((1.0 - a - bg).abs(), mask)
    return _reduce(per_video, reduction)


# --------------------------------------------------------------------------- #
#                                 total loss                                  #
# --------------------------------------------------------------------------- #
class HamNetLoss(nn.Module):
    """The total HAM-Net objective with per-term switches.

    ``L = lm1 * ((1-p) BCL + p HAL) + lm2 * ((1-p) SAL + p SSAL)
    + alpha * sparse + beta * guide``.

    A switched-off term (``config.use_x = False``) is not computed and its weight
    is 0; the other weights are NOT renormalised. This is the paper's ablation
    semantics (Table 1 drops a lambda, it does not rescale the others): e.g. BCL
    alone still weighs ``lm1 * (1 - p)``. Use :data:`ABLATIONS` /
    :func:`apply_ablation` for the Table 1 rows.
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else LossConfig()

    def forward(
        self,
        cas: torch.Tensor,
        attention: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and each active term's value.

        Args:
            cas: [B, T, C+1] logits.
            attention: [B, T, 1] or [B, T].
            labels: [B, C] multi-hot.
            mask: optional [B, T] bool valid-snippet mask, or
            lengths: optional [B] valid lengths (used when ``mask`` is None).

        Returns:
            ``(total, terms)``: ``total`` a scalar with gradient; ``terms`` maps each
            switched-on term name (``bcl``, ``sal``, ``ssal``, ``hal``, ``sparsity``,
            ``guide``) to its detached scalar value (unweighted), plus ``total``.
        """
        cfg = self.config
        if mask is None and lengths is not None:
            mask = lengths_to_mask(lengths.to(cas.device), cas.shape[1])
        attention = _att3(attention)
        w = cfg.weights()
        terms: dict[str, torch.Tensor] = {}
        if cfg.use_bcl:
            terms["bcl"] = bcl_loss(cas, labels, cfg.r, mask, label_eps=cfg.label_eps)
        if cfg.use_sal:
            terms["sal"] = sal_loss(cas, attention, labels, cfg.r, mask, label_eps=cfg.label_eps)
        if cfg.use_ssal or cfg.use_hal:
            a_semi, a_hard = drop_masks(attention, cfg.gamma, cfg.drop_mode, mask)
            if cfg.use_ssal:
                terms["ssal"] = ssal_loss(cas, a_semi, labels, cfg.r, mask, cfg.keep_min_logit,
                                          label_eps=cfg.label_eps)
            if cfg.use_hal:
                terms["hal"] = hal_loss(cas, a_hard, labels, cfg.r, mask, cfg.keep_min_logit,
                                        label_eps=cfg.label_eps)
        if cfg.use_sparsity:
            terms["sparsity"] = sparsity_loss(attention, mask, cfg.sparsity_reduce)
        if cfg.use_guide:
            terms["guide"] = guide_loss(cas, attention, mask)
        total = cas.new_zeros(())
        for name, value in terms.items():
            total = total + w[name] * value
        out = {name: value.detach() for name, value in terms.items()}
        out["total"] = total.detach()
        return total, out
