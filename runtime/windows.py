"""Exact chunking and batching of variable-length videos: the plan (pure NumPy index
arithmetic; `runtime.inference` executes it).

Why it is exact. The exported graph has no mask input. Each output snippet of the
network depends on the inputs within `radius` snippets of it (2 for HAM-Net, 10 with
the ActivityNet pool; the bundle manifest records it), and at a video's true ends the
network sees its own zero padding, layer by layer. So an output computed inside a
window of the video is *exactly* the full-video output when its whole receptive field
lies inside the window, or reaches past a window edge only where that edge is a true
video boundary. Zero rows appended to a short video are *not* the same as the
network's own padding (the first convolution of a zero row is its bias, not 0), so the
last `radius` outputs of a zero-padded window are wrong and must come from another
window. For a window of width `w` starting at snippet `s` of a video of `T` snippets
(positions outside [0, T) are zero rows), the exact outputs are::

    lo = 0 if s == 0 else max(s, 0) + radius
    hi = T if s + w == T else min(s + w, T) - radius

The planner covers every video with windows whose exact ranges tile [0, T), and assigns
each output snippet to exactly one window:

- `T >= W` (the window length, e.g. a TensorRT profile's max T or `--max-t`): windows of
  width W with step `W - 2 * radius`, the last one ending exactly at T (it overlaps its
  neighbour); window k supplies [s_k + radius, s_{k+1} + radius), the first from 0 and
  the last up to T. No padding anywhere.
- `T < W`, `short="bucket"` (default): one window of width T; videos with the same T
  share a batch, so batches hold no padding either.
- `T < W`, `short="pad"` (or when the runner needs a fixed width, e.g. a static DLA
  engine): one zero-padded window of width W supplies [0, T - radius) and a *tail*
  window that ends exactly at T (width `max(2 * radius, min_width)`, left-padded if need
  be) recomputes the last `radius` outputs. Every short video then batches with every
  other one.

Windows are then grouped into batches of identical width (at most `batch_size` each):
`[batch, width, D]` inputs with no mask and outputs equal to one-video-at-a-time runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hamnet_deploy.runtime.errors import ConfigError, DataError

SHORT_MODES = ("bucket", "pad")


def exact_range(start: np.ndarray, width: np.ndarray, length: np.ndarray,
                radius: int) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) of the outputs a window computes exactly (see the module docstring).

    All arguments broadcast; `start` may be negative (left zero padding) and
    `start + width` may pass `length` (right zero padding). An empty range has hi <= lo.
    """
    start = np.asarray(start, dtype=np.int64)
    end = start + np.asarray(width, dtype=np.int64)
    length = np.asarray(length, dtype=np.int64)
    lo = np.where(start == 0, 0, np.maximum(start, 0) + radius)
    hi = np.where(end == length, length, np.minimum(end, length) - radius)
    return lo, hi


