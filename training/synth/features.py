"""Features of the synthetic dataset: the fixed prototype directions, where each
component of a video goes (its plan) and the T x D rows (see the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hamnet_deploy.runtime.annotations import VideoAnnotation
from hamnet_deploy.training.synth.config import (
    _STREAM_FEATURES,
    _STREAM_PROTOTYPES,
    _STREAM_STRUCTURE,
    ROLE_BACKGROUND,
    ROLE_CORE,
    ROLE_DISTRACTOR,
    ROLE_PHASE,
    SynthConfig,
)


def num_snippets(duration: float, snippet_seconds: float = 0.64) -> int:
    """T = ceil(duration / snippet_seconds), at least 1."""
    return max(1, int(math.ceil(duration / snippet_seconds)))


def snippet_ranges(segments: np.ndarray, T: int, snippet_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Snippet range [s0, e0) of each segment: the snippets whose centre lies in it (at
    least one), clipped to the video; empty (s0 == e0 == T) past its end."""
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    s0 = np.ceil(seg[:, 0] / snippet_seconds - 0.5).astype(np.int64)
    e0 = np.ceil(seg[:, 1] / snippet_seconds - 0.5).astype(np.int64)
    e0 = np.maximum(e0, s0 + 1)
    s0 = np.clip(s0, 0, T)
    e0 = np.clip(e0, 0, T)
    return s0, e0


@dataclass
class _Prototypes:
    """The dataset's fixed directions, each row already scaled by its strength (K x D),
    and the column layout of the per-snippet coefficient matrix."""

    dictionary: np.ndarray  # (K, D) float32
    num_classes: int
    num_groups: int

    @property
    def phase0(self) -> int:
        return self.num_classes

    @property
    def group0(self) -> int:
        return 2 * self.num_classes

    @property
    def motion(self) -> int:
        return 2 * self.num_classes + self.num_groups

    @property
    def burst_motion(self) -> int:
        return self.motion + 1

    @property
    def burst_group0(self) -> int:
        return self.motion + 2

    @property
    def context0(self) -> int:
        return self.motion + 2 + self.num_groups


