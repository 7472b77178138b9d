"""HAM-Net network (SPEC §2): classification branch, attention branch, optional pool.

Layout is the deployment contract (SPEC §6): ``features`` [B, T, D] in, ``cas``
[B, T, C+1] (logits, last column = background) and ``attention`` [B, T, 1] out.
The drop masks of the hybrid attention are computed by the losses, not here, so
the exported graph is exactly the two branches (and the ActivityNet pool).

Padded batches: pass ``mask`` [B, T] (True = real snippet). Padded positions of
the input, of the first conv+activation of each branch and of both outputs
(before the average pool) are set to 0, so every 3-tap conv and the pool see what
they would see at the end of a video alone (zero padding). Outputs at padded
positions are 0. With ``mask=None`` the forward has no data-dependent control
flow and exports to ONNX as is.

Module names follow the released code (``classifier.0/2/5``, ``attention.0/2/4``)
so its state dicts load directly.
"""

from __future__ import annotations

import torch
from torch import nn

from hamnet_deploy.training.config import ModelConfig


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """[B] valid lengths -> [B, T] bool mask (True = real snippet)."""
    lengths = torch.as_tensor(lengths)
    t = int(lengths.max()) if max_len is None else int(max_len)
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


def init_weights(module: nn.Module) -> None:
    """Kaiming-uniform (fan_in, leaky_relu) weights and zero bias for every conv/linear."""
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="leaky_relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class HamNet(nn.Module):
    """HAM-Net classification + attention branches.

    Args:
        feature_dim: D, width of a snippet feature row.
        num_classes: C; the classification branch outputs C + 1 logits.
        dropout: dropout before the last classification conv (0.7; 0.5 ActivityNet).
        pool_kernel: odd kernel of the temporal average pool applied to both outputs
            (stride 1, zero padding counted); 1 = no pool (THUMOS14), 17 ActivityNet.
        attention_dim: width of the attention branch (512).
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        dropout: float = 0.7,
        pool_kernel: int = 1,
        attention_dim: int = 512,
    ) -> None:
        super().__init__()
        if pool_kernel < 1 or pool_kernel % 2 != 1:
            raise ValueError(f"pool_kernel={pool_kernel}: must be an odd number >= 1")
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.pool_kernel = int(pool_kernel)
        self.attention_dim = int(attention_dim)
        d, a = self.feature_dim, self.attention_dim
        self.classifier = nn.Sequential(
            nn.Conv1d(d, d, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv1d(d, d, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
            nn.Conv1d(d, self.num_classes + 1, 1),
        )
        self.attention = nn.Sequential(
            nn.Conv1d(d, a, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv1d(a, a, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv1d(a, 1, 1),
            nn.Sigmoid(),
        )
        if self.pool_kernel > 1:
            self.pool: nn.Module = nn.AvgPool1d(
                self.pool_kernel, stride=1, padding=self.pool_kernel // 2, count_include_pad=True
            )
        else:
            self.pool = nn.Identity()
        self.apply(init_weights)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> HamNet:
        """Build from a :class:`training.config.ModelConfig`."""
        return cls(
            cfg.feature_dim, cfg.num_classes, cfg.dropout, cfg.pool_kernel, cfg.attention_dim
        )

    @property
    def receptive_radius(self) -> int:
        """Snippets of context each output sees on each side: 2, plus pool_kernel // 2."""
        return 2 + self.pool_kernel // 2

    def num_parameters(self) -> int:
        """Number of trainable parameters (29,146,646 at D = 2048, C = 20)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def flops_per_snippet(self) -> int:
        """Forward FLOPs per snippet, counted as 2 x multiply-accumulates of the convs.

        About 58.3 MFLOP at D = 2048, C = 20. Activations, sigmoid and pool are not
        counted (a few hundred FLOPs).
        """
        macs = 0
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                macs += m.in_channels * m.out_channels * m.kernel_size[0] // m.groups
        return 2 * macs

    @staticmethod
    def _run(branch: nn.Sequential, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        for layer in branch:
            x = layer(x)
            if keep is not None and isinstance(layer, nn.LeakyReLU):
                x = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
        return x

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features [B, T, D] (+ optional bool mask [B, T]) -> (cas [B, T, C+1], attention [B, T, 1])."""
        if features.dim() != 3:
            raise ValueError(f"features must be [batch, T, D], got shape {tuple(features.shape)}")
        x = features.transpose(1, 2)  # [B, D, T]
        keep = None
        if mask is not None:
            keep = mask.to(device=x.device, dtype=torch.bool)[:, None, :]  # [B, 1, T]
            zero = torch.zeros((), dtype=x.dtype, device=x.device)
            x = torch.where(keep, x, zero)
        cas = self._run(self.classifier, x, keep)
        att = self._run(self.attention, x, keep)
        if keep is not None:
            zero = torch.zeros((), dtype=cas.dtype, device=cas.device)
            cas = torch.where(keep, cas, zero)
            att = torch.where(keep, att, zero)
        if self.pool_kernel > 1:
            cas = self.pool(cas)
            att = self.pool(att)
            if keep is not None:
                cas = torch.where(keep, cas, zero)
                att = torch.where(keep, att, zero)
        return cas.transpose(1, 2), att.transpose(1, 2)