@dataclass(frozen=True)
class WindowPlan:
    """Windows over a set of videos and the batches that run them.

    Per window (arrays of the same length N, in batch order): `video` (index into the
    lengths the plan was made for), `start` (first snippet; < 0 means left zero
    padding), `width` (the network's T for it), `lo`/`hi` (the output snippets
    [lo, hi) of the video this window supplies). `batches` holds, for each batch, the
    window indices it runs (all of one width, consecutive). `lengths` are the videos' T.
    """

    lengths: np.ndarray
    video: np.ndarray
    start: np.ndarray
    width: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    radius: int
    window: int | None
    batches: list[np.ndarray] = field(default_factory=list)

    @property
    def num_windows(self) -> int:
        return int(self.video.size)

    @property
    def computed_snippets(self) -> int:
        """Snippets the network computes (padding and overlap included)."""
        return int(self.width.sum())

    @property
    def useful_snippets(self) -> int:
        return int(self.lengths.sum())

    @property
    def overhead(self) -> float:
        """computed / useful - 1: the cost of overlap and padding."""
        useful = self.useful_snippets
        return self.computed_snippets / useful - 1.0 if useful else 0.0

    def batch_shapes(self) -> list[tuple[int, int]]:
        """(batch, width) of each batch."""
        return [(int(b.size), int(self.width[b[0]])) for b in self.batches]

    def copy_ranges(self, index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For windows `index` (default all): (first real snippet, number of real snippets,
        offset of the first real snippet inside the window)."""
        sel = slice(None) if index is None else index
        start, width = self.start[sel], self.width[sel]
        length = self.lengths[self.video[sel]]
        first = np.maximum(start, 0)
        count = np.minimum(start + width, length) - first
        return first, count, first - start

    def validate(self) -> None:
        """Raise AssertionError unless every snippet of every video is supplied by exactly
        one window, from inside that window's exact range. Vectorised; cheap."""
        n = self.num_windows
        assert all(a.shape == (n,) for a in (self.video, self.start, self.width, self.lo, self.hi))
        if n == 0:
            assert self.lengths.size == 0 or not self.lengths.any()
            return
        ok_lo, ok_hi = exact_range(self.start, self.width, self.lengths[self.video], self.radius)
        assert (self.lo < self.hi).all(), "a window supplies nothing"
        assert (self.lo >= ok_lo).all() and (self.hi <= ok_hi).all(), "a window supplies inexact outputs"
        assert (self.width >= 1).all()
        order = np.lexsort((self.lo, self.video))
        v, lo, hi = self.video[order], self.lo[order], self.hi[order]
        first = np.r_[True, v[1:] != v[:-1]]
        last = np.r_[v[1:] != v[:-1], True]
        assert (lo[first] == 0).all(), "a video does not start at 0"
        assert (hi[last] == self.lengths[v[last]]).all(), "a video does not end at T"
        assert (lo[~first] == hi[np.flatnonzero(~first) - 1]).all(), "gap or overlap between windows"
        assert np.array_equal(np.unique(v), np.flatnonzero(self.lengths > 0)), "a video has no window"
        flat = np.concatenate(self.batches) if self.batches else np.zeros(0, np.int64)
        assert np.array_equal(np.sort(flat), np.arange(n)), "batches do not hold every window once"
        for b in self.batches:
            assert (self.width[b] == self.width[b[0]]).all(), "a batch mixes widths"


def _long_windows(lengths: np.ndarray, videos: np.ndarray, window: int, radius: int):
    """Windows of width `window` with step window - 2r, the last ending at T."""
    T = lengths[videos]
    step = window - 2 * radius
    count = 1 + -(-(T - window) // step)  # 1 + ceil((T - W) / step)
    video = np.repeat(videos, count)
    first = np.repeat(np.cumsum(count) - count, count)
    k = np.arange(video.size) - first
    n = np.repeat(count, count)
    length = lengths[video]
    start = np.minimum(k * step, length - window)
    lo = np.where(k == 0, 0, start + radius)
    nxt = np.minimum((k + 1) * step, length - window) + radius  # the next window's lo
    hi = np.where(k == n - 1, length, nxt)
    return video, start, np.full(video.size, window, np.int64), lo, hi


def _bucket_windows(lengths: np.ndarray, videos: np.ndarray):
    """One window of width T per video (batched with videos of the same T)."""
    T = lengths[videos]
    zeros = np.zeros(videos.size, np.int64)
    return videos, zeros, T, zeros.copy(), T.copy()


def _pad_windows(lengths: np.ndarray, videos: np.ndarray, window: int, radius: int, tail: int):
    """A zero-padded window of width `window` supplying [0, T - r), plus a tail window of
    width `tail` ending at T supplying [T - r, T) (none when r = 0)."""
    T = lengths[videos]
    n = videos.size
    zeros = np.zeros(n, np.int64)
    main = (videos, zeros, np.full(n, window, np.int64), zeros.copy(), T - radius)
    if radius == 0:
        return main
    tails = (videos, T - tail, np.full(n, tail, np.int64), T - radius, T.copy())
    return tuple(np.concatenate(pair) for pair in zip(main, tails, strict=True))


def plan_windows(lengths: Sequence[int] | np.ndarray, window: int | None = None, radius: int = 0,
                 batch_size: int = 1, short: str = "bucket", min_width: int = 1) -> WindowPlan:
    """Plan exact windows and batches for videos of `lengths` snippets.

    Args:
        lengths: T of each video (>= 1).
        window: W, the longest input the runner takes (TensorRT profile max T, `--max-t`);
            None = no limit (every video is one window of its own length).
        radius: the model's receptive radius (bundle manifest `receptive_radius`).
        batch_size: most windows per batch.
        short: "bucket" (a video shorter than W is one window of its own length, batched
            with videos of the same length) or "pad" (padded to W plus a short tail window,
            so all short videos batch together).
        min_width: the shortest input the runner takes (a static TensorRT/DLA profile has
            min T = max T = W); videos shorter than it are padded.
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    radius = int(radius)
    if radius < 0:
        raise ConfigError(f"receptive radius {radius} must be >= 0")
    if short not in SHORT_MODES:
        raise ConfigError(f"short-video mode {short!r}: choose one of {', '.join(SHORT_MODES)}")
    if int(batch_size) < 1:
        raise ConfigError(f"batch size {batch_size} must be >= 1")
    if lengths.size and lengths.min() < 1:
        raise DataError(f"video {int(np.argmin(lengths))} has T = {int(lengths.min())}; every video needs "
                        "at least one snippet")
    min_width = max(1, int(min_width))
    if window is not None:
        window = int(window)
        if window <= 2 * radius:
            raise ConfigError(f"chunk length {window} must exceed twice the receptive radius ({radius}): "
                              f"use --max-t {2 * radius + 1} or more (ideally a few hundred)")
        if min_width > window:
            raise ConfigError(f"the runner's shortest input ({min_width}) exceeds the chunk length {window}")
    elif min_width > 1:
        raise ConfigError("a runner with a minimum input length needs a chunk length (its max T)")
    idx = np.arange(lengths.size)
    if window is None:
        parts = [_bucket_windows(lengths, idx)]
    else:
        is_long = lengths >= window
        tail = max(2 * radius, min_width)
        pad = ~is_long & ((short == "pad") | (lengths < min_width))
        # a padded short video needs T >= 2r (else its two windows leave a gap); when the
        # runner takes its own length, such a tiny video simply runs as is
        tiny = pad & (lengths < 2 * radius)
        if (tiny & (lengths < min_width)).any():
            bad = int(np.flatnonzero(tiny & (lengths < min_width))[0])
            raise DataError(f"video {bad} has T = {int(lengths[bad])} snippets: too short for a fixed-length "
                            f"engine (T = {min_width}) with receptive radius {radius} (needs T >= "
                            f"{2 * radius}); run it with --backend onnxruntime")
        pad &= ~tiny
        parts = [_long_windows(lengths, np.flatnonzero(is_long), window, radius),
                 _bucket_windows(lengths, np.flatnonzero(~is_long & ~pad)),
                 _pad_windows(lengths, np.flatnonzero(pad), window, radius, tail)]
    video, start, width, lo, hi = (np.concatenate(cols).astype(np.int64) for cols in zip(*parts, strict=True))
    # batch order: by width, then video, then position; cut runs of one width into batches
    order = np.lexsort((start, video, width))
    video, start, width, lo, hi = video[order], start[order], width[order], lo[order], hi[order]
    batches = _cut(width, int(batch_size))
    return WindowPlan(lengths, video, start, width, lo, hi, radius, window, batches)


def _cut(width: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive runs of equal width, cut into pieces of at most `batch_size`."""
    if width.size == 0:
        return []
    run_start = np.flatnonzero(np.r_[True, width[1:] != width[:-1]])
    run_id = np.repeat(np.arange(run_start.size), np.diff(np.r_[run_start, width.size]))
    pos = np.arange(width.size) - run_start[run_id]
    new_batch = (pos % batch_size) == 0
    bounds = np.flatnonzero(new_batch)
    return np.split(np.arange(width.size), bounds[1:])
