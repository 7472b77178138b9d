"""Localization post-processing (SPEC §4): per-snippet CAS and attention of one video
in, scored and suppressed detections out.

Steps: attention-weighted CAS -> video-level class scores (top-k mean, softmax,
background dropped) -> classes above the class threshold -> class-agnostic proposals
from every attention threshold (`runtime.proposals`) -> outer-inner contrast score per
kept class -> Gaussian soft-NMS or hard NMS per class (`runtime.nms`) -> optional
top-N per video -> `Detections`. Defaults are the released HAM-Net code's; every
setting lives in `PostprocessConfig`, which a model bundle records. One setting is not
SPEC §4's: `attention_source="cas"` uses the CAS foreground probability instead of the
attention branch, for models whose attention no loss trained (paper Table 1 exp 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from hamnet_deploy.runtime.coerce import positive_finite
from hamnet_deploy.runtime.detections import Detections
from hamnet_deploy.runtime.errors import ConfigError, DataError
from hamnet_deploy.runtime.nms import _hard_nms, _soft_nms
from hamnet_deploy.runtime.proposals import contrast_scores_prefix, find_runs, row_prefix_sums
from hamnet_deploy.runtime.ranking import ranked, trim
from hamnet_deploy.runtime.settings import Settings, option, show

NMS_METHODS = ("soft", "hard", "none")


def thresholds_released() -> tuple[float, ...]:
    """Attention thresholds of the released code: `linspace(0.1, 0.9, 10)`."""
    return tuple(float(x) for x in np.linspace(0.1, 0.9, 10))


def thresholds_paper() -> tuple[float, ...]:
    """Attention thresholds of the paper: 0.1 to 0.9 in steps of 0.05 (17 values)."""
    return tuple(round(0.1 + 0.05 * i, 10) for i in range(17))


@dataclass(frozen=True)
class PostprocessConfig(Settings):
    """Every post-processing setting (SPEC §4). Defaults: the released HAM-Net code on
    THUMOS14; `PostprocessConfig.activitynet()` gives the ActivityNet1.2 recipe."""

    where = "post-processing setting"

    topk_ratio: float = option(10.0, ge=1.0)
    """r of the top-k MIL pooling: k = max(1, floor(T / r)) snippets per class; r >= 1."""
    class_threshold: float = option(0.2, ge=0.0, le=1.0)
    """Classes with video score p_c >= this are localized."""
    action_thresholds: tuple[float, ...] = option(thresholds_released(), nonempty=True)
    """Attention thresholds; snippets with a > theta form proposals, for every theta."""
    outer_ratio: float = option(0.25, ge=0.0)
    """Outer region: floor(i - r*len) .. i-1 before and j+1 .. floor(j + r*len) after."""
    score_weight: float = 0.2
    """Weight of the video score p_c added to the outer-inner contrast."""
    nms: Literal["soft", "hard", "none"] = "soft"
    """"soft" (Gaussian soft-NMS, released code), "hard" (greedy NMS) or "none"."""
    nms_sigma: float = option(0.3, gt=0.0)
    """Gaussian soft-NMS: a score is multiplied by exp(-IoU^2 / sigma)."""
    nms_iou: float = option(0.5, gt=0.0, le=1.0)
    """Hard NMS: detections with IoU >= this to a kept one are removed (unused by soft-NMS,
    as in the released code, which passes 0.7 to its Gaussian soft-NMS and ignores it)."""
    legacy_nms_length: bool = False
    """Released-code compatibility: segment length `end - start + 1` (seconds + 1) in NMS."""
    max_detections: int | None = option(None, ge=1)
    """Keep at most this many detections per video (highest scores); None keeps all."""
    max_per_class: int | None = option(None, ge=1)
    """Keep at most this many detections per class in a video; None keeps all."""
    min_score: float | None = None
    """Drop detections whose final score is below this (`--conf`); None keeps all (the
    released code keeps every detection, down to scores near 0)."""
    snippet_seconds: float = option(0.64, gt=0.0)
    """Seconds per snippet (16 frames at 25 fps): start = i * this, end = (j + 1) * this."""
    attention_source: Literal["attention", "cas"] = "attention"
    """What plays the attention in steps 1-5: "attention" (the model's attention branch,
    SPEC §4) or "cas": the CAS foreground probability `1 - softmax(s_t)[background]` (the
    guide loss's target), for models whose attention branch no loss trained (paper
    Table 1 exp 1, BCL only). The given attention is then ignored."""

    @classmethod
    def thumos14(cls, **overrides: Any) -> PostprocessConfig:
        """The released code's THUMOS14 settings (the defaults)."""
        return cls(**overrides)

    @classmethod
    def activitynet(cls, **overrides: Any) -> PostprocessConfig:
        """The released code's ActivityNet1.2 settings: top-k ratio 20."""
        return cls(**{"topk_ratio": 20.0, **overrides})

    def preset(self, name: str) -> PostprocessConfig:
        """`released`: these settings as they are (what evaluation and the paper use);
        `deploy`: the same scores with hard NMS, at most 5 detections per class and 20 per
        video, none below score 0 - a short list a pipeline can act on."""
        if name not in PRESETS:
            raise ConfigError(f"--preset {name!r}: choose one of {', '.join(PRESETS)}")
        return self.replace(**PRESETS[name]) if PRESETS[name] else self


