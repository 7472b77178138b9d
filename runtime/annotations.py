"""Ground truth in one in-memory form, read from the per-video layout's JSON
(ActionFormer/OpenTAD style, SPEC §1). The W-TALC layout's pickled annotation files
are read by `training.wtalc` into the same form."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hamnet_deploy.runtime.coerce import positive_finite, show
from hamnet_deploy.runtime.errors import DataError
from hamnet_deploy.runtime.fileio import read_json

MAX_CLASS_NAME = 256


def class_name_problem(names: object) -> str | None:
    """Why `names` is not a usable list of class names (None: it is). A name is text of
    1-256 characters without control characters (a newline would shift every label file
    line after it, e.g. Triton's labels.txt), and no name appears twice."""
    if isinstance(names, str) or not isinstance(names, list | tuple):
        return "must be a list of class names"
    for name in names:
        if not isinstance(name, str):
            return f"holds {type(name).__name__} {name!r}, not a class name"
        if not name.strip() or len(name) > MAX_CLASS_NAME:
            return f"holds the class name {name[:40]!r}: names must be 1-{MAX_CLASS_NAME} characters"
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            return f"holds the class name {name!r} with a control character (newline, tab, ...); rename the class"
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return f"lists the class {name!r} twice; make class names unique"
        seen.add(name)
    return None


@dataclass(frozen=True)
class VideoAnnotation:
    """One video's ground truth: segments in seconds and their class indices."""

    name: str
    subset: str
    duration: float
    segments: np.ndarray  # (N, 2) float64, [start, end] seconds
    labels: np.ndarray  # (N,) int64 class indices
    fps: float | None = None

    def multi_hot(self, num_classes: int) -> np.ndarray:
        """Video-level label vector (C,) float32."""
        out = np.zeros(num_classes, dtype=np.float32)
        out[self.labels] = 1.0
        return out


@dataclass
class Annotations:
    """Class names plus per-video ground truth, in file order."""

    classes: list[str]
    videos: dict[str, VideoAnnotation] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def names(self, subset: str | None = None) -> list[str]:
        return [n for n, v in self.videos.items() if subset is None or v.subset == subset]

    def select(self, subset: str | None = None, exclude: Iterable[str] = ()) -> Annotations:
        """A copy restricted to one subset and without the excluded videos."""
        skip = set(exclude)
        keep = {n: v for n, v in self.videos.items()
                if (subset is None or v.subset == subset) and n not in skip}
        return Annotations(list(self.classes), keep)

    def subsets(self) -> list[str]:
        return sorted({v.subset for v in self.videos.values()})


def build_video(name: str, subset: str, duration: float, segments: Sequence, labels: Sequence[str],
                class_index: dict[str, int], fps: float | None = None, source: str = "") -> VideoAnnotation:
    """Validate one video's raw annotation and build its VideoAnnotation.

    Raises DataError naming the file and video for a label not in the class list,
    reversed or negative segments, or a bad duration.
    """
    where = f"{source}: video {name!r}" if source else f"video {name!r}"
    seconds = positive_finite(duration)
    if seconds is None:
        raise DataError(f"{where}: duration {show(duration)} must be a positive number of seconds; fix the "
                        "annotation file")
    duration = seconds
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2) if len(segments) else np.zeros((0, 2))
    if len(seg) != len(labels):
        raise DataError(f"{where}: {len(seg)} segments but {len(labels)} labels; each segment needs one label")
    if len(seg):
        if not np.isfinite(seg).all():
            raise DataError(f"{where}: a segment is not finite; fix the annotation file")
        if (seg < 0).any():
            i = int(np.argwhere(seg < 0)[0, 0])
            raise DataError(f"{where}: segment {seg[i].tolist()} is negative; times must be >= 0 seconds")
        if (seg[:, 1] <= seg[:, 0]).any():
            i = int(np.argmax(seg[:, 1] <= seg[:, 0]))
            raise DataError(f"{where}: segment {seg[i].tolist()} is reversed or empty; end must be after start")
    if fps is not None:
        rate = positive_finite(fps)
        if rate is None:
            raise DataError(f"{where}: fps {show(fps)} must be a positive number; fix the annotation file")
        fps = rate
    idx = []
    for lab in labels:
        if not isinstance(lab, str) or lab not in class_index:
            raise DataError(f"{where}: label {lab!r} is not in the class list; add it to the classes or fix the label")
        idx.append(class_index[lab])
    return VideoAnnotation(name=str(name), subset=str(subset), duration=duration, segments=seg,
                           labels=np.asarray(idx, dtype=np.int64), fps=fps)


