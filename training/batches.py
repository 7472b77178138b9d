"""Training samples: each video sampled to `num_snippets` snippets (random perturb;
`data.short_videos="mask"` keeps short videos at their length), padded per batch with a
mask. The sampling RNG is keyed by (seed, epoch, video), so a
resumed or distributed run draws exactly what an uninterrupted single process draws."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from hamnet_deploy.training.sampling import sample_indices


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """The seed of one epoch's random numbers (`stream` tells independent streams apart:
    0 for torch's global generator, 1 for the device loader's own)."""
    return (seed * 1_000_003 + epoch * 7919 + stream * 17) % (2**63 - 1)


class TrainSamples(Dataset):
    """Item i: (sampled features [n', D], multi-hot labels [C]) for video i."""

    def __init__(self, features: Sequence[np.ndarray], labels: np.ndarray, num_snippets: int,
                 sampling: str = "random", seed: int = 0, short: str = "released", bins: str = "released") -> None:
        self.features = features
        self.labels = labels
        self.num_snippets = num_snippets
        self.sampling = sampling
        self.seed = seed
        self.short = short
        self.bins = bins
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        feats = self.features[i]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        idx = sample_indices(len(feats), self.num_snippets, rng, self.sampling, self.short, bins=self.bins)
        return feats[idx], self.labels[i]


def collate(items: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad to the longest sample: (features [B, T, D], labels [B, C], lengths [B])."""
    lengths = np.array([len(f) for f, _ in items], dtype=np.int64)
    batch = np.zeros((len(items), int(lengths.max()), items[0][0].shape[1]), dtype=np.float32)
    for row, (f, _) in enumerate(items):
        batch[row, : len(f)] = f
    labels = np.stack([lab for _, lab in items]).astype(np.float32)
    return torch.from_numpy(batch), torch.from_numpy(labels), torch.from_numpy(lengths)
