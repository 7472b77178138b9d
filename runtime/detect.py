"""Feature files -> model outputs -> detections: the one loop `hamnet detect`, the demo
and the Python API run. Files are read and checked one by one with the one reader
(`runtime.feature_files`; a bad file is recorded and skipped), streamed through the
exact windowed inference (`runtime.inference`) and post-processed together
(`runtime.scoring.detect_outputs`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.detections import Detections
from hamnet_deploy.runtime.errors import DataError
from hamnet_deploy.runtime.feature_files import check_features, load_features, video_id
from hamnet_deploy.runtime.inference import Inference, InferenceStats
from hamnet_deploy.runtime.postprocess import PostprocessConfig
from hamnet_deploy.runtime.scoring import detect_outputs


@dataclass
class DetectRun:
    """What a run over feature files produced."""

    videos: list[str]  # videos that ran, in file order
    outputs: dict[str, tuple[np.ndarray, np.ndarray]]  # video -> (cas (T, C+1), attention (T,))
    detections: Detections
    video_scores: dict[str, np.ndarray]  # video -> (C,) class probabilities
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, one-line reason)
    stats: InferenceStats = field(default_factory=InferenceStats)
    network_seconds: float = 0.0
    post_seconds: float = 0.0

    @property
    def snippets(self) -> int:
        return sum(int(self.outputs[v][0].shape[0]) for v in self.videos)

    @property
    def seconds(self) -> float:
        return self.network_seconds + self.post_seconds

    def lengths(self) -> dict[str, int]:
        return {v: int(self.outputs[v][0].shape[0]) for v in self.videos}


class _Reader:
    """Loads and checks the inputs one by one (files with the one reader, arrays with its
    checks); bad inputs go to `failed`, the rest are yielded as (video id, features)."""

    def __init__(self, items: Sequence[tuple[str, Any]], feature_dim: int, on_done: Callable[[], None]) -> None:
        self.items = list(items)
        self.dim = feature_dim
        self.failed: list[tuple[str, str]] = []
        self.on_done = on_done
        self.ids: list[str] = []

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        first: dict[str, str] = {}
        for vid, source in self.items:
            name = _name(vid, source)
            if vid in first:
                self._fail(name, repeat_reason(name, vid, first[vid]))
                continue
            first[vid] = name
            try:
                x = (check_features(source, f"video {vid!r}", self.dim) if isinstance(source, np.ndarray)
                     else load_features(source, self.dim))
            except DataError as exc:
                self._fail(name, str(exc))
                continue
            self.ids.append(vid)
            yield vid, x

    def _fail(self, name: str, reason: str) -> None:
        self.failed.append((name, reason))
        self.on_done()


def repeat_reason(name: str, vid: str, first: str) -> str:
    """Why input `name` is refused: its video id is the id of the earlier input `first`."""
    return (f"{name}: video id {vid!r} repeats {first}; video ids are file names without the suffix (or the "
            "names given with arrays), so rename one")


def _name(vid: str, source: Any) -> str:
    """How an input is named in `failed`: its path, or the video id given with an array."""
    return vid if isinstance(source, np.ndarray) else str(source)


def detect_files(files: Sequence[str | Path], runner: Any, **kwargs: Any) -> DetectRun:
    """`detect_items` over feature files, each named by its video id (file name without
    the suffix)."""
    return detect_items([(video_id(f), Path(f)) for f in files], runner, **kwargs)


def detect_items(items: Sequence[tuple[str, Any]], runner: Any, *, radius: int, feature_dim: int,
                 classes: Sequence[str], post: PostprocessConfig, max_t: int | None = None, batch_size: int = 8,
                 durations: Mapping[str, float | None] | None = None,
                 on_video: Callable[[], None] | None = None) -> DetectRun:
    """Run the active `runner` over `items` ((video id, feature file or (T, D) array))
    and localize every video that loaded.

    `durations` (video -> seconds) clip the detections; `on_video` is called once per
    input, done or failed (progress)."""
    tick = on_video or (lambda: None)
    infer = Inference(runner, radius, max_t=max_t, batch_size=batch_size)
    reader = _Reader(items, feature_dim, tick)
    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    started = time.perf_counter()
    for vid, cas, att in infer.stream(reader):
        outputs[vid] = (cas, att)
        tick()
    order = [v for v in reader.ids if v in outputs]  # input order (videos complete in batch order)
    network_done = time.perf_counter()
    ordered = {v: outputs[v] for v in order}
    dets, scores = detect_outputs(ordered, post, classes, durations)
    return DetectRun(order, ordered, dets, scores, reader.failed, infer.stats, network_done - started,
                     time.perf_counter() - network_done)