PRESETS: dict[str, dict[str, Any]] = {
    "released": {},
    "deploy": {"nms": "hard", "nms_iou": 0.5, "max_per_class": 5, "max_detections": 20, "min_score": 0.0},
}
"""Post-processing presets (`hamnet detect --preset`, `Detector(preset=...)`)."""


def _where(video: str) -> str:
    """How an error message names the video ("" for an anonymous one)."""
    return f"video {video!r}: " if video else ""


def _check_inputs(cas: Any, attention: Any, video: str) -> tuple[np.ndarray, np.ndarray]:
    where = _where(video)
    cas = np.asarray(cas)
    att = np.asarray(attention)
    if cas.ndim != 2 or cas.shape[1] < 2:
        raise DataError(f"{where}CAS must have shape (T, C+1) with the background class last, got {cas.shape}")
    if cas.shape[0] < 1:
        raise DataError(f"{where}CAS has no snippets (T = 0); the video needs at least one feature row")
    if att.ndim == 2 and att.shape[1] == 1:
        att = att[:, 0]
    if att.ndim != 1 or att.shape[0] != cas.shape[0]:
        raise DataError(f"{where}attention must have shape (T,) or (T, 1) with T = {cas.shape[0]}, got {att.shape}")
    if cas.dtype.kind not in "fiu" or att.dtype.kind not in "fiu":
        raise DataError(f"{where}CAS and attention must be numeric arrays, got {cas.dtype} and {att.dtype}")
    return cas, att.astype(np.float64, copy=False)


def _check_finite(cas: np.ndarray, att: np.ndarray, video: str) -> None:
    where = _where(video)
    if not np.isfinite(cas).all():
        raise DataError(f"{where}CAS contains NaN or infinity; check the model outputs")
    if not np.isfinite(att).all():
        raise DataError(f"{where}attention contains NaN or infinity; check the model outputs")


def cas_foreground(cas: Any) -> np.ndarray:
    """(T,) foreground probability `1 - softmax(cas_t)[background]` of a (T, C+1) CAS
    (background last), computed stably."""
    cas = np.asarray(cas, dtype=np.float64)
    shifted = cas - cas.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    return 1.0 - shifted[:, -1] / shifted.sum(axis=1)


