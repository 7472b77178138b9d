"""Settings of the synthetic dataset (`SynthConfig`) and the names of what it writes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hamnet_deploy.runtime.settings import Invalid, Settings, option

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


_STRENGTH = {"ge": 0.0}


@dataclass
class SynthConfig(Settings):
    """Settings of the synthetic dataset. Defaults give a THUMOS14-sized dataset
    (412 videos, 2048-D I3D-like features, 20 classes, ~1.1 GB)."""

    where = "synth setting"

    # --- size and identity
    videos: int = option(412, ge=0)  # number of videos (with `timelines`: 0 means all; see below)
    dim: int = option(2048, ge=2)  # D; even: first half stands for RGB, second half for flow
    num_classes: int = 20  # C (ignored with `timelines`: classes come from the file)
    seed: int = option(0, ge=0)  # every random draw derives from it
    test_fraction: float = option(212 / 412, gt=0.0, lt=1.0)  # share of "test" videos (THUMOS14: 212 of 412)
    snippet_seconds: float = option(0.64, gt=0.0)  # 16 frames at 25 fps
    fps: float = option(25.0, gt=0.0)  # feature frame rate written to annotations.json
    timelines: str | None = None  # annotation JSON whose real timelines to use instead

    # --- parametric timelines
    duration_median_s: float = option(187.0, gt=0.0)  # log-normal video duration ...
    duration_sigma: float = option(0.55, **_STRENGTH)  # ... its log-std ...
    duration_min_s: float = 60.0  # ... clipped to [min, max]: mean about 213 s (T about 333)
    duration_max_s: float = 600.0
    foreground_min: float = 0.2  # per-video foreground fraction, uniform in [min, max]
    foreground_max: float = option(0.4, lt=1.0)
    instance_median_s: float = option(3.5, gt=0.0)  # log-normal instance length ...
    instance_sigma: float = option(0.6, **_STRENGTH)
    instance_min_s: float = 1.0  # ... clipped to [min, max]
    instance_max_s: float = 10.0
    min_gap_s: float = option(1.0, **_STRENGTH)  # background between consecutive instances, at least
    class_count_probs: tuple[float, ...] = option((0.82, 0.14, 0.04), ge=0.0, nonempty=True)
    """P(1, 2, 3 classes in a video)."""

    # --- instance structure
    core_fraction_min: float = 0.4  # core length / instance length, uniform in [min, max]
    core_fraction_max: float = option(0.55, le=1.0)
    core_position_min: float = option(0.6, ge=0.0, le=1.0)  # where the core sits in the instance, uniform
    core_position_max: float = option(0.9, ge=0.0, le=1.0)  # in [min, max]: 0 = at its start, 1 = at its end

    # --- feature strengths (per-dimension amplitudes; see the package docstring)
    noise_strength: float = option(1.0, **_STRENGTH)  # per-snippet noise std per dimension, after smoothing
    scene_strength: float = option(0.15, **_STRENGTH)  # per-video scene vector (independent of the class)
    core_strength: float = option(0.5, **_STRENGTH)  # class prototype P_c in the core
    phase_class_strength: float = option(0.3, **_STRENGTH)  # class-specific direction in the phases
    phase_core_overlap: float = option(0.25, ge=0.0, le=1.0)  # weight of P_c in that direction (rest: Q_c)
    phase_group_strength: float = option(0.2, **_STRENGTH)  # direction shared by a group of classes
    class_group_size: int = option(4, ge=1)  # classes per group (class c is in group c // size)
    motion_strength: float = option(0.3, **_STRENGTH)  # class-agnostic motion (flow half) over instances
    distractors_per_minute: float = option(2.0, **_STRENGTH)  # motion bursts per minute of background
    distractor_min_s: float = 1.0  # burst length, uniform in [min, max] seconds
    distractor_max_s: float = 4.0
    distractor_motion_strength: float = option(0.3, **_STRENGTH)  # the motion direction in a burst
    distractor_random_strength: float = option(0.3, **_STRENGTH)  # plus a random flow direction of its own
    distractor_group_strength: float = option(0.2, **_STRENGTH)  # plus the phase group of one video class
    context_strength: float = option(0.0, **_STRENGTH)  # class direction over a whole video of that class
    smoothing: tuple[float, ...] = (0.15, 0.7, 0.15)  # temporal kernel (odd length, normalised)

    def check(self) -> None:
        if self.dim % 2:
            raise Invalid("dim", self.dim, "the feature dimension must be an even number >= 2 (the first "
                                           "half stands for RGB, the second for flow)")
        if (self.timelines is None or self.videos) and self.videos < 2:
            raise Invalid("videos", self.videos, "need at least 2 videos (one per split)")
        if self.timelines is None and self.num_classes < 1:
            raise Invalid("num_classes", self.num_classes, "need at least 1 class")
        for lo, hi in (("duration_min_s", "duration_max_s"), ("foreground_min", "foreground_max"),
                       ("instance_min_s", "instance_max_s"), ("core_fraction_min", "core_fraction_max"),
                       ("distractor_min_s", "distractor_max_s"), ("core_position_min", "core_position_max")):
            a, b = getattr(self, lo), getattr(self, hi)
            if not (a <= b and (a > 0 or lo == "core_position_min")):
                raise Invalid(lo, a, f"needs {'0 <= ' if lo == 'core_position_min' else '0 < '}{lo} <= "
                                     f"{hi} ({b})")
        if self.duration_min_s < 2 * self.instance_max_s:
            raise Invalid("duration_min_s", self.duration_min_s,
                          f"must be at least twice instance_max_s ({self.instance_max_s})")
        if sum(self.class_count_probs) <= 0:
            raise Invalid("class_count_probs", self.class_count_probs, "needs a positive sum")
        kernel = np.asarray(self.smoothing, dtype=np.float64)
        if kernel.size % 2 == 0 or kernel.sum() <= 0:
            raise Invalid("smoothing", self.smoothing, "need an odd number of weights with a positive sum")
