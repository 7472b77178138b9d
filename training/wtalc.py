"""W-TALC dataset layout (W-TALC, BaS-Net, HAM-Net): `<Name>-I3D-JOINTFeatures.npy` plus
`<Name>-Annotations/` with `classlist.npy`, `videoname.npy`, `subset.npy`, `duration.npy`,
`labels.npy`, `labels_all.npy`, `segments.npy` (SPEC §1).

SECURITY: these files are pickled NumPy object arrays and loading them runs pickle, which
can execute arbitrary code. This module is the only place in the project that calls
`np.load(..., allow_pickle=True)`; use it only for trusted datasets whose path the user
named for training or evaluation. Convert once with `training.data.write_per_video` to
get the per-video layout, which loads without pickle.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hamnet_deploy.runtime.annotations import (
    Annotations,
    VideoAnnotation,
    build_video,
    class_name_problem,
)
from hamnet_deploy.runtime.errors import DataError
from hamnet_deploy.runtime.feature_files import check_features
from hamnet_deploy.training.dataset import WtalDataset

FEATURES_SUFFIX = "-JOINTFeatures.npy"  # <Name>-<feature type, e.g. I3D>-JOINTFeatures.npy
ANNOTATIONS_SUFFIX = "-Annotations"
REQUIRED_FILES = ("classlist", "videoname", "subset", "duration", "labels", "segments")


def _load_trusted(path: Path) -> np.ndarray:
    """np.load with pickle enabled. Runs pickle: trusted, user-named datasets only."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; the W-TALC layout needs it")
    try:
        # encoding='latin1' reads Python 2 pickles of NumPy arrays (the original W-TALC files).
        return np.load(path, allow_pickle=True, encoding="latin1")  # trusted: see module docstring
    except Exception as exc:  # pickle can raise almost anything on a corrupt file
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc}); the file is truncated or "
                        f"corrupt, regenerate or re-download it") from exc


def _to_str(x: object) -> str:
    if isinstance(x, bytes | np.bytes_):
        return bytes(x).decode("utf-8")
    return str(x)


def _str_list(x: object, where: str) -> list[str]:
    if isinstance(x, str | bytes | np.str_ | np.bytes_):
        return [_to_str(x)]
    try:
        return [_to_str(v) for v in x]  # type: ignore[union-attr]
    except TypeError:
        raise DataError(f"{where}: expected a list of class names, got {type(x).__name__}; "
                        f"fix the annotation file") from None


def _per_video(arr: np.ndarray, path: Path, count: int) -> np.ndarray:
    if arr.ndim == 0 or len(arr) != count:
        n = 1 if arr.ndim == 0 else len(arr)
        raise DataError(f"{path}: {n} entries but videoname.npy lists {count} videos; "
                        f"the annotation files must come from the same dataset")
    return arr


def _resolve_annotations_dir(annotations_dir: Path) -> Path:
    if not annotations_dir.is_dir():
        raise DataError(f"{annotations_dir}: W-TALC annotation folder not found; check the path")
    if (annotations_dir / "videoname.npy").is_file():
        return annotations_dir
    subs = sorted(p for p in annotations_dir.glob(f"*{ANNOTATIONS_SUFFIX}") if p.is_dir())
    if len(subs) == 1:
        return subs[0]
    if len(subs) > 1:
        raise DataError(f"{annotations_dir}: several annotation folders ({', '.join(p.name for p in subs)}); "
                        f"name one of them")
    return annotations_dir  # the missing-file check names videoname.npy


