"""The in-memory training dataset: videos in one order with their T x D float32
features, multi-hot video labels and ground truth (`runtime.annotations`). Both layouts
load into it (`training.data`, `training.wtalc`). No PyTorch here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hamnet_deploy.runtime.annotations import Annotations
from hamnet_deploy.runtime.errors import DataError


@dataclass(eq=False)
class WtalDataset:
    """Videos in one order: names, T x D float32 features, multi-hot labels, ground truth.

    `labels[i]` is the video-level label vector of `names[i]` (what training sees);
    `annotations.videos[names[i]]` holds its segments, duration and subset.
    """

    classes: list[str]
    names: list[str]
    features: list[np.ndarray]
    labels: np.ndarray  # (V, C) float32 multi-hot
    annotations: Annotations
    source: str = ""
    layout: str = ""  # "per-video" or "wtalc"
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.features) == len(self.labels)):
            raise ValueError(f"{len(self.names)} names, {len(self.features)} feature arrays and "
                             f"{len(self.labels)} label rows: they must match")
        if self.labels.ndim != 2 or self.labels.shape[1] != len(self.classes):
            raise ValueError(f"labels must be (V, {len(self.classes)}), got {self.labels.shape}")
        missing = [n for n in self.names if n not in self.annotations.videos]
        if missing:
            raise ValueError(f"video {missing[0]!r} has no annotation entry")
        self._index = {n: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def feature_dim(self) -> int:
        """D, the width of every feature row (0 for an empty dataset)."""
        return int(self.features[0].shape[1]) if self.features else 0

    @property
    def lengths(self) -> np.ndarray:
        """(V,) int64: T, the number of snippets of each video."""
        return np.array([len(f) for f in self.features], dtype=np.int64)

    @property
    def durations(self) -> np.ndarray:
        """(V,) float64 video durations in seconds."""
        return np.array([self.annotations.videos[n].duration for n in self.names], dtype=np.float64)

    @property
    def subsets(self) -> list[str]:
        """Each video's subset name ("validation", "test", ...), in `names` order."""
        return [self.annotations.videos[n].subset for n in self.names]

    def index(self, name: str) -> int:
        """Position of video `name`."""
        try:
            return self._index[name]
        except KeyError:
            raise DataError(f"video {name!r} is not in the dataset ({self.source or 'in memory'})") from None

    def subset_indices(self, subset: str | Sequence[str]) -> np.ndarray:
        """(N,) int64 positions of the videos in `subset` (a name or a list of names).

        Raises DataError naming the subsets the dataset has when none match.
        """
        wanted = {subset} if isinstance(subset, str) else set(subset)
        subs = self.subsets
        idx = np.array([i for i, s in enumerate(subs) if s in wanted], dtype=np.int64)
        if idx.size == 0:
            have = ", ".join(repr(s) for s in sorted(set(subs))) or "none"
            raise DataError(f"{self.source or 'dataset'}: no video is in subset {sorted(wanted)}; "
                            f"the dataset has subsets {have} (THUMOS14 trains on 'validation')")
        return idx

    def take(self, indices: Sequence[int] | np.ndarray) -> WtalDataset:
        """A dataset of the videos at `indices`, in that order (features shared, not copied)."""
        idx = [int(i) for i in indices]
        names = [self.names[i] for i in idx]
        ann = Annotations(list(self.classes), {n: self.annotations.videos[n] for n in names})
        labels = self.labels[np.asarray(idx, dtype=np.int64)] if idx else np.zeros((0, self.num_classes), np.float32)
        return WtalDataset(list(self.classes), names, [self.features[i] for i in idx], labels, ann,
                           self.source, self.layout)

    def select(self, subset: str | Sequence[str] | None) -> WtalDataset:
        """The videos of one subset (or a list of subsets; None: all)."""
        if subset is None:
            return self.take(range(len(self)))
        return self.take(self.subset_indices(subset))