def _prototypes(cfg: SynthConfig, num_classes: int) -> _Prototypes:
    rng = np.random.default_rng([cfg.seed, _STREAM_PROTOTYPES])
    C, D, h = num_classes, cfg.dim, cfg.dim // 2
    G = -(-C // cfg.class_group_size)
    core = rng.standard_normal((C, D))
    phase_own = rng.standard_normal((C, D))
    groups = rng.standard_normal((G, D))
    motion = np.zeros((1, D))
    motion[0, h:] = rng.standard_normal(h)
    context = rng.standard_normal((C, D))
    w = cfg.phase_core_overlap
    phase = w * core + math.sqrt(max(0.0, 1.0 - w * w)) * phase_own
    dictionary = np.concatenate([
        core * cfg.core_strength, phase * cfg.phase_class_strength, groups * cfg.phase_group_strength,
        motion * cfg.motion_strength, motion * cfg.distractor_motion_strength,
        groups * cfg.distractor_group_strength, context * cfg.context_strength,
    ]).astype(np.float32)
    return _Prototypes(dictionary, C, G)


@dataclass
class _Plan:
    """Where each component of one video goes, in snippets."""

    T: int
    inst: np.ndarray  # (N, 4) int64: start, core start, core end, end (ends exclusive)
    labels: np.ndarray  # (N,) int64
    bursts: np.ndarray  # (B, 2) int64: start, end (exclusive); foreground is excluded later
    burst_labels: np.ndarray  # (B,) int64: the video class whose group a burst carries


def _plan(cfg: SynthConfig, video: VideoAnnotation, index: int) -> _Plan:
    rng = np.random.default_rng([cfg.seed, _STREAM_STRUCTURE, index])
    sn = cfg.snippet_seconds
    T = num_snippets(video.duration, sn)
    s0, e0 = snippet_ranges(video.segments, T, sn)
    length = e0 - s0
    u = rng.random((len(s0), 2))
    frac = cfg.core_fraction_min + (cfg.core_fraction_max - cfg.core_fraction_min) * u[:, 0]
    core = np.where(length > 0, np.maximum(1, np.rint(frac * length)), 0).astype(np.int64)
    where = cfg.core_position_min + (cfg.core_position_max - cfg.core_position_min) * u[:, 1]
    cs = s0 + np.minimum(np.floor(where * (length - core + 1)), length - core).astype(np.int64)
    inst = np.stack([s0, cs, cs + core, e0], axis=1)
    n_bursts = int(rng.poisson(cfg.distractors_per_minute * video.duration / 60.0))
    b0 = rng.integers(0, T, size=n_bursts)
    blen = np.ceil(rng.uniform(cfg.distractor_min_s, cfg.distractor_max_s, size=n_bursts) / sn).astype(np.int64)
    bursts = np.stack([b0, np.minimum(T, b0 + blen)], axis=1).astype(np.int64)
    labels = np.asarray(video.labels, dtype=np.int64)
    burst_labels = labels[rng.integers(0, len(labels), size=n_bursts)] if len(labels) else np.zeros(n_bursts, np.int64)
    return _Plan(T, inst.astype(np.int64), labels, bursts, burst_labels)


def paint(T: int, K: int, starts: np.ndarray, ends: np.ndarray, cols: np.ndarray,
           values: np.ndarray | float = 1.0) -> np.ndarray:
    """(T, K) sums of `values` over the ranges [starts, ends) in columns `cols` (vectorised
    difference array + cumulative sum)."""
    diff = np.zeros((T + 1, K), dtype=np.float64)
    vals = np.broadcast_to(np.asarray(values, dtype=np.float64), np.shape(starts))
    np.add.at(diff, (starts, cols), vals)
    np.add.at(diff, (ends, cols), -vals)
    return np.cumsum(diff[:T], axis=0)


def _coefficients(plan: _Plan, proto: _Prototypes, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, K) float32 weights of the dictionary rows, and (T, B) float32 burst indicators."""
    T, K = plan.T, proto.dictionary.shape[0]
    s0, cs, ce, e0 = plan.inst.T
    lab = plan.labels
    ones = np.ones(len(lab))
    motion = np.full(len(lab), proto.motion)
    phase, group = proto.phase0 + lab, proto.group0 + lab // group_size
    starts = np.concatenate([cs, s0, cs, s0, cs, s0])
    ends = np.concatenate([ce, e0, ce, e0, ce, e0])
    cols = np.concatenate([lab, phase, phase, group, group, motion])
    vals = np.concatenate([ones, ones, -ones, ones, -ones, ones])  # phases: instance minus core
    W = paint(T, K, starts, ends, cols, vals)
    fg = W[:, proto.motion] > 0
    video_classes = np.unique(lab)
    W[:, proto.context0 + video_classes] = 1.0
    B = len(plan.bursts)
    bursts = paint(T, max(B, 1), plan.bursts[:, 0], plan.bursts[:, 1], np.arange(B))[:, :B]
    bursts[fg] = 0.0  # distractors only in the background
    W[:, proto.burst_motion] = bursts.sum(axis=1)
    if B:
        W[:, proto.burst_group0:proto.context0] = bursts @ np.eye(proto.num_groups)[plan.burst_labels // group_size]
    np.clip(W, 0.0, 1.0, out=W)  # overlapping (real) instances do not add up
    np.clip(bursts, 0.0, 1.0, out=bursts)
    return W.astype(np.float32), bursts.astype(np.float32)


def _smooth(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Temporal smoothing by shifted adds, edges replicated."""
    r = len(kernel) // 2
    if r == 0:
        return x * np.float32(kernel[0])
    T = len(x)
    pad = np.concatenate([np.repeat(x[:1], r, axis=0), x, np.repeat(x[-1:], r, axis=0)])
    out = pad[0:T] * np.float32(kernel[0])
    tmp = np.empty_like(out)
    for j in range(1, len(kernel)):
        np.multiply(pad[j:j + T], np.float32(kernel[j]), out=tmp)
        out += tmp
    return out


def _features(cfg: SynthConfig, plan: _Plan, proto: _Prototypes, index: int) -> np.ndarray:
    rng = np.random.default_rng([cfg.seed, _STREAM_FEATURES, index])
    T, D, h = plan.T, cfg.dim, cfg.dim // 2
    kernel = np.asarray(cfg.smoothing, dtype=np.float64)
    kernel = kernel / kernel.sum()
    x = rng.standard_normal((T, D), dtype=np.float32)
    x *= np.float32(cfg.noise_strength / math.sqrt(float((kernel ** 2).sum())))
    scene = rng.standard_normal(D, dtype=np.float32)
    burst_dirs = rng.standard_normal((len(plan.bursts), h), dtype=np.float32)
    W, bursts = _coefficients(plan, proto, cfg.class_group_size)
    x += scene * np.float32(cfg.scene_strength)
    x += W @ proto.dictionary
    if len(plan.bursts):
        x[:, h:] += bursts @ (burst_dirs * np.float32(cfg.distractor_random_strength))
    return _smooth(x, kernel)


def snippet_roles(entry: dict, T: int) -> np.ndarray:
    """(T,) int8 role of each snippet (ROLE_BACKGROUND/PHASE/CORE/DISTRACTOR) from one
    video's entry of `synth_structure.json`; where instances overlap the core wins."""
    inst = np.asarray(entry.get("instances", []), dtype=np.int64).reshape(-1, 4)
    bursts = np.asarray(entry.get("distractors", []), dtype=np.int64).reshape(-1, 2)
    n, b = len(inst), len(bursts)
    starts = np.concatenate([bursts[:, 0], inst[:, 0], inst[:, 1]])
    ends = np.concatenate([bursts[:, 1], inst[:, 3], inst[:, 2]])
    cols = np.repeat([0, 1, 2], [b, n, n])
    P = paint(T, 3, starts, ends, cols) > 0
    roles = np.full(T, ROLE_BACKGROUND, dtype=np.int8)
    roles[P[:, 0]] = ROLE_DISTRACTOR
    roles[P[:, 1]] = ROLE_PHASE
    roles[P[:, 2]] = ROLE_CORE
    return roles
