"""Localization post-processing speed: the vectorised runtime against a plain-Python
version written here the way research code does it (loops over thresholds, classes and
proposals with NumPy inside, as the released HAM-Net code; a soft-NMS loop that picks
one detection at a time). All must give the same detections. Inputs are THUMOS-like:
T = 339 snippets, 20 classes, 2 classes above the class threshold, 10 attention
thresholds, attention with runs (about 31 % foreground, 9 actions, smooth edges, noise).

Two runtime columns: `localize` called once per video, and `localize_many` called once
for all videos (same detections; the NMS loops of all videos run side by side). Times
are per video.

    python bench/postprocess_speed.py [--videos N] [--repeat R] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hamnet_deploy.runtime.detections import Detections  # noqa: E402
from hamnet_deploy.runtime.postprocess import PostprocessConfig, localize, localize_many  # noqa: E402

TARGET_SPEEDUP = 30.0


def make_video(rng: np.random.Generator, t: int = 339, num_classes: int = 20, kept: tuple[int, ...] = (3, 11),
               actions: int = 9, foreground: float = 0.31) -> tuple[np.ndarray, np.ndarray]:
    """CAS (T, C+1) float32 and attention (T,) float32 of one THUMOS-like video."""
    lengths = rng.dirichlet(np.ones(actions)) * foreground * t
    gaps = rng.dirichlet(np.ones(actions + 1)) * (1 - foreground) * t
    mask = np.zeros(t, dtype=bool)
    pos = 0.0
    for gap, length in zip(gaps, lengths, strict=False):
        pos += gap
        mask[int(pos):int(pos + max(length, 1.0))] = True
        pos += length
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


def _best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5, help="timing repeats (best is reported)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    videos = [make_video(rng) for _ in range(args.videos)]
    items = [(f"v{i}", c, a) for i, (c, a) in enumerate(videos)]
    settings = [
        ("soft-NMS (default)", PostprocessConfig()),
        ("soft-NMS, legacy length", PostprocessConfig(legacy_nms_length=True)),
        ("hard NMS 0.5", PostprocessConfig(nms="hard")),
    ]
    print(f"post-processing speed: {args.videos} videos, T = 339, C = 20, 2 kept classes, "
          f"10 thresholds; best of {args.repeat}; {os.cpu_count()} CPUs, NumPy {np.__version__}")
    header = (f"{'setting':<24} {'dets/video':>10} {'plain Python':>13} {'localize':>9} {'speedup':>8} "
              f"{'localize_many':>14} {'speedup':>8} {'identical':>9}")
    print(header)
    print(f"{'':<24} {'':>10} {'ms/video':>13} {'ms/video':>9} {'':>8} {'ms/video':>14}")
    print("-" * len(header))
    ok = True
    for name, cfg in settings:
        identical = True
        count = 0
        singles = []
        for (vid, cas, att) in items:
            dets = localize(cas, att, cfg, video=vid)
            identical &= same_detections(reference_localize(cas, att, cfg), dets)
            count += len(dets)
            singles.append(dets)
        many = localize_many(items, cfg)
        joined = Detections.concatenate(singles, many.classes)
        identical &= all(np.array_equal(getattr(many, f), getattr(joined, f))
                         for f in ("video", "label", "score", "t_start", "t_end"))
        ref_s = _best_time(lambda cfg=cfg: [reference_localize(c, a, cfg) for c, a in videos], args.repeat)
        one_s = _best_time(lambda cfg=cfg: [localize(c, a, cfg) for c, a in videos], args.repeat)
        many_s = _best_time(lambda cfg=cfg: localize_many(items, cfg), args.repeat)
        ref_ms, one_ms, many_ms = (x / len(videos) * 1e3 for x in (ref_s, one_s, many_s))
        print(f"{name:<24} {count / len(videos):>10.1f} {ref_ms:>13.2f} {one_ms:>9.3f} {ref_ms / one_ms:>7.1f}x "
              f"{many_ms:>14.3f} {ref_ms / many_ms:>7.1f}x {'yes' if identical else 'NO':>9}")
        ok &= identical
        if cfg == PostprocessConfig():
            ok &= ref_ms / min(one_ms, many_ms) >= TARGET_SPEEDUP
    print(f"target: identical detections; default setting >= {TARGET_SPEEDUP:.0f}x faster per video: "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
