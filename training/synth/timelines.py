"""Timelines of the synthetic dataset: parametric THUMOS-like ones, or the real videos,
instances, classes and splits of an annotation file (`SynthConfig.timelines`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hamnet_deploy.runtime.annotations import Annotations, VideoAnnotation, load_annotation_json
from hamnet_deploy.runtime.errors import ConfigError, DataError
from hamnet_deploy.training.synth.config import (
    _STREAM_SUBSET,
    _STREAM_TIMELINE,
    TEST_SUBSET,
    TRAIN_SUBSET,
    SynthConfig,
)
from hamnet_deploy.training.synth.features import num_snippets, paint, snippet_ranges


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


def dataset_stats(ann: Annotations, snippet_seconds: float = 0.64) -> dict:
    """Summary of a ground truth: videos per split, snippets, instances, foreground
    fraction (snippets whose centre lies in a segment), classes per video."""
    snippets = fg = instances = 0
    per_split: dict[str, int] = {}
    n_classes = []
    for v in ann.videos.values():
        T = num_snippets(v.duration, snippet_seconds)
        s0, e0 = snippet_ranges(v.segments, T, snippet_seconds)
        covered = paint(T, 1, s0, e0, np.zeros(len(s0), dtype=np.int64))[:, 0] > 0
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
