"""Training datasets: both layouts of SPEC §1 read into one in-memory form
(`training.dataset.WtalDataset`).

- Per-video layout (ActionFormer/OpenTAD): `annotations.json` plus `videos/<video>.npy`
  (one T x D float array per video), read with the runtime's one feature-file reader
  (`runtime.feature_files.load_features`: never runs pickle, same checks and messages as
  `hamnet detect`).
- W-TALC layout: `<Name>-I3D-JOINTFeatures.npy` plus `<Name>-Annotations/`, read by
  `training.wtalc`. Those files are pickled object arrays, so loading them runs pickle:
  only for trusted datasets whose path the user named.

`load_dataset` detects the layout; `load_ground_truth` reads either layout's ground truth
(what `hamnet eval` and `hamnet detect -a` score against). No PyTorch here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hamnet_deploy.runtime.annotations import (
    Annotations,
    annotations_to_json,
    load_annotation_json,
)
from hamnet_deploy.runtime.errors import DataError
from hamnet_deploy.runtime.feature_files import load_features
from hamnet_deploy.runtime.fileio import atomic_write, write_json_atomic
from hamnet_deploy.training.dataset import WtalDataset
from hamnet_deploy.training.wtalc import (
    FEATURES_SUFFIX,
    find_wtalc,
    load_wtalc,
    load_wtalc_annotations,
)

ANNOTATION_FILE = "annotations.json"
VIDEOS_DIR = "videos"


def _check_video_id(name: str, source: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise DataError(f"{source}: video id {name!r} cannot be used as a feature file name; "
                        f"rename the video (no slashes)")


# ---------------------------------------------------------------- per-video layout


def load_per_video(annotation_json: str | os.PathLike, features_dir: str | os.PathLike,
                   feature_dim: int | None = None, subset: str | Sequence[str] | None = None) -> WtalDataset:
    """Per-video layout: `features_dir/<video>.npy` for every video of `annotation_json`.

    Videos keep the annotation file's order; `subset` restricts loading to some subsets.
    Video-level labels are the classes of each video's segments. D is `feature_dim` when
    given, else the first video's. Every file is read with allow_pickle=False.
    """
    ann_path, feat_dir = Path(annotation_json), Path(features_dir)
    if not feat_dir.is_dir():
        raise DataError(f"{feat_dir}: features folder not found; it must hold one <video>.npy per video")
    ann = load_annotation_json(ann_path)
    if subset is not None:
        wanted = {subset} if isinstance(subset, str) else set(subset)
        ann = Annotations(ann.classes, {n: v for n, v in ann.videos.items() if v.subset in wanted})
    if not ann.videos:
        what = f"in subset {subset!r}" if subset is not None else "at all"
        raise DataError(f"{ann_path}: no videos {what}; check the annotation file and subset name")
    names, feats = [], []
    dim = feature_dim
    for name in ann.videos:
        _check_video_id(name, str(ann_path))
        path = feat_dir / f"{name}.npy"
        if not path.is_file():
            raise DataError(f"{path}: feature file of video {name!r} not found; extract its features or remove "
                            "the video from the annotation file")
        f = load_features(path, dim)
        dim = f.shape[1] if dim is None else dim
        names.append(name)
        feats.append(f)
    labels = np.stack([ann.videos[n].multi_hot(ann.num_classes) for n in names]).astype(np.float32)
    return WtalDataset(list(ann.classes), names, feats, labels, ann, source=str(ann_path), layout="per-video")


def write_per_video(dataset: WtalDataset, out_dir: str | os.PathLike) -> Path:
    """Write `dataset` in the per-video layout (`annotations.json` + `videos/*.npy`), atomically
    per file. Converts a W-TALC dataset once so later runs never need pickle. Returns out_dir."""
    out = Path(out_dir)
    for name, f in zip(dataset.names, dataset.features, strict=True):
        _check_video_id(name, str(out))
        with atomic_write(out / VIDEOS_DIR / f"{name}.npy", "wb") as fh:
            np.save(fh, np.ascontiguousarray(f, dtype=np.float32), allow_pickle=False)
    write_json_atomic(out / ANNOTATION_FILE, annotations_to_json(dataset.annotations))
    return out


# ---------------------------------------------------------------- layout detection


def detect_layout(path: str | os.PathLike, name: str | None = None) -> str:
    """"per-video" or "wtalc" for a dataset folder (or its annotations.json / feature file).

    A folder with both layouts counts as per-video (no pickle). Raises DataError saying
    what was looked for when neither is there.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: dataset path not found; check the path")
    if p.is_file():
        if p.suffix == ".json":
            return "per-video"
        if p.name.endswith(FEATURES_SUFFIX):
            return "wtalc"
        raise DataError(f"{p}: not a dataset: give a folder, an annotations.json or a "
                        f"<Name>-I3D{FEATURES_SUFFIX} file")
    has_json, has_videos = (p / ANNOTATION_FILE).is_file(), (p / VIDEOS_DIR).is_dir()
    if has_json and has_videos:
        return "per-video"
    if any(folder.is_dir() and any(folder.glob(f"*{FEATURES_SUFFIX}")) for folder in (p, p / "wtalc")):
        find_wtalc(p, name)  # raises a precise DataError (no annotation folder, several datasets)
        return "wtalc"
    if has_json:
        raise DataError(f"{p}: found {ANNOTATION_FILE} but no {VIDEOS_DIR}/ folder of <video>.npy features; "
                        f"add it or pass features_dir")
    if has_videos:
        raise DataError(f"{p}: found {VIDEOS_DIR}/ but no {ANNOTATION_FILE}; add it or pass annotation_file")
    if (p / "videoname.npy").is_file():
        raise DataError(f"{p}: holds W-TALC annotation files but no <Name>-I3D{FEATURES_SUFFIX}; a training "
                        f"dataset needs the features too (this folder is enough for evaluation ground truth)")
    raise DataError(f"{p}: no dataset found: expected {ANNOTATION_FILE} + {VIDEOS_DIR}/ (per-video layout) "
                    f"or <Name>-I3D{FEATURES_SUFFIX} + <Name>-Annotations/ in it or in its wtalc/ folder "
                    f"(W-TALC layout)")