def _no_duplicate_keys(source: str):
    def hook(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise DataError(f"{source}: video id {key!r} appears twice; make video ids unique")
            seen.add(key)
        return dict(pairs)
    return hook


def _seconds(x: object) -> float:
    if isinstance(x, bool):  # float(True) == 1.0 would pass silently
        raise TypeError(f"{x!r} is not a number")
    return float(x)  # type: ignore[arg-type]


def load_annotation_json(path: str | os.PathLike) -> Annotations:
    """Read `{"database": {video: {subset, duration, fps, annotations: [...]}}}`.

    Classes come from a top-level `classes` list when present, else the sorted set of
    labels. Duplicate video ids, unknown labels and bad segments raise DataError.
    """
    path = Path(path)
    src = str(path)
    raw = read_json(path, "annotation file", hook=_no_duplicate_keys(src))
    if not isinstance(raw, dict) or not isinstance(raw.get("database"), dict):
        raise DataError(f"{src}: expected an object with a 'database' mapping of videos (ActivityNet/ActionFormer format)")
    db = raw["database"]
    if "classes" in raw:
        classes = raw["classes"]
    else:
        classes = sorted({a.get("label") for v in db.values() if isinstance(v, dict)
                          and isinstance(v.get("annotations", []), list)
                          for a in v.get("annotations", []) if isinstance(a, dict) and isinstance(a.get("label"), str)})
    problem = class_name_problem(classes)
    if problem:
        raise DataError(f"{src}: 'classes' {problem}" if "classes" in raw else f"{src}: the labels: {problem}")
    index = {c: i for i, c in enumerate(classes)}
    videos: dict[str, VideoAnnotation] = {}
    for name, entry in db.items():
        if not isinstance(entry, dict) or "duration" not in entry:
            raise DataError(f"{src}: video {name!r} has no 'duration'; every video needs subset and duration")
        anns = entry.get("annotations", [])
        if not isinstance(anns, list) or not all(isinstance(a, dict) and "segment" in a and "label" in a for a in anns):
            raise DataError(f"{src}: video {name!r}: each annotation needs 'segment' and 'label'")
        if not all(isinstance(a["segment"], list) for a in anns):
            raise DataError(f"{src}: video {name!r}: a segment is not [start, end]; fix the annotation file")
        if not isinstance(entry.get("subset", "test"), str):
            raise DataError(f"{src}: video {name!r}: subset {entry['subset']!r} must be a name such as 'test'")
        try:
            segs = [[_seconds(x) for x in a["segment"]] for a in anns]
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(f"{src}: video {name!r}: a segment is not two numbers; fix the annotation file") from exc
        if any(len(s) != 2 for s in segs):
            raise DataError(f"{src}: video {name!r}: a segment is not [start, end]; fix the annotation file")
        videos[name] = build_video(name, entry.get("subset", "test"), entry["duration"], segs,
                                   [a["label"] for a in anns], index, entry.get("fps"), src)
    return Annotations(classes, videos)


def annotations_to_json(ann: Annotations) -> dict:
    """The per-video layout's JSON object for `ann` (inverse of load_annotation_json)."""
    db = {}
    for name, v in ann.videos.items():
        entry = {"subset": v.subset, "duration": round(float(v.duration), 6),
                 "annotations": [{"segment": [round(float(s), 6), round(float(e), 6)], "label": ann.classes[int(c)]}
                                 for (s, e), c in zip(v.segments, v.labels, strict=True)]}
        if v.fps is not None:
            entry["fps"] = v.fps
        db[name] = entry
    return {"classes": list(ann.classes), "database": db}
