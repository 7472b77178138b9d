"""The embedded synthetic dataset: a deterministic, THUMOS14-like WTAL dataset of snippet
features with known ground truth (`hamnet synth OUT`).

What it models
--------------
Timelines. By default parametric and THUMOS-like: durations log-normal in 1-10 minutes
(mean about 210 s, i.e. about 330 snippets of 0.64 s), 1-3 classes per video (mean about
1.2), non-overlapping action instances of 1-10 s that cover a per-video foreground
fraction drawn from 20-40 % (about 15 instances per video), a train split "validation"
and a "test" split (200/212 of 412, as on THUMOS14). With `timelines=` an annotation JSON
(e.g. THUMOS14's `thumos14-reduced.json`) supplies real videos, durations, instances,
classes and splits instead; features then only cover [0, duration) even where a real
segment runs past the end.

Features. One row per snippet (T = ceil(duration / snippet_seconds)), D floats, the first
half standing for RGB and the second for optical flow. Each row is a sum of components,
each a fixed random direction with standard-normal entries scaled by a strength (a
per-dimension amplitude, relative to the noise, whose per-dimension std is
`noise_strength` after smoothing):

- background: a per-video scene vector (`scene_strength`, independent of the class) plus
  per-snippet Gaussian noise;
- an action instance is split into its decisive *core* (`core_fraction_*` of it, 40-55 %)
  and the *phases* around it. The core sits late in the instance (its position drawn in
  `core_position_*`, 0.6-0.9 of the room it has), so most of the phase is a run-up before
  it and a little a follow-through after it, as in a long jump, a javelin throw, a cricket
  bowl or a dive. The core carries the strong class prototype P_c (`core_strength`). The
  phases carry a weaker class-specific direction (`phase_class_strength`; a mix of P_c,
  weight `phase_core_overlap`, and a phase prototype Q_c of its own) plus a direction
  shared by a group of `class_group_size` classes (`phase_group_strength`: running up
  looks alike in several sports);
- a class-agnostic motion direction in the flow half over the whole instance
  (`motion_strength`);
- distractors: bursts of activity in the background (`distractors_per_minute`): the same
  motion direction (`distractor_motion_strength`), a random flow direction of their own
  (`distractor_random_strength`) and the phase group direction of one of the video's
  classes (`distractor_group_strength`): the warm-ups, walk-backs and replays around real
  sports actions, which look like a run-up without being one. So neither motion nor the
  group direction alone means "action"; only the class-specific part of a phase does;
- optional scene context: a class direction over the whole of a video with that class
  (`context_strength`, 0 by default);
- finally a small temporal kernel (`smoothing`, [0.15, 0.7, 0.15]) mixes neighbouring
  snippets, as a snippet straddling a boundary or I3D's temporal receptive field does.

Why: the design mirrors the failure mode HAM-Net addresses. A model trained with top-k
MIL pooling only (k = T/r, r = 10: about 10 % of the snippets) is rewarded for the
snippets with the highest class scores. The cores (about 15 % of the snippets on
THUMOS14's timelines, 31 % foreground) fill that budget, so an MIL-only model (paper
Table 1 exp 5: BCL + SAL + sparsity + guide) needs nothing but P_c: its attention covers
the cores and little of the run-ups, which also resemble the background distractors,
and its detections are the late part of each instance: found, but cut short, so they
fail at the higher tIoU thresholds. HAM-Net's hard and semi-soft attention-drop losses
(HAL, SSAL) remove the most attended snippets and still ask for the video's class, which
only the phases can then supply through Q_c; a model that learns Q_c extends its
attention over the run-ups and finds whole instances. A BCL-only model (exp 1) has no
attention at all, only the CAS. Without the per-video scene at the strength of the core
(version 1 of this generator) a 200-video training set no longer lets a classifier
memorise each video's scene instead of learning the classes (classification mAP on the
test split 45 % -> 95 %, close to THUMOS14's), so localization differences show. The
strengths are settings so that the ablation benchmarks can tune how hard each part is;
timelines and the noise do not depend on them (separate random streams), so changing a
strength changes only that component.

Determinism: everything derives from `seed` and the video's index, through separate
`np.random.default_rng([seed, stream, index])` streams, so a video's timeline and
features do not depend on the order, the number of worker threads or (with `timelines=`)
the other videos chosen; another seed gives another dataset.

Output (per-video layout, what `training.data.load_dataset` reads): `OUT/videos/<video>.npy`
(T x D float32), `OUT/annotations.json`, plus `OUT/synth_config.json` (the settings) and
`OUT/synth_structure.json` (each instance's core and each distractor, in snippets, for
benchmarks). With `wtalc=True` also the W-TALC layout in `OUT/wtalc/` under the name
`WTALC_NAME` ("Synthetic").
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from hamnet_deploy.runtime.annotations import (
    Annotations,
    VideoAnnotation,
    annotations_to_json,
    load_annotation_json,
)
from hamnet_deploy.runtime.errors import ConfigError, DataError
from hamnet_deploy.runtime.fileio import atomic_write, write_json_atomic

__all__ = [
    "SynthConfig", "generate_dataset", "make_timelines", "dataset_stats", "snippet_roles",
    "load_structure", "num_snippets", "WTALC_NAME", "SYNTH_VERSION", "TRAIN_SUBSET", "TEST_SUBSET",
    "ROLE_BACKGROUND", "ROLE_PHASE", "ROLE_CORE", "ROLE_DISTRACTOR",
]

WTALC_NAME = "Synthetic"
WTALC_DIR = "wtalc"
WTALC_FEATURES = f"{WTALC_NAME}-I3D-JOINTFeatures.npy"
WTALC_ANNOTATIONS = f"{WTALC_NAME}-Annotations"
WTALC_FILES = ("classlist", "videoname", "subset", "duration", "labels", "labels_all", "segments")
ANNOTATION_FILE = "annotations.json"
VIDEOS_DIR = "videos"
CONFIG_FILE = "synth_config.json"
STRUCTURE_FILE = "synth_structure.json"
SYNTH_VERSION = 2  # 2: cores 40-55 % late in the instance, group-carrying distractors, weaker scene
TRAIN_SUBSET = "validation"  # THUMOS14 trains on its validation videos
TEST_SUBSET = "test"

ROLE_BACKGROUND, ROLE_PHASE, ROLE_CORE, ROLE_DISTRACTOR = 0, 1, 2, 3

# Random streams: [seed, stream, video index] (prototypes: [seed, stream]).
_STREAM_PROTOTYPES, _STREAM_TIMELINE, _STREAM_FEATURES, _STREAM_STRUCTURE, _STREAM_SUBSET = 0, 1, 2, 3, 4


@dataclass
class SynthConfig:
    """Settings of the synthetic dataset. Defaults give a THUMOS14-sized dataset
    (412 videos, 2048-D I3D-like features, 20 classes, ~1.1 GB)."""

    # --- size and identity
    videos: int = 412  # number of videos (with `timelines`: None/0 means all; see below)
    dim: int = 2048  # D; even: first half stands for RGB, second half for flow
    num_classes: int = 20  # C (ignored with `timelines`: classes come from the file)
    seed: int = 0  # >= 0; every random draw derives from it
    test_fraction: float = 212 / 412  # share of videos in the "test" split (THUMOS14: 212 of 412)
    snippet_seconds: float = 0.64  # 16 frames at 25 fps
    fps: float = 25.0  # feature frame rate written to annotations.json
    timelines: str | None = None  # annotation JSON whose real timelines to use instead

    # --- parametric timelines
    duration_median_s: float = 187.0  # log-normal video duration ...
    duration_sigma: float = 0.55  # ... its log-std ...
    duration_min_s: float = 60.0  # ... clipped to [min, max]: mean about 213 s (T about 333)
    duration_max_s: float = 600.0
    foreground_min: float = 0.2  # per-video foreground fraction, uniform in [min, max]
    foreground_max: float = 0.4
    instance_median_s: float = 3.5  # log-normal instance length ...
    instance_sigma: float = 0.6
    instance_min_s: float = 1.0  # ... clipped to [min, max]
    instance_max_s: float = 10.0
    min_gap_s: float = 1.0  # background between consecutive instances, at least
    class_count_probs: tuple[float, ...] = (0.82, 0.14, 0.04)  # P(1, 2, 3 classes in a video)

    # --- instance structure
    core_fraction_min: float = 0.4  # core length / instance length, uniform in [min, max]
    core_fraction_max: float = 0.55
    core_position_min: float = 0.6  # where the core sits in the instance, uniform in [min, max]:
    core_position_max: float = 0.9  # 0 = at its start (no run-up), 1 = at its end (no follow-through)

    # --- feature strengths (per-dimension amplitudes; see the module docstring)
    noise_strength: float = 1.0  # per-snippet noise std per dimension, after smoothing
    scene_strength: float = 0.15  # per-video scene vector (independent of the class)
    core_strength: float = 0.5  # class prototype P_c in the core
    phase_class_strength: float = 0.3  # class-specific direction in the phases
    phase_core_overlap: float = 0.25  # in [0, 1]: weight of P_c in that direction (rest: Q_c)
    phase_group_strength: float = 0.2  # direction shared by a group of classes, in the phases
    class_group_size: int = 4  # classes per group (class c is in group c // size)
    motion_strength: float = 0.3  # class-agnostic motion (flow half) over whole instances
    distractors_per_minute: float = 2.0  # motion bursts per minute of background
    distractor_min_s: float = 1.0  # burst length, uniform in [min, max] seconds
    distractor_max_s: float = 4.0
    distractor_motion_strength: float = 0.3  # the motion direction in a burst
    distractor_random_strength: float = 0.3  # plus a random flow direction of the burst's own
    distractor_group_strength: float = 0.2  # plus the phase group direction of one of the video's classes
    context_strength: float = 0.0  # class direction over a whole video of that class
    smoothing: tuple[float, ...] = (0.15, 0.7, 0.15)  # temporal kernel (odd length, normalised)

    def validate(self) -> None:
        """Raise ConfigError (one line naming the setting and the fix) for a bad value."""
        if int(self.dim) != self.dim or self.dim < 2 or self.dim % 2:
            raise ConfigError(f"dim {self.dim}: the feature dimension must be an even number >= 2 "
                              f"(the first half stands for RGB, the second for flow)")
        if self.timelines is None and (int(self.videos) != self.videos or self.videos < 2):
            raise ConfigError(f"videos {self.videos}: need at least 2 videos (one per split)")
        if self.timelines is not None and self.videos and self.videos < 2:
            raise ConfigError(f"videos {self.videos}: need at least 2 videos (one per split)")
        if self.timelines is None and self.num_classes < 1:
            raise ConfigError(f"num_classes {self.num_classes}: need at least 1 class")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ConfigError(f"seed {self.seed}: the seed must be an integer >= 0")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction {self.test_fraction}: must be between 0 and 1 (exclusive)")
        if not self.snippet_seconds > 0 or not self.fps > 0:
            raise ConfigError("snippet_seconds and fps must be positive")
        for lo, hi in (("duration_min_s", "duration_max_s"), ("foreground_min", "foreground_max"),
                       ("instance_min_s", "instance_max_s"), ("core_fraction_min", "core_fraction_max"),
                       ("distractor_min_s", "distractor_max_s")):
            a, b = getattr(self, lo), getattr(self, hi)
            if not 0 < a <= b:
                raise ConfigError(f"{lo} {a} and {hi} {b}: need 0 < {lo} <= {hi}")
        if not 0.0 <= self.core_position_min <= self.core_position_max <= 1.0:
            raise ConfigError(f"core_position_min {self.core_position_min} and core_position_max "
                              f"{self.core_position_max}: need 0 <= min <= max <= 1")
        if self.foreground_max >= 1 or self.core_fraction_max > 1:
            raise ConfigError("foreground_max must be < 1 and core_fraction_max <= 1")
        if self.duration_min_s < 2 * self.instance_max_s:
            raise ConfigError(f"duration_min_s {self.duration_min_s}: must be at least twice "
                              f"instance_max_s ({self.instance_max_s})")
        probs = np.asarray(self.class_count_probs, dtype=np.float64)
        if probs.ndim != 1 or probs.size == 0 or (probs < 0).any() or probs.sum() <= 0:
            raise ConfigError("class_count_probs must be non-negative probabilities of 1, 2, ... classes")
        if not 0.0 <= self.phase_core_overlap <= 1.0:
            raise ConfigError(f"phase_core_overlap {self.phase_core_overlap}: must be in [0, 1]")
        if self.class_group_size < 1:
            raise ConfigError(f"class_group_size {self.class_group_size}: must be >= 1")
        strengths = [f.name for f in fields(self) if f.name.endswith("_strength")]
        bad = [n for n in strengths + ["distractors_per_minute", "min_gap_s", "duration_sigma",
                                       "instance_sigma"] if not getattr(self, n) >= 0]
        if bad:
            raise ConfigError(f"{bad[0]} {getattr(self, bad[0])}: must be >= 0")
        k = np.asarray(self.smoothing, dtype=np.float64)
        if k.ndim != 1 or k.size % 2 == 0 or k.sum() <= 0:
            raise ConfigError(f"smoothing {self.smoothing}: need an odd number of weights with a positive sum")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> SynthConfig:
        """The config recorded in `synth_config.json` (unknown keys are an error)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ConfigError(f"synth config: unknown setting {unknown[0]!r}; known: {', '.join(sorted(names))}")
        vals = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items()}
        return cls(**vals)


