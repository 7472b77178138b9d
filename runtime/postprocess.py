"""Localization post-processing (SPEC §4): per-snippet CAS and attention of one video
in, scored and suppressed detections out.

Steps: attention-weighted CAS -> video-level class scores (top-k mean, softmax,
background dropped) -> classes above the class threshold -> class-agnostic proposals
from every attention threshold (`runtime.proposals`) -> outer-inner contrast score per
kept class -> Gaussian soft-NMS or hard NMS per class (`runtime.nms`) -> optional
top-N per video -> `Detections`. Defaults are the released HAM-Net code's; every
setting lives in `PostprocessConfig`, which a model bundle records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from runtime.detections import Detections
from runtime.errors import ConfigError, DataError
from runtime.nms import _hard_nms, _soft_nms
from runtime.proposals import contrast_scores, find_runs

NMS_METHODS = ("soft", "hard", "none")


def thresholds_released() -> tuple[float, ...]:
    """Attention thresholds of the released code: `linspace(0.1, 0.9, 10)`."""
    return tuple(float(x) for x in np.linspace(0.1, 0.9, 10))


def thresholds_paper() -> tuple[float, ...]:
    """Attention thresholds of the paper: 0.1 to 0.9 in steps of 0.05 (17 values)."""
    return tuple(round(0.1 + 0.05 * i, 10) for i in range(17))


@dataclass(frozen=True)
class PostprocessConfig:
    """Every post-processing setting (SPEC §4). Defaults: the released HAM-Net code on
    THUMOS14; `PostprocessConfig.activitynet()` gives the ActivityNet1.2 recipe."""

    topk_ratio: float = 10.0
    """r of the top-k MIL pooling: k = max(1, floor(T / r)) snippets per class."""
    class_threshold: float = 0.2
    """Classes with video score p_c >= this are localized."""
    action_thresholds: tuple[float, ...] = thresholds_released()
    """Attention thresholds; snippets with a > theta form proposals, for every theta."""
    outer_ratio: float = 0.25
    """Outer region: floor(i - r*len) .. i-1 before and j+1 .. floor(j + r*len) after."""
    score_weight: float = 0.2
    """Weight of the video score p_c added to the outer-inner contrast."""
    nms: str = "soft"
    """"soft" (Gaussian soft-NMS, released code), "hard" (greedy NMS) or "none"."""
    nms_sigma: float = 0.3
    """Gaussian soft-NMS: a score is multiplied by exp(-IoU^2 / sigma)."""
    nms_iou: float = 0.5
    """Hard NMS: detections with IoU >= this to a kept one are removed (unused by soft-NMS,
    as in the released code, which passes 0.7 to its Gaussian soft-NMS and ignores it)."""
    legacy_nms_length: bool = False
    """Released-code compatibility: segment length `end - start + 1` (seconds + 1) in NMS."""
    max_detections: int | None = None
    """Keep at most this many detections per video (highest scores); None keeps all."""
    snippet_seconds: float = 0.64
    """Seconds per snippet (16 frames at 25 fps): start = i * this, end = (j + 1) * this."""

    def __post_init__(self) -> None:
        self._validate()

    @classmethod
    def thumos14(cls, **overrides: Any) -> PostprocessConfig:
        """The released code's THUMOS14 settings (the defaults)."""
        return cls(**overrides)

    @classmethod
    def activitynet(cls, **overrides: Any) -> PostprocessConfig:
        """The released code's ActivityNet1.2 settings: top-k ratio 20."""
        return cls(**{"topk_ratio": 20.0, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the form a bundle manifest records)."""
        out = asdict(self)
        out["action_thresholds"] = list(self.action_thresholds)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PostprocessConfig:
        """Inverse of `to_dict`; missing keys take their defaults. Unknown keys or bad
        values raise ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"post-processing settings must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown post-processing setting(s) {', '.join(map(repr, unknown))}; "
                              f"known settings: {', '.join(sorted(known))}")
        try:
            return cls(**dict(data))
        except TypeError as exc:  # pragma: no cover - unknown keys are caught above
            raise ConfigError(f"bad post-processing settings: {exc}") from None

    def _validate(self) -> None:
        def number(name: str, *, positive: bool = False, low: float | None = None,
                   high: float | None = None) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ConfigError(f"post-processing setting {name}={value!r} must be a number")
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"post-processing setting {name}={value} must be finite")
            if positive and value <= 0:
                raise ConfigError(f"post-processing setting {name}={value} must be > 0")
            if low is not None and value < low or high is not None and value > high:
                raise ConfigError(f"post-processing setting {name}={value} must lie in [{low}, {high}]")
            object.__setattr__(self, name, value)
            return value

        number("topk_ratio", positive=True)
        number("class_threshold", low=0.0, high=1.0)
        number("outer_ratio", low=0.0, high=math.inf)
        number("score_weight")
        number("nms_sigma", positive=True)
        number("nms_iou", positive=True, high=1.0)
        number("snippet_seconds", positive=True)

        thr = self.action_thresholds
        if isinstance(thr, (str, bytes)) or not isinstance(thr, (Sequence, np.ndarray)):
            raise ConfigError(f"post-processing setting action_thresholds={thr!r} must be a list of numbers")
        try:
            values = tuple(float(x) for x in thr if not isinstance(x, (bool, str, bytes)))
        except (TypeError, ValueError):
            raise ConfigError(f"post-processing setting action_thresholds={list(thr)!r} must be a list of numbers") from None
        if len(values) != len(thr) or not values:
            raise ConfigError(f"post-processing setting action_thresholds={list(thr)!r} must be a non-empty list of numbers")
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(f"post-processing setting action_thresholds={list(values)} must be finite")
        object.__setattr__(self, "action_thresholds", values)

        if self.nms not in NMS_METHODS:
            raise ConfigError(f"post-processing setting nms={self.nms!r} must be one of {', '.join(NMS_METHODS)}")
        if not isinstance(self.legacy_nms_length, (bool, np.bool_)):
            raise ConfigError(f"post-processing setting legacy_nms_length={self.legacy_nms_length!r} must be true or false")
        object.__setattr__(self, "legacy_nms_length", bool(self.legacy_nms_length))
        top = self.max_detections
        if top is not None:
            if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
                raise ConfigError(f"post-processing setting max_detections={top!r} must be a positive integer or null")
            object.__setattr__(self, "max_detections", int(top))


