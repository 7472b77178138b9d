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

from hamnet_deploy.training.synth.config import (
    ROLE_BACKGROUND,
    ROLE_CORE,
    ROLE_DISTRACTOR,
    ROLE_PHASE,
    SYNTH_VERSION,
    TEST_SUBSET,
    TRAIN_SUBSET,
    WTALC_NAME,
    SynthConfig,
)
from hamnet_deploy.training.synth.features import snippet_roles
from hamnet_deploy.training.synth.timelines import dataset_stats, make_timelines, num_snippets
from hamnet_deploy.training.synth.writer import generate_dataset, load_structure

__all__ = [
    "SynthConfig", "generate_dataset", "make_timelines", "dataset_stats", "snippet_roles",
    "load_structure", "num_snippets", "WTALC_NAME", "SYNTH_VERSION", "TRAIN_SUBSET", "TEST_SUBSET",
    "ROLE_BACKGROUND", "ROLE_PHASE", "ROLE_CORE", "ROLE_DISTRACTOR",
]