def load_dataset(path: str | os.PathLike | None = None, feature_dim: int | None = None,
                 allow_pickle_layout: bool = True, *, annotation_file: str | os.PathLike | None = None,
                 features_dir: str | os.PathLike | None = None, name: str | None = None,
                 subset: str | Sequence[str] | None = None) -> WtalDataset:
    """Load a dataset in either layout of SPEC §1.

    - `annotation_file=` (+ `features_dir=`, default `<its folder>/videos`): per-video layout.
    - `path` a folder with `annotations.json` + `videos/` (or that JSON file): per-video layout.
    - `path` a folder holding `<Name>-I3D-JOINTFeatures.npy` + `<Name>-Annotations/`, directly
      or in a `wtalc/` subfolder (or that feature file): W-TALC layout. Its files are pickled,
      so loading runs pickle: only for a trusted dataset the user named; refused when
      `allow_pickle_layout` is False. `name` picks one of several W-TALC datasets.

    `feature_dim` is the expected D (default: the first video's). `subset` keeps only the
    videos of that subset (or list of subsets).
    """
    if annotation_file is not None or features_dir is not None:
        if annotation_file is None:
            raise DataError(f"features_dir {features_dir} given without annotation_file; pass both")
        ann_file = Path(annotation_file)
        fdir = Path(features_dir) if features_dir is not None else ann_file.parent / VIDEOS_DIR
        return load_per_video(ann_file, fdir, feature_dim, subset)
    if path is None:
        raise DataError("no dataset given: pass a dataset folder or annotation_file and features_dir")
    p = Path(path)
    layout = detect_layout(p, name)
    if layout == "per-video":
        ann_file = p if p.is_file() else p / ANNOTATION_FILE
        return load_per_video(ann_file, ann_file.parent / VIDEOS_DIR, feature_dim, subset)
    if not allow_pickle_layout:
        raise DataError(f"{p}: holds the W-TALC layout, whose pickled .npy files would run pickle when "
                        f"loaded, refused; allow the pickle layout only for a trusted dataset, or convert "
                        f"it once to the per-video layout (training.data.write_per_video)")
    ds = load_wtalc(p, name, feature_dim=feature_dim)
    return ds if subset is None else ds.select(subset)


def load_ground_truth(path: str | os.PathLike) -> Annotations:
    """Ground truth from a per-video annotation JSON, a dataset folder of either layout, or
    a W-TALC annotation folder (pickled arrays: only a path the user names)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: annotations not found; give the annotation JSON, a dataset folder or a W-TALC "
                        "annotation folder")
    if p.is_dir():
        if (p / ANNOTATION_FILE).is_file():
            return load_annotation_json(p / ANNOTATION_FILE)
        if any(folder.is_dir() and any(folder.glob(f"*{FEATURES_SUFFIX}")) for folder in (p, p / "wtalc")):
            return load_wtalc_annotations(find_wtalc(p)[1])
        return load_wtalc_annotations(p)
    return load_annotation_json(p)


def refuse_recorded_pickle(data: Path, run: Path) -> None:
    """A W-TALC dataset runs pickle when loaded: refuse one that only a run folder's
    config.json names (a copied or shared run could point anywhere)."""
    try:
        layout = detect_layout(data)
    except DataError:
        return  # load_dataset says what is wrong with it
    if layout == "wtalc":
        raise DataError(f"{data} (recorded in {run}/config.json) holds the W-TALC layout, whose files run pickle "
                        f"when loaded, and only a dataset named on the command line is unpickled: pass --data "
                        f"{data} if you trust it")