def _check_inputs(cas: Any, attention: Any, video: str) -> tuple[np.ndarray, np.ndarray]:
    where = f"video {video!r}: " if video else ""
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
    if not (np.issubdtype(cas.dtype, np.number) and np.issubdtype(att.dtype, np.number)):
        raise DataError(f"{where}CAS and attention must be numeric arrays")
    cas = cas.astype(np.float64, copy=False)
    att = att.astype(np.float64, copy=False)
    if not np.isfinite(cas).all():
        raise DataError(f"{where}CAS contains NaN or infinity; check the model outputs")
    if not np.isfinite(att).all():
        raise DataError(f"{where}attention contains NaN or infinity; check the model outputs")
    return cas, att


def _video_scores(weighted: np.ndarray, topk_ratio: float) -> np.ndarray:
    t = weighted.shape[0]
    k = max(1, int(t // topk_ratio))
    # Partition along contiguous rows (one per class): faster than along axis 0.
    top = np.partition(np.ascontiguousarray(weighted.T), t - k, axis=1)[:, t - k:]
    pooled = top.mean(axis=1)
    pooled = np.exp(pooled - pooled.max())
    return (pooled / pooled.sum())[:-1]


def video_scores(cas: Any, attention: Any, config: PostprocessConfig | None = None) -> np.ndarray:
    """Video-level class probabilities p_c (C,): top-k mean of `cas * attention` over
    time, softmax over the C+1 columns, background dropped."""
    config = config or PostprocessConfig()
    cas, att = _check_inputs(cas, attention, "")
    return _video_scores(cas * att[:, None], config.topk_ratio)


def localize(cas: Any, attention: Any, config: PostprocessConfig | None = None, video: str = "",
             duration: float | None = None, classes: Sequence[str] | None = None) -> Detections:
    """Detections of one video from its CAS (T, C+1; logits, background last) and
    attention (T,) or (T, 1).

    Times are `i * snippet_seconds` to `(j + 1) * snippet_seconds`; with `duration`
    they are clipped to [0, duration] (after NMS, so scores match the released code)
    and detections left empty by the clipping are dropped. `classes` names the C
    classes (default `class_0`, ...). Detections come out per class in class order,
    by descending score within a class (by score overall with `max_detections`).
    """
    config = config or PostprocessConfig()
    cas, att = _check_inputs(cas, attention, video)
    num_classes = cas.shape[1] - 1
    names = [f"class_{i}" for i in range(num_classes)] if classes is None else list(classes)
    if len(names) != num_classes:
        raise DataError(f"video {video!r}: CAS has {num_classes} classes (+ background) but {len(names)} class names were given")
    if duration is not None:
        duration = float(duration)
        if not math.isfinite(duration) or duration <= 0:
            raise DataError(f"video {video!r}: duration {duration} must be a positive number of seconds")

    weighted = cas * att[:, None]
    scores = _video_scores(weighted, config.topk_ratio)
    kept = np.flatnonzero(scores >= config.class_threshold)
    runs = find_runs(att, np.asarray(config.action_thresholds))
    if kept.size == 0 or runs.start.size == 0:
        return Detections.empty(names)

    # (K, n): one row of candidate scores per kept class over the shared proposals.
    cand = contrast_scores(weighted[:, kept], runs.start, runs.end, config.outer_ratio).T
    cand += config.score_weight * scores[kept][:, None]
    t_start = runs.start * config.snippet_seconds
    t_end = (runs.end + 1) * config.snippet_seconds

    keep = None
    if config.nms == "soft":
        cand = _soft_nms(t_start, t_end, cand, config.nms_sigma, config.legacy_nms_length)
    elif config.nms == "hard":
        keep = _hard_nms(t_start, t_end, cand, config.nms_iou, config.legacy_nms_length)

    # Per class, descending score; ties keep proposal order (threshold, then time).
    order = np.argsort(-cand, axis=1, kind="stable")
    score = np.take_along_axis(cand, order, axis=1)
    label = np.repeat(kept, order.shape[1])
    idx = order.reshape(-1)
    score = score.reshape(-1)
    if keep is not None:
        kept_rows = np.take_along_axis(keep, order, axis=1).reshape(-1)
        label, score, idx = label[kept_rows], score[kept_rows], idx[kept_rows]
    start, end = t_start.take(idx), t_end.take(idx)
    if duration is not None:
        np.clip(start, 0.0, duration, out=start)
        np.clip(end, 0.0, duration, out=end)
        ok = end > start
        if not ok.all():
            label, score, start, end = label[ok], score[ok], start[ok], end[ok]
    if config.max_detections is not None and score.size > config.max_detections:
        top = np.argsort(-score, kind="stable")[:config.max_detections]
        label, score, start, end = label[top], score[top], start[top], end[top]
    return Detections.from_arrays(names, video, label, score, start, end)
