"""Detections as columns of NumPy arrays, and their files: the ActivityNet results JSON
(`{"results": {video: [{"label", "score", "segment": [s, e]}]}}`) and CSV
(`video,label,score,t_start,t_end`)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.errors import DataError
from hamnet_deploy.runtime.fileio import read_text, write_json_atomic, write_text_atomic

CSV_HEADER = ("video", "label", "score", "t_start", "t_end")
"""The columns a results CSV starts with (what other tools write)."""
CSV_COLUMNS = (*CSV_HEADER, "class_score", "status")
"""What hamnet writes: also each detection's video-level class probability, and a status
(`ok`; `none`: a video without detections; `failed: REASON`: an input that failed)."""


def activitynet_document(results: dict[str, Any], failed: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """The ActivityNet envelope around `results` ({video: [...]}): `version` and
    `external_data` (so the official evaluators accept the file), and the inputs that
    failed under the top-level key "failed", which evaluators ignore."""
    out: dict[str, Any] = {"version": "VERSION 1.3", "results": results, "external_data": dict(EXTERNAL_DATA)}
    if failed:
        out["failed"] = failed_entries(failed)
    return out


def failed_entries(failed: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"input": name, "reason": reason} for name, reason in failed]


EXTERNAL_DATA = {"used": False, "details": "hamnet-deploy"}


def _tidy_score(x: float) -> float:
    """Nine significant digits: `0.123456789`, never `0.30000000000000004`."""
    return float(f"{x:.9g}")


def _tidy_time(x: float) -> float:
    """Seconds to the microsecond: `22.4`, never `22.400000000000002`."""
    return round(x, 6) + 0.0


@dataclass(frozen=True, eq=False)
class Detections:
    """N detections: `video` (N,) str (object array), `label` (N,) int64 index into
    `classes`, `score`, `t_start`, `t_end` (N,) float64 seconds. Columns, not rows, so
    that post-processing and evaluation stay vectorised."""

    classes: tuple[str, ...]
    video: np.ndarray
    label: np.ndarray
    score: np.ndarray
    t_start: np.ndarray
    t_end: np.ndarray

    @classmethod
    def from_arrays(cls, classes: Sequence[str], video: str | Sequence[str] | np.ndarray, label: Any,
                    score: Any, t_start: Any, t_end: Any) -> Detections:
        """Build and check; `video` may be one name for all rows."""
        label = np.asarray(label, dtype=np.int64).reshape(-1)
        n = label.size
        if isinstance(video, str):
            videos = np.full(n, video, dtype=object)
        else:
            videos = np.asarray(video, dtype=object).reshape(-1)
        cols = [np.asarray(x, dtype=np.float64).reshape(-1) for x in (score, t_start, t_end)]
        if any(c.size != n for c in cols) or videos.size != n:
            raise DataError(f"detections: columns have different lengths "
                            f"({videos.size}, {n}, {', '.join(str(c.size) for c in cols)})")
        classes = tuple(str(c) for c in classes)
        if n and (label.min() < 0 or label.max() >= len(classes)):
            raise DataError(f"detections: a label index is outside the {len(classes)} classes")
        return cls(classes, videos, label, *cols)

    @classmethod
    def empty(cls, classes: Sequence[str]) -> Detections:
        return cls.from_arrays(classes, np.zeros(0, dtype=object), [], [], [], [])

    @classmethod
    def concatenate(cls, parts: Iterable[Detections], classes: Sequence[str] | None = None) -> Detections:
        """Join detections of the same class list (e.g. one per video)."""
        parts = list(parts)
        if classes is None:
            if not parts:
                raise DataError("detections: nothing to concatenate and no class list given")
            classes = parts[0].classes
        classes = tuple(classes)
        for p in parts:
            if p.classes != classes:
                raise DataError("detections: cannot concatenate detections with different class lists")
        if not parts:
            return cls.empty(classes)
        return cls(classes, *(np.concatenate([getattr(p, f) for p in parts])
                              for f in ("video", "label", "score", "t_start", "t_end")))

    def __len__(self) -> int:
        return int(self.label.size)

    @property
    def segments(self) -> np.ndarray:
        """(N, 2) [t_start, t_end]."""
        return np.stack([self.t_start, self.t_end], axis=1)

    @property
    def label_names(self) -> list[str]:
        return [self.classes[i] for i in self.label]

    def videos(self) -> list[str]:
        """Distinct video names in first-appearance order."""
        return list(dict.fromkeys(self.video.tolist()))

    def select(self, mask_or_index: Any) -> Detections:
        """Rows picked by a boolean mask or an index array."""
        return Detections(self.classes, *(getattr(self, f)[mask_or_index]
                                          for f in ("video", "label", "score", "t_start", "t_end")))

    def for_video(self, video: str) -> Detections:
        return self.select(self.video == video)

    def sorted(self) -> Detections:
        """By video (first appearance), then descending score; ties keep their order."""
        names = self.videos()
        rank = {v: i for i, v in enumerate(names)}
        vid = np.fromiter((rank[v] for v in self.video), dtype=np.int64, count=len(self))
        return self.select(np.lexsort((-self.score, vid)))

    def to_results_json(self, videos: Sequence[str] = (), failed: Sequence[tuple[str, str]] = (),
                        class_score: np.ndarray | None = None) -> dict[str, Any]:
        """The ActivityNet results object; `version` and `external_data` are included so
        the official evaluator accepts the file as well. `videos`: processed videos, listed
        (with `[]`) even without detections; `failed`: (input, reason) pairs, under the
        top-level key "failed" that evaluators ignore; `class_score` (N,): each
        detection's video-level class probability. Numbers are rounded (`_tidy`)."""
        results: dict[str, list[dict[str, Any]]] = {str(v): [] for v in videos}
        labels = self.classes
        extra = class_score.tolist() if class_score is not None else [None] * len(self)
        for v, c, s, a, b, p in zip(self.video.tolist(), self.label.tolist(), self.score.tolist(),
                                    self.t_start.tolist(), self.t_end.tolist(), extra, strict=True):
            entry = {"label": labels[c], "score": _tidy_score(s), "segment": [_tidy_time(a), _tidy_time(b)]}
            if p is not None:
                entry["class_score"] = _tidy_score(p)
            results.setdefault(v, []).append(entry)
        return activitynet_document(results, failed)

    def write_json(self, path: str | os.PathLike, **context: Any) -> None:
        """`to_results_json(**context)` written atomically."""
        write_json_atomic(path, self.to_results_json(**context))

    def to_csv(self, videos: Sequence[str] = (), failed: Sequence[tuple[str, str]] = (),
               class_score: np.ndarray | None = None) -> str:
        """CSV text: `video,label,score,t_start,t_end,class_score,status`, one row per
        detection (status `ok`), one row with empty fields for each processed video
        without detections (status `none`) and for each input that failed (its path,
        status `failed: REASON`)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(self.csv_rows(class_score))
        found = set(self.video.tolist())
        writer.writerows(csv_empty_row(v) for v in videos if v not in found)
        writer.writerows(csv_failed_row(name, reason) for name, reason in failed)
        return buf.getvalue()

    def csv_rows(self, class_score: np.ndarray | None = None) -> list[tuple[str, ...]]:
        """The CSV rows (status `ok`) of these detections, in table order."""
        labels = self.classes
        extra = class_score.tolist() if class_score is not None else [None] * len(self)
        return [(v, labels[c], repr(_tidy_score(s)), repr(_tidy_time(a)), repr(_tidy_time(b)),
                 "" if p is None else repr(_tidy_score(p)), "ok")
                for v, c, s, a, b, p in zip(self.video.tolist(), self.label.tolist(), self.score.tolist(),
                                            self.t_start.tolist(), self.t_end.tolist(), extra, strict=True)]

    def write_csv(self, path: str | os.PathLike, **context: Any) -> None:
        """`to_csv(**context)` written atomically."""
        write_text_atomic(path, self.to_csv(**context))

    def write(self, path: str | os.PathLike, **context: Any) -> None:
        """JSON or CSV by the file's suffix (`.csv` is CSV, anything else JSON); `context`
        as `to_results_json`."""
        if Path(path).suffix.lower() == ".csv":
            self.write_csv(path, **context)
        else:
            self.write_json(path, **context)


def csv_empty_row(video: str) -> tuple[str, ...]:
    """The CSV row of a processed video without detections."""
    return (video, "", "", "", "", "", "none")


def csv_failed_row(name: str, reason: str) -> tuple[str, ...]:
    """The CSV row of an input that failed."""
    return (name, "", "", "", "", "", f"failed: {reason}")


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"{what} {value!r} is not a number")
    try:
        out = float(value)
    except (ValueError, OverflowError):
        raise DataError(f"{what} {str(value)[:40]!r} is not a number a float can hold") from None
    if not math.isfinite(out):
        raise DataError(f"{what} {value!r} is not finite")
    return out


class _Rows:
    def __init__(self, src: str, classes: Sequence[str]):
        self.src = src
        self.index = {c: i for i, c in enumerate(classes)}
        self.video: list[str] = []
        self.label: list[int] = []
        self.score: list[float] = []
        self.start: list[float] = []
        self.end: list[float] = []

    def add(self, where: str, video: str, label: Any, score: Any, start: Any, end: Any) -> None:
        if not isinstance(label, str) or label not in self.index:
            raise DataError(f"{self.src}: {where}: label {label!r} is not in the class list; "
                            f"use one of the model's class names")
        s = _number(score, f"{self.src}: {where}: score")
        a = _number(start, f"{self.src}: {where}: segment start")
        b = _number(end, f"{self.src}: {where}: segment end")
        if b < a:
            raise DataError(f"{self.src}: {where}: segment [{a}, {b}] ends before it starts")
        self.video.append(video)
        self.label.append(self.index[label])
        self.score.append(s)
        self.start.append(a)
        self.end.append(b)


def _read_json(text: str, rows: _Rows) -> None:
    src = rows.src
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{src}: not valid JSON ({exc.msg} at line {exc.lineno}); fix or regenerate the file") from None
    except RecursionError:
        raise DataError(f"{src}: JSON nested too deeply to read; fix or regenerate the file") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("results"), dict):
        raise DataError(f"{src}: expected an object with a 'results' mapping of video -> detections "
                        f"(ActivityNet results format)")
    for video, dets in raw["results"].items():
        if not isinstance(dets, list):
            raise DataError(f"{src}: video {video!r}: detections must be a list")
        for k, d in enumerate(dets):
            where = f"video {video!r} detection {k}"
            if not isinstance(d, dict) or not {"label", "score", "segment"} <= set(d):
                raise DataError(f"{src}: {where}: needs 'label', 'score' and 'segment'")
            seg = d["segment"]
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise DataError(f"{src}: {where}: segment {seg!r} is not [start, end]")
            rows.add(where, str(video), d["label"], d["score"], seg[0], seg[1])


def _read_csv(text: str, rows: _Rows) -> None:
    src = rows.src
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DataError(f"{src}: not valid CSV ({exc}); fix or regenerate the file") from None
    columns = tuple(h.strip() for h in header) if header is not None else ()
    if columns not in (CSV_HEADER, CSV_COLUMNS):
        raise DataError(f"{src}: CSV must start with the header {','.join(CSV_HEADER)}")
    try:
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not f.strip() for f in rec):
                continue
            if len(rec) != len(columns):
                raise DataError(f"{src}: line {line}: expected {len(columns)} fields, got {len(rec)}")
            if len(columns) == len(CSV_COLUMNS) and rec[6].strip() != "ok":
                continue  # a video without detections, or an input that failed
            rows.add(f"line {line}", rec[0], rec[1], rec[2].strip(), rec[3].strip(), rec[4].strip())
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        raise DataError(f"{src}: line {reader.line_num}: not valid CSV ({exc}); fix or regenerate the file") from None


def read_results(path: str | os.PathLike, classes: Sequence[str]) -> Detections:
    """Read detections from a results JSON or a CSV (chosen by content: a JSON object
    starts with '{'). Labels must be names in `classes`; malformed files raise DataError."""
    path = Path(path)
    src = str(path)
    text = read_text(path, "predictions file")
    rows = _Rows(src, classes)
    if text.lstrip().startswith("["):
        raise DataError(f"{src}: a JSON list; a results file is the ActivityNet object {{\"results\": {{video: "
                        "[{\"label\", \"score\", \"segment\"}, ...]}} (as hamnet detect --out r.json writes), "
                        "or a CSV with the header video,label,score,t_start,t_end")
    if text.lstrip().startswith("{"):
        _read_json(text, rows)
    else:
        _read_csv(text, rows)
    return Detections.from_arrays(classes, np.asarray(rows.video, dtype=object), rows.label,
                                  rows.score, rows.start, rows.end)
