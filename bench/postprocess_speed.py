"""Localization post-processing speed: the vectorised runtime against a plain-Python
version written here the way research code does it (loops over thresholds, classes and
proposals with NumPy inside, as the released HAM-Net code; a soft-NMS loop that picks
one detection at a time). All must give the same detections.

Inputs are THUMOS-like: the real THUMOS14 test timelines from ../shared (lengths T from
20 to 1,500 snippets, the videos' own actions; parametric timelines when ../shared is
absent), 20 classes, the video's ground-truth classes plus sometimes one false class
(1-3 kept classes), 10 attention thresholds, attention with smooth edges and noise.

Two runtime columns: `localize` called once per video, and `localize_many` called once
for all videos (same detections; the NMS loops of all videos run side by side). Times
are per video, totals over each band of lengths. The last lines give the share of
time spent in NMS and the speedup bound if NMS cost nothing.

    python bench/postprocess_speed.py [--videos N] [--repeat R] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hamnet_deploy.runtime import postprocess  # noqa: E402
from hamnet_deploy.runtime.detections import Detections  # noqa: E402
from hamnet_deploy.runtime.postprocess import PostprocessConfig, localize, localize_many  # noqa: E402

TARGET_SINGLE = 50.0  # issue 15: one video through `localize`
TARGET_BATCHED = 100.0  # a batch through `localize_many`
TIMELINES = Path(__file__).resolve().parents[2] / "shared" / "data" / "thumos14-reduced" / "thumos14-reduced.json"
BANDS = ((20, 100), (100, 400), (400, 1501))
SNIPPET = 0.64


def make_video(rng: np.random.Generator, t: int = 339, num_classes: int = 20, kept: tuple[int, ...] = (3, 11),
               actions: int = 9, foreground: float = 0.31) -> tuple[np.ndarray, np.ndarray]:
    """CAS (T, C+1) float32 and attention (T,) float32 of one THUMOS-like video with
    `actions` actions covering about `foreground` of it."""
    lengths = rng.dirichlet(np.ones(actions)) * foreground * t
    gaps = rng.dirichlet(np.ones(actions + 1)) * (1 - foreground) * t
    mask = np.zeros(t, dtype=bool)
    pos = 0.0
    for gap, length in zip(gaps, lengths, strict=False):
        pos += gap
        mask[int(pos):int(pos + max(length, 1.0))] = True
        pos += length
    return video_from_mask(rng, mask, num_classes, kept)


def video_from_mask(rng: np.random.Generator, mask: np.ndarray, num_classes: int = 20,
                    kept: tuple[int, ...] = (3, 11)) -> tuple[np.ndarray, np.ndarray]:
    """CAS and attention of a video whose actions are the True snippets of `mask`."""
    t = mask.size
    noise = np.convolve(rng.normal(0.0, 1.0, t + 4), np.ones(5) / np.sqrt(5), mode="valid")
    edges = np.convolve(mask * 2.0 - 1.0, np.ones(5) / 5, mode="same")
    attention = 1.0 / (1.0 + np.exp(-(3.5 * edges + 1.2 * noise)))
    cas = rng.normal(-1.0, 0.5, (t, num_classes + 1))
    for c in kept:
        cas[:, c] += 3.0 * mask + rng.normal(0.0, 0.3, t)
    cas[:, -1] += 2.0 * ~mask
    return cas.astype(np.float32), attention.astype(np.float32)


# --------------------------------------------------------------------------------------
# Plain-Python reference, research-code style. Written independently of runtime/.
# --------------------------------------------------------------------------------------

def reference_localize(cas: np.ndarray, attention: np.ndarray, cfg: PostprocessConfig) -> list[tuple]:
    """[(label, score, t_start, t_end)] of one video, by loops."""
    cas = np.asarray(cas, dtype=np.float64)
    att = np.asarray(attention, dtype=np.float64).reshape(-1)
    t = len(att)
    wcas = cas * att[:, None]
    k = max(1, int(t // cfg.topk_ratio))
    pooled = np.sort(wcas, axis=0)[::-1][:k].mean(axis=0)
    expd = np.exp(pooled - pooled.max())
    probs = (expd / expd.sum())[:-1]
    predicted = [c for c in range(len(probs)) if probs[c] >= cfg.class_threshold]
    lam, sec = cfg.outer_ratio, cfg.snippet_seconds

    candidates: dict[int, list[list[float]]] = {c: [] for c in predicted}
    for theta in cfg.action_thresholds:
        for c in predicted:
            above = np.where(att > theta)[0]
            if len(above) == 0:
                continue
            for run in np.split(above, np.where(np.diff(above) != 1)[0] + 1):
                first, last, length = int(run[0]), int(run[-1]), len(run)
                inner = np.mean(wcas[run, c])
                lo = max(0, int(np.floor(first - lam * length)))
                hi = min(t - 1, int(np.floor(last + lam * length)))
                outside = list(range(lo, first)) + list(range(last + 1, hi + 1))
                outer = np.mean(wcas[outside, c]) if outside else 0.0
                score = inner - outer + cfg.score_weight * probs[c]
                candidates[c].append([score, first * sec, (last + 1) * sec])

    off = 1.0 if cfg.legacy_nms_length else 0.0
    out = []
    for c in predicted:
        dets = np.array(candidates[c], dtype=np.float64).reshape(-1, 3)
        if cfg.nms == "soft":
            while len(dets):
                m = int(np.argmax(dets[:, 0]))
                best = dets[m]
                out.append((c, best[0], best[1], best[2]))
                dets = np.delete(dets, m, axis=0)
                if not len(dets):
                    break
                inter = np.maximum(np.minimum(best[2], dets[:, 2]) - np.maximum(best[1], dets[:, 1]) + off, 0.0)
                union = (best[2] - best[1] + off) + (dets[:, 2] - dets[:, 1] + off) - inter
                iou = inter / union
                dets[:, 0] *= np.exp(-(iou * iou) / cfg.nms_sigma)
        elif cfg.nms == "hard":
            order = np.argsort(-dets[:, 0], kind="stable")
            while len(order):
                best = dets[order[0]]
                out.append((c, best[0], best[1], best[2]))
                rest = dets[order[1:]]
                inter = np.maximum(np.minimum(best[2], rest[:, 2]) - np.maximum(best[1], rest[:, 1]) + off, 0.0)
                union = (best[2] - best[1] + off) + (rest[:, 2] - rest[:, 1] + off) - inter
                order = order[1:][inter / union < cfg.nms_iou]
        else:
            out.extend((c, d[0], d[1], d[2]) for d in dets)
    return out


def _canonical(rows) -> np.ndarray:
    arr = np.array([(float(c), float(s), float(a), float(b)) for c, s, a, b in rows]).reshape(-1, 4)
    return arr[np.lexsort((arr[:, 3], arr[:, 2], -arr[:, 1], arr[:, 0]))]


def same_detections(ref: list[tuple], dets) -> bool:
    a = _canonical(ref)
    b = _canonical(zip(dets.label, dets.score, dets.t_start, dets.t_end, strict=True))
    return a.shape == b.shape and bool(np.all(a[:, 0] == b[:, 0])) and bool(np.abs(a - b).max(initial=0.0) <= 1e-6)


def thumos_like(rng: np.random.Generator, count: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """`count` videos with THUMOS14 test timelines (cycled), T in [20, 1500]; where
    ../shared is absent, lengths drawn log-uniformly and about one action per 38 snippets."""
    masks = []
    if TIMELINES.is_file():
        database = json.loads(TIMELINES.read_text())["database"]
        for entry in database.values():
            t = int(entry["duration"] / SNIPPET)
            if entry["subset"] != "test" or not BANDS[0][0] <= t < BANDS[-1][1]:
                continue
            mask = np.zeros(t, dtype=bool)
            for a in entry["annotations"]:
                mask[int(a["segment"][0] / SNIPPET):int(a["segment"][1] / SNIPPET) + 1] = True
            masks.append((mask, len({a["label"] for a in entry["annotations"]})))
        source = f"THUMOS14 test timelines ({len(masks)} videos with 20 <= T <= 1500, cycled)"
    else:
        source = "parametric timelines (../shared absent)"
    videos = []
    for i in range(count):
        if masks:
            mask, classes = masks[i % len(masks)]
        else:
            t = int(round(np.exp(rng.uniform(np.log(20), np.log(1500)))))
            mask, classes = None, int(rng.integers(1, 3))
        kept_count = min(3, classes + int(rng.random() < 0.5))
        kept = tuple(int(c) for c in rng.choice(20, kept_count, replace=False))
        if mask is None:
            videos.append(make_video(rng, t=t, kept=kept, actions=max(1, round(t / 38))))
        else:
            videos.append(video_from_mask(rng, mask, kept=kept))
    return videos, source


def _best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _items(videos) -> list[tuple]:
    """The (video, cas, attention) items `localize_many` takes."""
    return [(f"v{i}", c, a) for i, (c, a) in enumerate(videos)]


def _times(videos, cfg: PostprocessConfig, repeat: int) -> tuple[float, float, float]:
    """Seconds for all `videos` by the loops, by one `localize` per video, by one
    `localize_many`; each the best of `repeat`, the three interleaved."""
    items = _items(videos)
    best = [float("inf")] * 3
    for _ in range(repeat):
        for j, fn in enumerate((lambda: [reference_localize(c, a, cfg) for c, a in videos],
                                lambda: [localize(c, a, cfg) for c, a in videos],
                                lambda: localize_many(items, cfg))):
            best[j] = min(best[j], _best_time(fn, 1))
    return best[0], best[1], best[2]


def _nms_share(videos, cfg: PostprocessConfig, repeat: int) -> tuple[float, float]:
    """Fraction of `localize` (one call per video) and of `localize_many` time spent in
    soft-NMS, timed by wrapping the runtime's `_soft_nms` (the best of `repeat` passes)."""
    inner = postprocess._soft_nms
    spent = [0.0]

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    items = _items(videos)
    shares = []
    postprocess._soft_nms = timed
    try:
        for fn in (lambda: [localize(c, a, cfg) for c, a in videos], lambda: localize_many(items, cfg)):
            best = (float("inf"), 0.0)
            for _ in range(repeat):
                spent[0] = 0.0
                best = min(best, (_best_time(fn, 1), spent[0]))
            shares.append(best[1] / best[0])
    finally:
        postprocess._soft_nms = inner
    return shares[0], shares[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=207, help="videos (THUMOS14 test timelines are cycled)")
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats (best is reported)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    videos, source = thumos_like(rng, args.videos)
    items = _items(videos)
    settings = [
        ("soft-NMS (default)", PostprocessConfig()),
        ("soft-NMS, legacy length", PostprocessConfig(legacy_nms_length=True)),
        ("hard NMS 0.5", PostprocessConfig(nms="hard")),
    ]
    print(f"post-processing speed: {len(videos)} videos, {source}; C = 20, 1-3 kept classes, "
          f"10 thresholds; best of {args.repeat}; {os.cpu_count()} CPUs, NumPy {np.__version__}")
    header = (f"{'setting':<24} {'T':>10} {'videos':>6} {'dets/video':>10} {'loops':>9} {'localize':>9} "
              f"{'speedup':>8} {'localize_many':>14} {'speedup':>8} {'identical':>9}")
    print(header)
    print(f"{'':<24} {'':>10} {'':>6} {'':>10} {'ms/video':>9} {'ms/video':>9} {'':>8} {'ms/video':>14}")
    print("-" * len(header))
    identical_all = True
    overall = {}
    for name, cfg in settings:
        identical = True
        counts = []
        singles = []
        for (vid, cas, att) in items:
            dets = localize(cas, att, cfg, video=vid)
            identical &= same_detections(reference_localize(cas, att, cfg), dets)
            counts.append(len(dets))
            singles.append(dets)
        many = localize_many(items, cfg)
        joined = Detections.concatenate(singles, many.classes)
        identical &= all(np.array_equal(getattr(many, f), getattr(joined, f))
                         for f in ("video", "label", "score", "t_start", "t_end"))
        identical_all &= identical
        lengths = np.array([len(a) for _, a in videos])
        bands = [(f"{lo}-{hi - 1}", (lengths >= lo) & (lengths < hi)) for lo, hi in BANDS]
        for band, chosen in [*bands, ("all", np.ones(len(videos), dtype=bool))]:
            picked = [v for v, keep in zip(videos, chosen, strict=True) if keep]
            if not picked:
                continue
            ref_s, one_s, many_s = _times(picked, cfg, args.repeat)
            ref_ms, one_ms, many_ms = (x / len(picked) * 1e3 for x in (ref_s, one_s, many_s))
            dets = float(np.mean(np.array(counts)[chosen]))
            print(f"{name if band == bands[0][0] else '':<24} {band:>10} {len(picked):>6} {dets:>10.1f} "
                  f"{ref_ms:>9.2f} {one_ms:>9.3f} {ref_ms / one_ms:>7.1f}x {many_ms:>14.3f} "
                  f"{ref_ms / many_ms:>7.1f}x {'yes' if identical else 'NO':>9}")
            if band == "all":
                overall[name] = (ref_ms / one_ms, ref_ms / many_ms)
    single, batched = overall[settings[0][0]]
    one_nms, many_nms = _nms_share(videos, settings[0][1], args.repeat)
    print(f"where the time goes (default setting, all videos): soft-NMS (`runtime.nms`: groups, weights, loop) "
          f"is {one_nms:.0%} of `localize` and {many_nms:.0%} of `localize_many`; with an NMS that cost nothing "
          f"the speedups would be at most "
          f"{single / (1 - one_nms):.1f}x and {batched / (1 - many_nms):.1f}x")
    print(f"targets (default setting, all videos): identical detections {'PASS' if identical_all else 'FAIL'}; "
          f"localize >= {TARGET_SINGLE:.0f}x: {single:.1f}x {'PASS' if single >= TARGET_SINGLE else 'FAIL'}; "
          f"localize_many >= {TARGET_BATCHED:.0f}x: {batched:.1f}x {'PASS' if batched >= TARGET_BATCHED else 'FAIL'}")
    return 0 if identical_all else 1


if __name__ == "__main__":
    sys.exit(main())
