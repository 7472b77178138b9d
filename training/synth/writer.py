"""Writing the synthetic dataset: the per-video layout (and optionally the W-TALC
layout), `synth_config.json` and `synth_structure.json`, every file atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hamnet_deploy.runtime.annotations import Annotations, annotations_to_json
from hamnet_deploy.runtime.errors import ConfigError, DataError
from hamnet_deploy.runtime.fileio import atomic_write, write_json_atomic
from hamnet_deploy.training.synth.config import (
    ANNOTATION_FILE,
    CONFIG_FILE,
    STRUCTURE_FILE,
    SYNTH_VERSION,
    VIDEOS_DIR,
    WTALC_ANNOTATIONS,
    WTALC_DIR,
    WTALC_FEATURES,
    WTALC_FILES,
    SynthConfig,
)
from hamnet_deploy.training.synth.features import _features, _plan, _prototypes
from hamnet_deploy.training.synth.timelines import _timelines


def load_structure(out_dir: str | os.PathLike) -> dict:
    """`synth_structure.json` of a generated dataset: {"snippet_seconds", "videos": {name:
    {"T", "instances": [[start, core_start, core_end, end], ...], "distractors": [...]}}}
    in snippets (ends exclusive), instances in annotation order."""
    path = Path(out_dir) / STRUCTURE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found; it is written by `hamnet synth`") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read ({exc}); regenerate the dataset") from exc


def _save_npy(path: Path, arr: np.ndarray, allow_pickle: bool = False) -> None:
    with atomic_write(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=allow_pickle)


def _object_array(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def _write_wtalc(folder: Path, ann: Annotations, features: list[np.ndarray]) -> None:
    """The W-TALC layout, in the dtypes and shapes of the original THUMOS14 files."""
    ann_dir = folder / WTALC_ANNOTATIONS
    vids = list(ann.videos.values())
    arrays = {
        "classlist": np.array([c.encode() for c in ann.classes], dtype="S"),
        "videoname": np.array([v.name.encode() for v in vids], dtype="S"),
        "subset": np.array([v.subset.encode() for v in vids], dtype="S"),
        "duration": np.array([[v.duration] for v in vids], dtype=np.float64).reshape(len(vids), 1),
        "labels": _object_array([[ann.classes[int(c)] for c in v.labels] for v in vids]),
        "labels_all": _object_array([list(dict.fromkeys(ann.classes[int(c)] for c in v.labels)) for v in vids]),
        "segments": _object_array([[[float(s), float(e)] for s, e in v.segments] for v in vids]),
    }
    for stem, arr in arrays.items():
        _save_npy(ann_dir / f"{stem}.npy", arr, allow_pickle=arr.dtype == object)
    _save_npy(folder / WTALC_FEATURES, _object_array(features), allow_pickle=True)


def _remove_stale(out: Path, names: set[str], wtalc: bool) -> None:
    """Remove what an earlier generation into `out` left that this one did not write."""
    vdir = out / VIDEOS_DIR
    for p in vdir.glob("*.npy"):
        if p.stem not in names:
            p.unlink(missing_ok=True)
    if not wtalc:
        wdir = out / WTALC_DIR
        (wdir / WTALC_FEATURES).unlink(missing_ok=True)
        for stem in WTALC_FILES:
            (wdir / WTALC_ANNOTATIONS / f"{stem}.npy").unlink(missing_ok=True)
        for d in (wdir / WTALC_ANNOTATIONS, wdir):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()


def generate_dataset(out_dir: str | os.PathLike, config: SynthConfig, wtalc: bool = False,
                     progress: Callable[[int, int], None] | None = None,
                     workers: int | None = None) -> Annotations:
    """Write the synthetic dataset for `config` into `out_dir` and return its ground truth.

    Per-video layout: `videos/<video>.npy` (T x D float32) and `annotations.json`, plus
    `synth_config.json` and `synth_structure.json`; with `wtalc` also `wtalc/` (W-TALC
    layout, name WTALC_NAME). Files are written atomically, `annotations.json` last;
    files of an earlier generation into the same folder that this one does not write are
    removed. `progress(done, total)` is called after each video. `workers` threads
    (default: up to 4, one per core) write videos in parallel; the output does not
    depend on it. Raises ConfigError for bad settings, DataError for a bad timelines file.
    """
    config.validate()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose a folder for the dataset")
    ann, indices = _timelines(config)
    proto = _prototypes(config, ann.num_classes)
    vdir = out / VIDEOS_DIR
    try:
        vdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {vdir}: {exc.strerror}; choose a writable location") from exc
    videos = list(ann.videos.values())
    total = len(videos)

    def one(i: int) -> tuple[dict, np.ndarray | None]:
        video, index = videos[i], indices[i]
        plan = _plan(config, video, index)
        x = _features(config, plan, proto, index)
        _save_npy(vdir / f"{video.name}.npy", x)
        entry = {"T": plan.T, "instances": plan.inst.tolist(), "distractors": plan.bursts.tolist()}
        return entry, (x if wtalc else None)

    n_workers = workers or min(4, os.cpu_count() or 1)
    structure: dict[str, dict] = {}
    feats: list[np.ndarray] = []
    pool = ThreadPoolExecutor(max_workers=max(1, n_workers))
    try:
        for done, (video, (entry, x)) in enumerate(zip(videos, pool.map(one, range(total)), strict=True), 1):
            structure[video.name] = entry
            if x is not None:
                feats.append(x)
            if progress is not None:
                progress(done, total)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # stop quickly on an error or Ctrl-C
        raise
    pool.shutdown()
    if wtalc:
        _write_wtalc(out / WTALC_DIR, ann, feats)
        del feats
    with atomic_write(out / STRUCTURE_FILE, "w") as fh:  # compact: one entry per instance
        json.dump({"snippet_seconds": config.snippet_seconds, "videos": structure}, fh, separators=(",", ":"))
    write_json_atomic(out / CONFIG_FILE, {"generator": "hamnet synth", "version": SYNTH_VERSION,
                                          "wtalc": bool(wtalc), "classes": list(ann.classes),
                                          "config": config.to_dict()})
    write_json_atomic(out / ANNOTATION_FILE, annotations_to_json(ann))
    _remove_stale(out, set(ann.videos), wtalc)
    return ann