# ---------------------------------------------------------------- timelines


def num_snippets(duration: float, snippet_seconds: float = 0.64) -> int:
    """T = ceil(duration / snippet_seconds), at least 1."""
    return max(1, int(math.ceil(duration / snippet_seconds)))


def _snippet_ranges(segments: np.ndarray, T: int, snippet_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Snippet range [s0, e0) of each segment: the snippets whose centre lies in it (at
    least one), clipped to the video; empty (s0 == e0 == T) past its end."""
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    s0 = np.ceil(seg[:, 0] / snippet_seconds - 0.5).astype(np.int64)
    e0 = np.ceil(seg[:, 1] / snippet_seconds - 0.5).astype(np.int64)
    e0 = np.maximum(e0, s0 + 1)
    s0 = np.clip(s0, 0, T)
    e0 = np.clip(e0, 0, T)
    return s0, e0


def _class_names(num_classes: int) -> list[str]:
    width = max(2, len(str(num_classes - 1)))
    return [f"Class{c:0{width}d}" for c in range(num_classes)]


def _parametric_video(cfg: SynthConfig, index: int, slot: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Duration, (N, 2) segments and (N,) class indices of parametric video `index`;
    `slot` (its position within its split) picks its main class, so classes are balanced."""
    rng = np.random.default_rng([cfg.seed, _STREAM_TIMELINE, index])
    C = cfg.num_classes
    duration = float(np.clip(rng.lognormal(math.log(cfg.duration_median_s), cfg.duration_sigma),
                             cfg.duration_min_s, cfg.duration_max_s))
    duration = round(duration, 3)
    probs = np.asarray(cfg.class_count_probs, dtype=np.float64)
    k = min(C, int(rng.choice(len(probs), p=probs / probs.sum())) + 1)
    main = slot % C
    others = rng.permutation(np.delete(np.arange(C), main))[: k - 1]
    classes = np.concatenate([[main], others]).astype(np.int64)

    target = rng.uniform(cfg.foreground_min, cfg.foreground_max) * duration
    m = max(k, int(math.ceil(target / cfg.instance_min_s)) + 1)
    lengths = np.clip(rng.lognormal(math.log(cfg.instance_median_s), cfg.instance_sigma, size=m),
                      cfg.instance_min_s, cfg.instance_max_s)
    lengths = np.maximum(np.round(lengths, 1), 0.1)
    n = max(k, int(np.searchsorted(np.cumsum(lengths), target, side="right")))
    lengths = lengths[:n]
    background = duration - lengths.sum()
    gap = min(cfg.min_gap_s, background / (n + 1))
    gaps = gap + rng.dirichlet(np.ones(n + 1)) * (background - gap * (n + 1))
    starts = np.cumsum(gaps[:n]) + np.concatenate([[0.0], np.cumsum(lengths[:-1])])
    starts = np.floor(starts * 10) / 10  # 0.1 s annotations, like THUMOS14
    ends = np.minimum(np.round(starts + lengths, 1), duration)
    labels = classes[rng.integers(k, size=n)]
    labels[rng.permutation(n)[:k]] = classes  # every class of the video occurs
    return duration, np.stack([starts, ends], axis=1), labels


def _split_sizes(total: int, test_fraction: float) -> tuple[int, int]:
    n_test = min(total - 1, max(1, round(total * test_fraction)))
    return total - n_test, n_test


def _timelines(cfg: SynthConfig) -> tuple[Annotations, list[int]]:
    """Ground truth and each video's index (its random streams), in output order."""
    if cfg.timelines is not None:
        return _real_timelines(cfg)
    n_train, n_test = _split_sizes(int(cfg.videos), cfg.test_fraction)
    classes = _class_names(cfg.num_classes)
    width = max(4, len(str(max(n_train, n_test))))
    videos: dict[str, VideoAnnotation] = {}
    for index in range(cfg.videos):
        subset, slot = (TRAIN_SUBSET, index) if index < n_train else (TEST_SUBSET, index - n_train)
        duration, seg, lab = _parametric_video(cfg, index, slot)
        name = f"synth_{subset}_{slot + 1:0{width}d}"
        videos[name] = VideoAnnotation(name, subset, duration, seg, lab, float(cfg.fps))
    return Annotations(classes, videos), list(range(cfg.videos))


def _real_timelines(cfg: SynthConfig) -> tuple[Annotations, list[int]]:
    path = Path(cfg.timelines)  # type: ignore[arg-type]
    if not path.is_file():
        raise ConfigError(f"timelines {path}: file not found; name an annotation JSON such as "
                          f"thumos14-reduced.json (per-video layout format)")
    src = load_annotation_json(path)
    names = list(src.videos)
    if not names:
        raise DataError(f"{path}: no videos in the 'database'; nothing to generate")
    chosen = list(range(len(names)))
    want = int(cfg.videos or 0)
    if want and want > len(names):
        raise ConfigError(f"videos {want}: {path} has only {len(names)} videos; ask for at most that many")
    if want and want < len(names):
        rng = np.random.default_rng([cfg.seed, _STREAM_SUBSET])
        subsets = list(dict.fromkeys(src.videos[n].subset for n in names))
        members = {s: [i for i, n in enumerate(names) if src.videos[n].subset == s] for s in subsets}
        # largest-remainder quotas, at least one per split when there is room
        exact = np.array([want * len(members[s]) / len(names) for s in subsets])
        quota = np.floor(exact).astype(int)
        if want >= len(subsets):
            quota = np.maximum(quota, 1)
        for j in np.argsort(-(exact - np.floor(exact)), kind="stable"):
            if quota.sum() >= want:
                break
            quota[j] += 1
        while quota.sum() > want:
            quota[int(np.argmax(quota))] -= 1
        picked = []
        for s, q in zip(subsets, quota, strict=True):
            picked += rng.choice(members[s], size=min(int(q), len(members[s])), replace=False).tolist()
        chosen = sorted(picked)
    videos = {}
    for i in chosen:
        v = src.videos[names[i]]
        videos[v.name] = VideoAnnotation(v.name, v.subset, v.duration, v.segments, v.labels, float(cfg.fps))
    return Annotations(list(src.classes), videos), chosen


def make_timelines(config: SynthConfig) -> Annotations:
    """The ground truth `generate_dataset` would write for `config`, without features."""
    config.validate()
    return _timelines(config)[0]


# ---------------------------------------------------------------- features


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
    s0, e0 = _snippet_ranges(video.segments, T, sn)
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


def _paint(T: int, K: int, starts: np.ndarray, ends: np.ndarray, cols: np.ndarray,
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
    W = _paint(T, K, starts, ends, cols, vals)
    fg = W[:, proto.motion] > 0
    video_classes = np.unique(lab)
    W[:, proto.context0 + video_classes] = 1.0
    B = len(plan.bursts)
    bursts = _paint(T, max(B, 1), plan.bursts[:, 0], plan.bursts[:, 1], np.arange(B))[:, :B]
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
    P = _paint(T, 3, starts, ends, cols) > 0
    roles = np.full(T, ROLE_BACKGROUND, dtype=np.int8)
    roles[P[:, 0]] = ROLE_DISTRACTOR
    roles[P[:, 1]] = ROLE_PHASE
    roles[P[:, 2]] = ROLE_CORE
    return roles


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


# ---------------------------------------------------------------- writing


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


# ---------------------------------------------------------------- statistics


def dataset_stats(ann: Annotations, snippet_seconds: float = 0.64) -> dict:
    """Summary of a ground truth: videos per split, snippets, instances, foreground
    fraction (snippets whose centre lies in a segment), classes per video."""
    snippets = fg = instances = 0
    per_split: dict[str, int] = {}
    n_classes = []
    for v in ann.videos.values():
        T = num_snippets(v.duration, snippet_seconds)
        s0, e0 = _snippet_ranges(v.segments, T, snippet_seconds)
        covered = _paint(T, 1, s0, e0, np.zeros(len(s0), dtype=np.int64))[:, 0] > 0
        snippets += T
        fg += int(covered.sum())
        instances += len(v.labels)
        per_split[v.subset] = per_split.get(v.subset, 0) + 1
        n_classes.append(len(np.unique(v.labels)))
    V = len(ann.videos)
    return {"videos": V, "per_split": per_split, "snippets": snippets, "instances": instances,
            "foreground_fraction": fg / snippets if snippets else 0.0,
            "instances_per_video": instances / V if V else 0.0,
            "classes_per_video": float(np.mean(n_classes)) if n_classes else 0.0,
            "mean_snippets": snippets / V if V else 0.0}
