"""Training datasets: both layouts of SPEC §1 read into one in-memory form.

- Per-video layout (ActionFormer/OpenTAD): `annotations.json` plus `videos/<video>.npy`
  (one T x D float array per video). Feature files are read with
  `np.load(..., allow_pickle=False)`: a pickled object array is refused.
- W-TALC layout: `<Name>-I3D-JOINTFeatures.npy` plus `<Name>-Annotations/`, read by
  `training.wtalc`. Those files are pickled object arrays, so loading them runs pickle:
  only for trusted datasets whose path the user named.

`load_dataset` detects the layout. Both give a `WtalDataset` whose `annotations` is the
same ground truth `hamnet eval` uses. No PyTorch here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hamnet_deploy.runtime.annotations import Annotations, annotations_to_json, load_annotation_json
from hamnet_deploy.runtime.errors import DataError
from hamnet_deploy.runtime.feature_files import check_npy_header
from hamnet_deploy.runtime.fileio import atomic_write, write_json_atomic

ANNOTATION_FILE = "annotations.json"
VIDEOS_DIR = "videos"
NPY_MAGIC = b"\x93NUMPY"


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


# ---------------------------------------------------------------- feature checks


def check_features(arr: object, where: str, feature_dim: int | None = None) -> np.ndarray:
    """Validate one video's features and return them as a C-contiguous float32 T x D array.

    `where` names the file and video in messages. Raises DataError for an array that is
    not 2-D floating point, has zero snippets, has D != `feature_dim`, or holds NaN/Inf.
    """
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        desc = (f"shape {arr.shape} dtype {arr.dtype}" if isinstance(arr, np.ndarray)
                else f"a {type(arr).__name__}")
        raise DataError(f"{where}: features must be a 2-D float array (T x D), got {desc}; "
                        f"re-extract or save it with np.save(path, feats.astype(np.float32))")
    if arr.shape[0] == 0:
        raise DataError(f"{where}: features have zero snippets; re-extract them or remove the video")
    if feature_dim is not None and arr.shape[1] != feature_dim:
        raise DataError(f"{where}: features are {arr.shape[0]} x {arr.shape[1]} but the dataset expects "
                        f"D = {feature_dim}; use features of one extractor (or set the feature dim)")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, caught below
        out = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        t = int(np.argmin(finite))
        raise DataError(f"{where}: snippet {t} (of {len(out)}) holds NaN or Inf features; "
                        f"re-extract the features of this video")
    return out


def read_npy_features(path: str | os.PathLike, video: str, feature_dim: int | None = None) -> np.ndarray:
    """Read one per-video `.npy` feature file safely (never runs pickle) and validate it."""
    path = Path(path)
    where = f"{path}: video {video!r}"
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(NPY_MAGIC))
            if magic == NPY_MAGIC:  # a header claiming more data than the file holds is refused
                fh.seek(0)  # before anything is allocated
                check_npy_header(fh, os.fstat(fh.fileno()).st_size, where)
    except FileNotFoundError:
        raise DataError(f"{path}: feature file of video {video!r} not found; extract its features "
                        f"or remove the video from the annotation file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read feature file ({exc.strerror}); check the file") from exc
    if magic != NPY_MAGIC:
        if magic[:1] == b"\x80":
            raise DataError(f"{where}: file is a pickle, refused because loading it would run pickle; "
                            f"save the features with np.save(path, feats.astype(np.float32))")
        if magic[:2] == b"PK":
            raise DataError(f"{where}: file is an .npz archive; save one T x D array per video with np.save")
        raise DataError(f"{where}: not a .npy file (truncated or corrupt); re-extract or re-save the features")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc):
            raise DataError(f"{where}: holds an object array, refused because loading it would run pickle; "
                            f"save the features with np.save(path, feats.astype(np.float32))") from exc
        raise DataError(f"{where}: feature file is truncated or corrupt ({exc}); re-extract or re-save it") from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"{where}: feature file is truncated or corrupt ({exc}); re-extract or re-save it") from exc
    except MemoryError:
        raise DataError(f"{where}: feature file is too large to load into memory") from None
    return check_features(arr, where, feature_dim)


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
        f = read_npy_features(feat_dir / f"{name}.npy", name, dim)
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
    from hamnet_deploy.training.wtalc import FEATURES_SUFFIX, find_wtalc

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
    from hamnet_deploy.training.wtalc import load_wtalc

    ds = load_wtalc(p, name, feature_dim=feature_dim)
    return ds if subset is None else ds.select(subset)
