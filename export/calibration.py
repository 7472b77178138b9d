"""Calibration features for INT8 (ONNX Runtime static quantization and the TensorRT
calibrator): real feature arrays from a dataset's train split."""

from __future__ import annotations

import os

import numpy as np

from hamnet_deploy.runtime.errors import DataError

DEFAULT_CALIB_VIDEOS = 32
TEST_SUBSETS = ("test", "testing")
TRAIN_SUBSETS = ("training", "train", "validation")
"""Train-split names by preference: ActivityNet trains on `training` (its `validation`
is the test split); THUMOS14 (W-TALC) trains on `validation`."""


def calibration_features(data: str | os.PathLike, videos: int = DEFAULT_CALIB_VIDEOS, *,
                         subset: str | None = None, feature_dim: int | None = None,
                         max_snippets: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """Up to `videos` feature arrays (T x D float32) from the train split of `data`.

    `subset` names the train split; None (or a name the dataset lacks) takes the first
    of TRAIN_SUBSETS the dataset has, else every video outside the test subsets, else all. Videos are spread
    evenly over the split (deterministic); with `max_snippets`, longer ones are cut to
    a window of that length at a seeded position.
    """
    from hamnet_deploy.training.data import load_dataset

    if videos < 1:
        raise DataError(f"calibration videos {videos}: need at least 1 (--calib-videos)")
    ds = load_dataset(data, feature_dim=feature_dim)
    chosen = [i for i, s in enumerate(ds.subsets) if s == subset] if subset is not None else []
    for name in TRAIN_SUBSETS:
        if not chosen:
            chosen = [i for i, s in enumerate(ds.subsets) if s == name]
    if not chosen:
        chosen = [i for i, s in enumerate(ds.subsets) if s not in TEST_SUBSETS] or list(range(len(ds)))
    if not chosen:
        raise DataError(f"{data}: no videos to calibrate on; pass a dataset with a train split")
    picks = np.unique(np.linspace(0, len(chosen) - 1, num=min(videos, len(chosen))).round().astype(int))
    rng = np.random.default_rng(seed)
    out = []
    for i in picks:
        x = np.asarray(ds.features[chosen[i]], dtype=np.float32)
        if max_snippets is not None and len(x) > max_snippets:
            start = int(rng.integers(0, len(x) - max_snippets + 1))
            x = x[start:start + max_snippets]
        out.append(np.ascontiguousarray(x))
    return out
