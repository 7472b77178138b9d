"""Calibration features for INT8 (ONNX Runtime static quantization and the TensorRT
calibrator), from what `--calib` names:

- a dataset folder of either layout (SPEC §1): videos of its train split;
- feature files, as `hamnet detect` takes them: a `.npy`/`.npz` file, a folder of them
  or a glob, read by the one feature reader (`runtime.feature_files`: never pickle, the
  same checks and messages as detect). This is what a device has (no annotations).

NumPy only (the dataset reader is the training layer's, which needs no PyTorch), so
engines can be calibrated on a Jetson from a bundle.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hamnet_deploy.export.options import CALIB_WHAT
from hamnet_deploy.runtime.errors import DataError
from hamnet_deploy.runtime.feature_files import find_feature_files, load_features

DEFAULT_CALIB_VIDEOS = 32
TEST_SUBSETS = ("test", "testing")
TRAIN_SUBSETS = ("training", "train", "validation")
"""Train-split names by preference: ActivityNet trains on `training` (its `validation`
is the test split); THUMOS14 (W-TALC) trains on `validation`."""


def calibration_features(data: str | os.PathLike, videos: int = DEFAULT_CALIB_VIDEOS, *,
                         subset: str | None = None, feature_dim: int | None = None,
                         max_snippets: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """Up to `videos` feature arrays (T x D float32) from `data` (a dataset or feature files).

    A dataset gives its train split: `subset` names it; None (or a name the dataset lacks)
    takes the first of TRAIN_SUBSETS the dataset has, else every video outside the test
    subsets, else all. Videos (or files) are spread evenly over what there is
    (deterministic); with `max_snippets`, longer ones are cut to a window of that length
    at a seeded position. DataError names the file or folder and the problem.
    """
    if videos < 1:
        raise DataError(f"calibration videos {videos}: need at least 1 (--calib-videos)")
    dataset_error = _dataset_problem(data)
    arrays = (_dataset_videos(data, videos, subset, feature_dim) if dataset_error is None
              else _feature_files(data, videos, feature_dim, dataset_error))
    rng = np.random.default_rng(seed)
    out = []
    for x in arrays:
        if max_snippets is not None and len(x) > max_snippets:
            start = int(rng.integers(0, len(x) - max_snippets + 1))
            x = x[start:start + max_snippets]
        out.append(np.ascontiguousarray(x, dtype=np.float32))
    return out


def _spread(count: int, wanted: int) -> np.ndarray:
    """`wanted` indices spread evenly over range(count), first and last included."""
    return np.unique(np.linspace(0, count - 1, num=min(wanted, count)).round().astype(int))


def _dataset_problem(data: str | os.PathLike) -> str | None:
    """None when `data` is a dataset (either layout), else why not."""
    from hamnet_deploy.training.data import detect_layout

    if not Path(data).exists():  # a glob, or nothing: the feature-file reader says which
        return "not found"
    try:
        detect_layout(data)
    except DataError as exc:
        return str(exc)
    return None


def _dataset_videos(data: str | os.PathLike, videos: int, subset: str | None,
                    feature_dim: int | None) -> list[np.ndarray]:
    from hamnet_deploy.training.data import load_dataset

    ds = load_dataset(data, feature_dim=feature_dim)
    chosen = [i for i, s in enumerate(ds.subsets) if s == subset] if subset is not None else []
    for name in TRAIN_SUBSETS:
        if not chosen:
            chosen = [i for i, s in enumerate(ds.subsets) if s == name]
    if not chosen:
        chosen = [i for i, s in enumerate(ds.subsets) if s not in TEST_SUBSETS] or list(range(len(ds)))
    if not chosen:
        raise DataError(f"{data}: no videos to calibrate on; pass a dataset with a train split")
    return [np.asarray(ds.features[chosen[i]], dtype=np.float32) for i in _spread(len(chosen), videos)]


def _feature_files(data: str | os.PathLike, videos: int, feature_dim: int | None,
                   dataset_error: str) -> list[np.ndarray]:
    files, missing = find_feature_files([data])
    if missing:
        why = missing[0].reason
        if Path(data).is_dir() and why.startswith("folder holds no"):
            why = f"{why}, and it is not a dataset ({dataset_error.split(': ', 1)[-1]})"
        raise DataError(f"--calib {data}: {why}; pass {CALIB_WHAT}")
    return [load_features(files[i], feature_dim) for i in _spread(len(files), videos)]