def _weighted_rows(cas: np.ndarray, att: np.ndarray, config: PostprocessConfig,
                   video: str) -> tuple[np.ndarray, np.ndarray]:
    """The attention the steps use (the given one, or the CAS foreground probability)
    and `cas * attention` in float64 laid out as (C+1, T), one contiguous row per class.
    A NaN or infinity in either input makes the product's sum non-finite, so one sum
    stands for the checks of both inputs (which then say which one is at fault)."""
    if config.attention_source == "cas":
        _check_finite(cas, att, video)
        att = cas_foreground(cas)
    rows = np.empty((cas.shape[1], cas.shape[0]), dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # bad inputs get the error below, not a warning
        np.multiply(cas.T, att, out=rows, dtype=np.float64)
        total = rows.sum()
    if not math.isfinite(total):
        _check_finite(cas, att, video)
        if not np.isfinite(rows).all():
            raise DataError(f"{_where(video)}CAS times attention overflows float64 (values near 1e154 or more); "
                            "check the model outputs")
    return att, rows


def _video_scores(rows: np.ndarray, topk_ratio: float) -> np.ndarray:
    """Softmax of the top-k means of the (C+1, T) rows, background dropped."""
    t = rows.shape[1]
    k = max(1, int(t // topk_ratio))
    pooled = np.add.reduce(np.partition(rows, t - k, axis=1)[:, t - k:], axis=1)
    pooled /= k
    pooled -= pooled.max()
    np.exp(pooled, out=pooled)
    pooled /= pooled.sum()
    return pooled[:-1]


def video_scores(cas: Any, attention: Any, config: PostprocessConfig | None = None) -> np.ndarray:
    """Video-level class probabilities p_c (C,): top-k mean of `cas * attention` over
    time (k = max(1, floor(T / topk_ratio))), softmax over the C+1 columns, background
    dropped. With `attention_source="cas"` the CAS foreground probability replaces the
    attention."""
    config = config or PostprocessConfig()
    cas, att = _check_inputs(cas, attention, "")
    return _video_scores(_weighted_rows(cas, att, config, "")[1], config.topk_ratio)


def _duration(value: Any, video: str) -> float:
    if value is None:
        return math.inf
    out = positive_finite(value)
    if out is None:
        raise DataError(f"video {video!r}: duration {show(value)} must be a positive number of seconds")
    return out


def localize(cas: Any, attention: Any, config: PostprocessConfig | None = None, video: str = "",
             duration: float | None = None, classes: Sequence[str] | None = None) -> Detections:
    """Detections of one video from its CAS (T, C+1; logits, background last) and
    attention (T,) or (T, 1).

    With `config.attention_source="cas"` the CAS foreground probability
    `1 - softmax(cas_t)[background]` replaces `attention` everywhere (weighting,
    video scores, proposals); `attention` must still have the right shape.

    Times are `i * snippet_seconds` to `(j + 1) * snippet_seconds`; with `duration`
    they are clipped to [0, duration] (after NMS, so scores match the released code)
    and detections left empty by the clipping are dropped. `classes` names the C
    classes (default `class_0`, ...). Detections come out per class in class order,
    by descending score within a class; ties keep proposal order (threshold, then time).
    """
    return localize_many([(video, cas, attention, duration)], config, classes)


class _Video(NamedTuple):
    index: int  # position in the input
    attention: np.ndarray  # (T,)
    prefix: np.ndarray  # (K, T + 1) prefix sums of the attention-weighted CAS of the kept classes
    kept: np.ndarray  # (K,) kept class indices
    probs: np.ndarray  # (K,) their video scores


def localize_many(videos: Iterable[Sequence[Any]], config: PostprocessConfig | None = None,
                  classes: Sequence[str] | None = None) -> Detections:
    """`localize` for many videos in one call: items are `(video, cas, attention)` or
    `(video, cas, attention, duration)`. The result equals concatenating `localize` of
    each video (same detections, same order, bit for bit), but proposals, scores and the
    NMS loops of all videos are computed together, so a set of videos costs much less
    than one call per video."""
    return localize_and_score(videos, config, classes)[0]


def localize_and_score(videos: Iterable[Sequence[Any]], config: PostprocessConfig | None = None,
                       classes: Sequence[str] | None = None) -> tuple[Detections, np.ndarray]:
    """`localize_many`, and the video scores p_c of every video (V, C) in input order
    (what `video_scores` gives, bit for bit), which the localization computes anyway:
    for callers that need both (evaluation, `hamnet detect`)."""
    config = config or PostprocessConfig()
    names, ids, durations, todo, probs = _read_videos(videos, config, classes)
    return _localized(names, ids, durations, todo, config), probs


def _localized(names: list[str], ids: list[str], durations: list[float], todo: list[_Video],
               config: PostprocessConfig) -> Detections:
    """Steps 3-6 for the videos with a kept class."""
    if not todo:
        return Detections.empty(names)
    lengths = np.array([v.attention.size for v in todo])
    vid, first, last = _proposals(todo, lengths, config.action_thresholds)
    if vid.size == 0:
        return Detections.empty(names)
    scores, labels = _candidate_scores(todo, lengths, vid, first, last, config)
    start = first * config.snippet_seconds
    end = (last + 1) * config.snippet_seconds
    sets = vid if len(todo) > 1 else None
    if config.nms == "soft":
        scores = _soft_nms(start, end, scores, config.nms_sigma, config.legacy_nms_length, sets)
    elif config.nms == "hard":
        keep = _hard_nms(start, end, scores, config.nms_iou, config.legacy_nms_length, sets)
        scores = np.where(keep, scores, -np.inf)
    part, label, score, col = ranked(scores, labels, vid)
    video_index = np.array([v.index for v in todo], dtype=np.int64).take(part)
    cols = trim(video_index, label, score, start.take(col), end.take(col), np.array(durations), config.min_score,
                config.max_per_class, config.max_detections)
    video_index, label, score, t_start, t_end = cols
    # Every column already has its type and length: no second check of them.
    return Detections(tuple(str(c) for c in names), np.array(ids, dtype=object).take(video_index), label, score,
                      t_start, t_end)


def _read_videos(videos: Iterable[Sequence[Any]], config: PostprocessConfig, classes: Sequence[str] | None):
    """Check every video, compute its video scores and keep the classes above the
    threshold (steps 1-2)."""
    names = None if classes is None else list(classes)
    ids: list[str] = []
    durations: list[float] = []
    todo: list[_Video] = []
    probs_all: list[np.ndarray] = []
    for item in videos:
        if len(item) not in (3, 4):
            raise DataError("localize_many: each item must be (video, cas, attention) or "
                            "(video, cas, attention, duration)")
        video = str(item[0])
        cas, att = _check_inputs(item[1], item[2], video)
        if names is None:
            names = [f"class_{i}" for i in range(cas.shape[1] - 1)]
        elif cas.shape[1] - 1 != len(names):
            raise DataError(f"video {video!r}: CAS has {cas.shape[1] - 1} classes (+ background) "
                            f"but {len(names)} class names were given")
        durations.append(_duration(item[3] if len(item) == 4 else None, video))
        att, rows = _weighted_rows(cas, att, config, video)
        probs = _video_scores(rows, config.topk_ratio)
        probs_all.append(probs)
        kept = (probs >= config.class_threshold).nonzero()[0]
        if kept.size:
            todo.append(_Video(len(ids), att, row_prefix_sums(rows.take(kept, axis=0)), kept, probs.take(kept)))
        ids.append(video)
    if names is None:
        raise DataError("localize_many: no videos given and no class names for an empty result")
    probs = np.array(probs_all) if probs_all else np.zeros((0, len(names)))
    return names, ids, durations, todo, probs


def _proposals(todo: list[_Video], lengths: np.ndarray,
               thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of every video (step 3) as (video slot, first, last snippet), grouped by
    video, each video's runs in (threshold, time) order. The attentions are laid end to
    end with one -inf between videos, so no run crosses into the next video."""
    if len(todo) == 1:
        runs = find_runs(todo[0].attention, thresholds)
        return np.zeros(runs.start.size, dtype=np.int64), runs.start, runs.end
    bases = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
    joined = np.full(int(lengths.sum() + lengths.size), -np.inf)
    for b, v in zip(bases.tolist(), todo, strict=True):
        joined[b:b + v.attention.size] = v.attention
    runs = find_runs(joined, thresholds)
    vid = np.searchsorted(bases, runs.start, side="right") - 1
    by_video = np.argsort(vid, kind="stable")
    vid = vid.take(by_video)
    return vid, runs.start.take(by_video) - bases.take(vid), runs.end.take(by_video) - bases.take(vid)


def _candidate_scores(todo: list[_Video], lengths: np.ndarray, vid: np.ndarray, first: np.ndarray,
                      last: np.ndarray, config: PostprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Scores (K, n) of every proposal for every kept-class slot (step 4) and the class
    index of each (slot, video) (K, V). A slot past a video's kept classes is -inf."""
    if len(todo) == 1:
        v = todo[0]
        prefix, labels, probs, present = v.prefix.reshape(-1), v.kept[:, None], v.probs[:, None], None
        offsets = (np.arange(v.kept.size) * (v.attention.size + 1))[:, None]  # (K, 1): broadcast over proposals
    else:
        k_max = max(v.kept.size for v in todo)
        kept = np.array([v.kept.size for v in todo])
        slot = np.arange(k_max)[:, None]
        present = slot < kept  # (K, V)
        labels = np.zeros((k_max, len(todo)), dtype=np.int64)
        probs = np.zeros((k_max, len(todo)))
        labels.T[present.T] = np.concatenate([v.kept for v in todo])  # video by video, slots in order
        probs.T[present.T] = np.concatenate([v.probs for v in todo])
        prefix = np.concatenate([v.prefix.reshape(-1) for v in todo])
        bases = np.concatenate(([0], np.cumsum(kept * (lengths + 1))[:-1]))
        # An absent slot reads the video's first row; its scores become -inf below.
        row_start = bases + np.minimum(slot, kept - 1) * (lengths + 1)  # (K, V)
        offsets = row_start.take(vid, axis=1)
    scores = contrast_scores_prefix(prefix, offsets, first, last, lengths.take(vid), config.outer_ratio)
    scores += config.score_weight * probs.take(vid, axis=1)
    if present is not None and k_max > 1:
        scores[~present.take(vid, axis=1)] = -np.inf
    return scores, labels