def _read_annotations(annotations_dir: str | os.PathLike) -> tuple[Annotations, list[str], Path]:
    """Ground truth, names in file order, and the resolved folder."""
    folder = _resolve_annotations_dir(Path(annotations_dir))
    for stem in REQUIRED_FILES:
        if not (folder / f"{stem}.npy").is_file():
            raise DataError(f"{folder / (stem + '.npy')}: file not found; a W-TALC annotation folder needs "
                            f"{', '.join(s + '.npy' for s in REQUIRED_FILES)}")
    raw = {stem: _load_trusted(folder / f"{stem}.npy") for stem in REQUIRED_FILES}

    names = [_to_str(v) for v in np.asarray(raw["videoname"]).reshape(-1)]
    if not names:
        raise DataError(f"{folder / 'videoname.npy'}: lists no videos; regenerate the annotation files")
    if len(set(names)) != len(names):
        dup = next(n for i, n in enumerate(names) if n in names[:i])
        raise DataError(f"{folder / 'videoname.npy'}: video {dup!r} appears twice; make video names unique")
    count = len(names)

    classes = [_to_str(c) for c in np.asarray(raw["classlist"]).reshape(-1)]
    problem = class_name_problem(classes)
    if problem:
        raise DataError(f"{folder / 'classlist.npy'}: {problem}")
    index = {c: i for i, c in enumerate(classes)}

    subset = _per_video(np.asarray(raw["subset"]).reshape(-1), folder / "subset.npy", count)
    try:
        duration = np.asarray(raw["duration"], dtype=np.float64).reshape(len(raw["duration"]), -1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{folder / 'duration.npy'}: durations are not numbers ({exc}); "
                        f"regenerate the annotation files") from exc
    if duration.shape[1] != 1:
        raise DataError(f"{folder / 'duration.npy'}: expected one duration per video, got shape "
                        f"{np.shape(raw['duration'])}; regenerate the annotation files")
    duration = _per_video(duration[:, 0], folder / "duration.npy", count)
    labels = _per_video(np.asarray(raw["labels"], dtype=object), folder / "labels.npy", count)
    segments = _per_video(np.asarray(raw["segments"], dtype=object), folder / "segments.npy", count)

    fps = None
    fps_path = folder / "original_fps.npy"
    if fps_path.is_file():
        try:
            fps = _per_video(np.asarray(_load_trusted(fps_path), dtype=np.float64).reshape(-1), fps_path, count)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{fps_path}: frame rates are not numbers; fix or delete the file") from exc

    src = str(folder)
    videos: dict[str, VideoAnnotation] = {}
    for i, name in enumerate(names):
        where = f"{folder / 'segments.npy'}: video {name!r}"
        seg_raw = segments[i]
        try:
            seg = np.asarray(seg_raw if seg_raw is not None else [], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: segments are not [start, end] number pairs; fix the annotation file") from exc
        if seg.size == 0:
            seg = np.zeros((0, 2))
        if seg.ndim != 2 or seg.shape[1] != 2:
            raise DataError(f"{where}: segments must be a list of [start, end] pairs, got shape {seg.shape}; "
                            f"fix the annotation file")
        labs = _str_list(labels[i], f"{folder / 'labels.npy'}: video {name!r}")
        videos[name] = build_video(name, _to_str(subset[i]), duration[i], seg, labs, index,
                                   None if fps is None else fps[i], src)
    return Annotations(classes, videos), names, folder


def load_wtalc_annotations(annotations_dir: str | os.PathLike) -> Annotations:
    """Ground truth from a W-TALC annotation folder (`<Name>-Annotations/` or any folder that
    holds `classlist.npy`, `videoname.npy`, ... directly; a folder with exactly one
    `*-Annotations/` inside also works).

    Runs pickle (the files are pickled object arrays): only for trusted annotation files the
    user named. Used by `hamnet eval` for W-TALC ground truth. Raises DataError naming the
    file and video for missing files, count mismatches, unknown labels and bad segments.
    """
    return _read_annotations(annotations_dir)[0]


def find_wtalc(root: str | os.PathLike, name: str | None = None) -> tuple[Path, Path]:
    """(features file, annotation folder) of the W-TALC dataset in `root` or `root/wtalc`.

    `root` may also be the `<Name>-I3D-JOINTFeatures.npy` file itself. `name` picks one of
    several datasets in the folder. Raises DataError when none (or several) are found.
    """
    root = Path(root)
    if root.is_file():
        if not root.name.endswith(FEATURES_SUFFIX):
            raise DataError(f"{root}: not a W-TALC feature file (<Name>-I3D{FEATURES_SUFFIX})")
        ds_name = root.name[: -len(FEATURES_SUFFIX)].rsplit("-", 1)[0]
        ann = root.parent / f"{ds_name}{ANNOTATIONS_SUFFIX}"
        if not ann.is_dir():
            raise DataError(f"{ann}: annotation folder for {root.name} not found; put it beside the features")
        return root, ann
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; check the path")
    found: list[tuple[str, Path, Path]] = []
    orphans: list[Path] = []
    for folder in (root, root / "wtalc"):
        if not folder.is_dir():
            continue
        for feat in sorted(folder.glob(f"*{FEATURES_SUFFIX}")):
            ds_name = feat.name[: -len(FEATURES_SUFFIX)].rsplit("-", 1)[0]
            if name is not None and ds_name != name:
                continue
            ann = folder / f"{ds_name}{ANNOTATIONS_SUFFIX}"
            if ann.is_dir():
                found.append((ds_name, feat, ann))
            else:
                orphans.append(ann)
    if not found:
        if orphans:
            raise DataError(f"{orphans[0]}: annotation folder not found beside its feature file; add it")
        which = f"named {name!r} " if name is not None else ""
        raise DataError(f"{root}: no W-TALC dataset {which}found (<Name>-I3D{FEATURES_SUFFIX} + "
                        f"<Name>{ANNOTATIONS_SUFFIX}/ in it or its wtalc/ folder)")
    if len(found) > 1:
        raise DataError(f"{root}: several W-TALC datasets ({', '.join(f[0] for f in found)}); pick one by name")
    return found[0][1], found[0][2]


def load_wtalc(root: str | os.PathLike, name: str | None = None, feature_dim: int | None = None,
               video_labels: str = "labels_all") -> WtalDataset:
    """Load a W-TALC layout dataset (features + annotations) as a WtalDataset.

    Runs pickle (every file is a pickled object array): only for a trusted dataset whose
    path the user named for training. The feature file holds one T x D float array per video
    in `videoname.npy` order. Video-level labels come from `labels_all.npy` (what the
    W-TALC/HAM-Net code trains on; on THUMOS14 it differs from the segment classes for 28
    videos) or, with `video_labels="segments"`, from each video's segment classes.
    """
    if video_labels not in ("labels_all", "segments"):
        raise DataError(f"video_labels must be 'labels_all' or 'segments', got {video_labels!r}")
    feat_path, ann_dir = find_wtalc(root, name)
    ann, names, folder = _read_annotations(ann_dir)
    num_classes, index = ann.num_classes, {c: i for i, c in enumerate(ann.classes)}

    if video_labels == "labels_all":
        la_path = folder / "labels_all.npy"
        labels_all = _per_video(np.asarray(_load_trusted(la_path), dtype=object), la_path, len(names))
        labels = np.zeros((len(names), num_classes), dtype=np.float32)
        for i, name in enumerate(names):
            for lab in _str_list(labels_all[i], f"{la_path}: video {name!r}"):
                if lab not in index:
                    raise DataError(f"{la_path}: video {name!r}: label {lab!r} is not in the class list; "
                                    f"add it to classlist.npy or fix the label")
                labels[i, index[lab]] = 1.0
    else:
        labels = np.stack([ann.videos[n].multi_hot(num_classes) for n in names]).astype(np.float32)

    raw = _load_trusted(feat_path)
    if raw.dtype == object and raw.ndim == 1:
        items = list(raw)
    elif raw.ndim == 3 and np.issubdtype(raw.dtype, np.floating):
        items = list(raw)
    else:
        raise DataError(f"{feat_path}: expected an object array of T x D feature arrays (one per video), got "
                        f"shape {raw.shape} dtype {raw.dtype}; regenerate the feature file")
    if len(items) != len(names):
        raise DataError(f"{feat_path}: holds {len(items)} feature arrays but {folder / 'videoname.npy'} lists "
                        f"{len(names)} videos; use the feature file that belongs to these annotations")
    feats: list[np.ndarray] = []
    dim = feature_dim
    for name, item in zip(names, items, strict=True):
        f = check_features(item, f"{feat_path}: video {name!r}", dim)
        dim = f.shape[1] if dim is None else dim
        feats.append(f)
    return WtalDataset(list(ann.classes), names, feats, labels, ann, source=str(feat_path), layout="wtalc")
