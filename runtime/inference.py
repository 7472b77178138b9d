"""Drive a runner over many videos of any length: exact windows and batches from
`runtime.windows`, executed here.

    with runner:
        infer = Inference(runner, radius=bundle.receptive_radius, max_t=512, batch_size=8)
        outputs = infer.run(features)                 # [(cas (T, C+1), attention (T,))] per video
        for key, cas, att in infer.stream(items):     # (key, features) in, as each video completes
            ...

The outputs equal one full-length, one-video-at-a-time pass of the network (within
float tolerance: only the summation order inside the backend differs), whatever the
chunk length, batch size or mix of lengths. `stream` reads its input lazily and holds
at most about `group_snippets` snippets of features at a time (one longer video alone
is held whole).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hamnet_deploy.runtime.errors import BackendUnavailable, ConfigError
from hamnet_deploy.runtime.windows import WindowPlan, plan_windows

DEFAULT_GROUP_SNIPPETS = 16384
"""Snippets of features `stream` gathers before planning a group (64 MiB at D = 1024)."""


@dataclass
class InferenceStats:
    """What a driver did: videos, windows, batches, snippets and time in the network."""

    videos: int = 0
    windows: int = 0
    batches: int = 0
    useful_snippets: int = 0
    computed_snippets: int = 0
    network_seconds: float = 0.0
    copy_seconds: float = 0.0

    def add_plan(self, plan: WindowPlan) -> None:
        self.videos += int(plan.lengths.size)
        self.windows += plan.num_windows
        self.batches += len(plan.batches)
        self.useful_snippets += plan.useful_snippets
        self.computed_snippets += plan.computed_snippets

    @property
    def overhead(self) -> float:
        return self.computed_snippets / self.useful_snippets - 1.0 if self.useful_snippets else 0.0


def runner_limits(runner: Any) -> tuple[int | None, int | None, int]:
    """(max T, max batch, min T) a runner accepts; None = no limit."""
    max_t = getattr(runner, "max_t", None)
    max_batch = getattr(runner, "max_batch", None)
    min_t = getattr(runner, "min_t", 1) or 1
    return (int(max_t) if max_t else None, int(max_batch) if max_batch else None, int(min_t))


class Inference:
    """Runs `runner` over videos with exact chunking and batching.

    Args:
        runner: an active runner (`infer([B, T, D]) -> (cas, attention)`).
        radius: the model's receptive radius (bundle manifest).
        max_t: chunk length W (`--max-t`); the runner's own max T (TensorRT profile) caps it.
            None and no runner limit: every video runs whole.
        batch_size: most windows per `infer` call (capped by the runner's max batch).
        short: "bucket" or "pad" for videos shorter than W (see `runtime.windows`).
        group_snippets: `stream` plans this many snippets of videos at a time.
    """

    def __init__(self, runner: Any, radius: int, *, max_t: int | None = None, batch_size: int = 1,
                 short: str = "bucket", group_snippets: int = DEFAULT_GROUP_SNIPPETS) -> None:
        if max_t is not None and int(max_t) < 1:
            raise ConfigError(f"--max-t {max_t}: must be >= 1")
        if int(batch_size) < 1:
            raise ConfigError(f"--batch-size {batch_size}: must be >= 1")
        r_max_t, r_max_batch, r_min_t = runner_limits(runner)
        limits = [t for t in (max_t, r_max_t) if t is not None]
        self.runner = runner
        self.radius = int(radius)
        self.window: int | None = min(limits) if limits else None
        self.batch_size = min(int(batch_size), r_max_batch) if r_max_batch else int(batch_size)
        self.min_width = r_min_t
        self.short = short
        self.group_snippets = max(1, int(group_snippets))
        self.stats = InferenceStats()
        # fail now (not at the first video) on a chunk length that cannot work
        plan_windows([], self.window, self.radius, self.batch_size, short, self.min_width)

    def plan(self, lengths: Sequence[int] | np.ndarray) -> WindowPlan:
        return plan_windows(lengths, self.window, self.radius, self.batch_size, self.short, self.min_width)

    def run(self, features: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(cas (T, C+1), attention (T,)) float32 of each video, in input order."""
        out: list[Any] = [None] * len(features)
        for index, cas, att in self._execute(features):
            out[index] = (cas, att)
        return out

    def stream(self, items: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
        """(key, cas, attention) for each (key, features) of `items`, each video as soon as all
        its windows ran; items are read lazily, about `group_snippets` snippets at a time."""
        keys: list[Any] = []
        feats: list[np.ndarray] = []
        held = 0
        for key, x in items:
            keys.append(key)
            feats.append(x)
            held += int(x.shape[0])
            if held >= self.group_snippets:
                for index, cas, att in self._execute(feats):
                    yield keys[index], cas, att
                keys, feats, held = [], [], 0
        if feats:
            for index, cas, att in self._execute(feats):
                yield keys[index], cas, att

    # ------------------------------------------------------------------ core
    def _execute(self, features: Sequence[np.ndarray]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Run one plan over `features`; yield (index, cas, attention) as videos complete."""
        lengths = np.array([int(x.shape[0]) for x in features], dtype=np.int64)
        if lengths.size == 0:
            return
        dims = {int(x.shape[1]) for x in features}
        if len(dims) != 1:
            raise ConfigError(f"videos of different feature dimensions {sorted(dims)} cannot run together")
        dim = dims.pop()
        plan = self.plan(lengths)
        self.stats.add_plan(plan)
        remaining = np.bincount(plan.video, minlength=lengths.size)
        cas_out: list[np.ndarray | None] = [None] * lengths.size
        att_out: list[np.ndarray | None] = [None] * lengths.size
        for batch in plan.batches:
            t0 = time.perf_counter()
            x, whole = self._gather(features, plan, batch, dim)
            t1 = time.perf_counter()
            cas, att = self.runner.infer(x)
            t2 = time.perf_counter()
            self._check_outputs(cas, att, x.shape)
            done = self._scatter(plan, batch, cas, att, whole, cas_out, att_out, remaining)
            self.stats.copy_seconds += (t1 - t0) + (time.perf_counter() - t2)
            self.stats.network_seconds += t2 - t1
            for v in done:
                yield int(v), cas_out[v], att_out[v]  # type: ignore[misc]
                cas_out[v] = att_out[v] = None

    @staticmethod
    def _gather(features: Sequence[np.ndarray], plan: WindowPlan, batch: np.ndarray,
                dim: int) -> tuple[np.ndarray, bool]:
        """The [B, w, D] input of one batch; (input, True) when it is one whole video (a view)."""
        width = int(plan.width[batch[0]])
        first, count, offset = plan.copy_ranges(batch)
        b = batch[0]
        if (batch.size == 1 and plan.start[b] == 0 and plan.lo[b] == 0
                and plan.hi[b] == plan.lengths[plan.video[b]] == width):  # the video's only window
            return np.ascontiguousarray(features[int(plan.video[b])], dtype=np.float32)[None], True
        padded = bool((count < width).any())
        x = (np.zeros if padded else np.empty)((batch.size, width, dim), dtype=np.float32)
        for row, (w, f, n, o) in enumerate(zip(plan.video[batch].tolist(), first.tolist(), count.tolist(),
                                               offset.tolist(), strict=True)):
            x[row, o:o + n] = features[w][f:f + n]
        return x, False

    def _check_outputs(self, cas: np.ndarray, att: np.ndarray, shape: tuple[int, ...]) -> None:
        b, t = shape[0], shape[1]
        if cas.ndim != 3 or cas.shape[:2] != (b, t) or att.shape[:2] != (b, t) or att.size != b * t:
            raise BackendUnavailable(f"{getattr(self.runner, 'name', 'the runner')} returned cas {cas.shape} and "
                                     f"attention {att.shape} for input {tuple(shape)}; expected [{b}, {t}, C+1] "
                                     f"and [{b}, {t}, 1]; re-export the bundle")

    @staticmethod
    def _scatter(plan: WindowPlan, batch: np.ndarray, cas: np.ndarray, att: np.ndarray, whole: bool,
                 cas_out: list, att_out: list, remaining: np.ndarray) -> list[int]:
        """Copy each window's exact outputs into its video; the videos now complete."""
        att = att.reshape(att.shape[0], att.shape[1])
        if whole:
            v = int(plan.video[batch[0]])
            cas_out[v], att_out[v] = cas[0], att[0]
            remaining[v] -= 1
            return [v]
        done = []
        for row, (v, s, lo, hi) in enumerate(zip(plan.video[batch].tolist(), plan.start[batch].tolist(),
                                                 plan.lo[batch].tolist(), plan.hi[batch].tolist(), strict=True)):
            if cas_out[v] is None:
                T = int(plan.lengths[v])
                cas_out[v] = np.empty((T, cas.shape[2]), dtype=np.float32)
                att_out[v] = np.empty(T, dtype=np.float32)
            cas_out[v][lo:hi] = cas[row, lo - s:hi - s]
            att_out[v][lo:hi] = att[row, lo - s:hi - s]
            remaining[v] -= 1
            if remaining[v] == 0:
                done.append(v)
        return done


def infer_videos(runner: Any, features: Sequence[np.ndarray], radius: int, *, max_t: int | None = None,
                 batch_size: int = 1, short: str = "bucket") -> list[tuple[np.ndarray, np.ndarray]]:
    """One call: `Inference(runner, radius, ...).run(features)`."""
    return Inference(runner, radius, max_t=max_t, batch_size=batch_size, short=short).run(features)
