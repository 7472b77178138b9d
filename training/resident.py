"""Training batches that live on the accelerator (`data.loader = "device"`).

The whole training split is copied to the device once, as one (sum T, D) tensor; every
epoch draws its order, and every batch its snippet indices, on the device, with the
sampling rules of `training.sampling` (the released sampler by default), so a step
needs no host work and no transfer. Nothing here reads a device value back on the host:
the random numbers come from a generator on the device, and a batch whose videos are
all `num_snippets` long (every video, with the released sampler) needs no mask.

The draws follow the same rules as the host loader but come from another random
stream, so a run with `loader = "device"` is reproducible on one device type for a
seed, not equal to the host loader's run.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from hamnet_deploy.runtime.errors import ConfigError
from hamnet_deploy.training.batches import epoch_seed
from hamnet_deploy.training.config import DataConfig

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


class ResidentBatches:
    """Batches of (features [B, n, D], labels [B, C], lengths [B] or None) for each epoch.

    `lengths` is None when every video of the batch has `n` real snippets; otherwise the
    batch is padded to n and `lengths` says how many are real (short videos with
    `short_videos = "mask"`). Under torchrun, rank `rank` of `world` takes every
    world-th video of the epoch's order (padded by repeating, as DistributedSampler does).
    """

    def __init__(self, features: list[np.ndarray], labels: np.ndarray, data: DataConfig, seed: int,
                 device: torch.device, world: int = 1, rank: int = 0) -> None:
        if data.sampling not in ("random", "uniform"):
            raise ConfigError(f"data.loader=device needs data.sampling random or uniform, not {data.sampling!r}: "
                              "every batch is num_snippets long on the device")
        sizes = np.array([len(f) for f in features], dtype=np.int64)
        self.device = device
        flat = np.ascontiguousarray(np.concatenate(features), dtype=np.float32)
        try:
            self.flat = torch.from_numpy(flat).to(device)
        except torch.OutOfMemoryError:
            raise ConfigError(f"data.loader=device: the training split ({flat.nbytes / 2**30:.1f} GiB) does not fit "
                              f"on {device}; use data.loader=host") from None
        self.offsets = torch.from_numpy(np.concatenate(([0], np.cumsum(sizes)[:-1]))).to(device)
        self.lengths = torch.from_numpy(sizes).to(device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.float32)).to(device)
        self.n, self.data, self.seed = int(data.num_snippets), data, int(seed)
        self.world, self.rank = int(world), int(rank)
        self.batch = data.batch_size // self.world
        self.videos = len(features)
        self.per_rank = -(-self.videos // self.world)
        self.all_full = bool((sizes >= self.n).all()) or data.short_videos != "mask"
        self.generator = torch.Generator(device=device)
        self.steps = torch.arange(self.n, device=device)

    def __len__(self) -> int:
        return -(-self.per_rank // self.batch)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The epoch's batches, in a random order drawn from (seed, epoch)."""
        self.generator.manual_seed(epoch_seed(self.seed, epoch, stream=1))
        order = torch.randperm(self.videos, generator=self.generator, device=self.device)
        total = self.per_rank * self.world
        if total > self.videos:
            order = torch.cat([order, order[: total - self.videos]])
        mine = order[self.rank:total:self.world]
        for start in range(0, self.per_rank, self.batch):
            yield self.take(mine[start:start + self.batch])

    def take(self, ids: torch.Tensor) -> Batch:
        """The batch of videos `ids` (a device tensor): snippet indices drawn on the device."""
        idx, real = self.indices(self.lengths[ids])
        feats = self.flat[self.offsets[ids][:, None] + idx]
        return feats, self.labels[ids], None if self.all_full else real

    def indices(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n) snippet indices of videos of lengths `t` (B,), and their real lengths."""
        n, steps, data = self.n, self.steps, self.data
        t = t[:, None]
        low = steps[None] * t // n
        if data.sampling == "uniform":
            idx = low
        else:
            high = (steps[None] + 1) * t // n
            closed = (data.bins == "released") | (t < n)
            high = torch.where(closed, high, high - 1)
            high[:, -1] = (t[:, 0] - 1)
            span = (high - low + 1).clamp_min(1)
            u = torch.rand(low.shape, generator=self.generator, device=self.device)
            idx = low + torch.minimum((u * span).long(), span - 1)
            if data.short_videos == "repeat":
                idx = torch.where(t < n, low, idx)
        idx = torch.where(t == n, steps[None], idx)
        real = torch.full_like(t[:, 0], n)
        if data.short_videos == "mask":
            short = t < n
            idx = torch.where(short, torch.minimum(steps[None], t - 1), idx)
            real = torch.where(short[:, 0], t[:, 0], real)
        return idx, real
