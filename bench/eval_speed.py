"""Detection-evaluation speed: `runtime.evaluation.evaluate_detection` on the real
THUMOS14 test timelines (212 videos, from ../shared) with 250 synthetic detections per
video and 7 tIoU thresholds, against a loop version written here the way the
ActivityNet evaluator does it (per class, per prediction, per threshold). Both must
give the same APs; the target is under 1 s for the runtime.

    python bench/eval_speed.py [--per-video N] [--repeat R] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hamnet_deploy.runtime.annotations import Annotations, load_annotation_json  # noqa: E402
from hamnet_deploy.runtime.detections import Detections  # noqa: E402
from hamnet_deploy.runtime.evaluation import THUMOS14_TIOU, evaluate_detection  # noqa: E402

ANNOTATIONS = ROOT.parent / "shared" / "data" / "thumos14-reduced" / "thumos14-reduced.json"
TARGET_SECONDS = 1.0


def make_detections(gt: Annotations, per_video: int, rng: np.random.Generator) -> Detections:
    """Half near ground-truth segments (jittered, true label), half random segments with
    random labels; uniform random scores."""
    videos, labels, starts, ends = [], [], [], []
    for name, v in gt.videos.items():
        near = per_video // 2 if v.labels.size else 0
        pick = rng.integers(0, max(v.labels.size, 1), near)
        seg = v.segments[pick] + rng.normal(0.0, 1.0, (near, 2)) if near else np.zeros((0, 2))
        seg.sort(axis=1)
        lab = v.labels[pick] if near else np.zeros(0, dtype=np.int64)
        rest = per_video - near
        s = rng.uniform(0.0, v.duration, rest)
        seg = np.concatenate([seg, np.stack([s, s + rng.exponential(5.0, rest)], axis=1)])
        lab = np.concatenate([lab, rng.integers(0, gt.num_classes, rest)])
        videos += [name] * per_video
        labels.append(lab)
        starts.append(seg[:, 0])
        ends.append(seg[:, 1])
    n = len(videos)
    return Detections.from_arrays(gt.classes, np.array(videos, dtype=object), np.concatenate(labels),
                                  rng.random(n), np.concatenate(starts), np.concatenate(ends))


def reference_ap(gt: Annotations, dets: Detections, thresholds) -> np.ndarray:
    """(L, C) AP by loops, ActivityNet style. Written independently of runtime/."""
    ap = np.full((len(thresholds), gt.num_classes), np.nan)
    for c in range(gt.num_classes):
        truth: dict[str, list[tuple[float, float]]] = {}
        for name, v in gt.videos.items():
            for (s, e), lab in zip(v.segments.tolist(), v.labels.tolist(), strict=True):
                if lab == c:
                    truth.setdefault(name, []).append((s, e))
        npos = sum(len(x) for x in truth.values())
        if npos == 0:
            continue
        mine = [i for i in range(len(dets)) if dets.label[i] == c]
        mine.sort(key=lambda i: -dets.score[i])  # stable: ties keep input order
        for t, thr in enumerate(thresholds):
            taken = {name: [False] * len(segs) for name, segs in truth.items()}
            flags = []
            for i in mine:
                segs = truth.get(dets.video[i], [])
                s, e = dets.t_start[i], dets.t_end[i]
                ious = []
                for gs, ge in segs:
                    inter = max(0.0, min(e, ge) - max(s, gs))
                    union = (e - s) + (ge - gs) - inter
                    ious.append(inter / union if union > 0 else 0.0)
                hit = False
                for j in sorted(range(len(ious)), key=lambda j: -ious[j]):
                    if ious[j] < thr:
                        break
                    if taken[dets.video[i]][j]:
                        continue
                    taken[dets.video[i]][j] = True
                    hit = True
                    break
                flags.append(hit)
            tp = np.cumsum(flags)
            fp = np.cumsum([not f for f in flags])
            rec = tp / npos
            prec = tp / np.maximum(tp + fp, 1)
            mprec = np.concatenate([[0.0], prec, [0.0]])
            mrec = np.concatenate([[0.0], rec, [1.0]])
            for k in range(len(mprec) - 2, -1, -1):
                mprec[k] = max(mprec[k], mprec[k + 1])
            changed = np.where(mrec[1:] != mrec[:-1])[0] + 1
            ap[t, c] = float(np.sum((mrec[changed] - mrec[changed - 1]) * mprec[changed]))
    return ap


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-video", type=int, default=250)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-reference", action="store_true", help="skip the (slow) loop version")
    args = ap.parse_args()
    if not ANNOTATIONS.is_file():
        print(f"{ANNOTATIONS} is missing: the benchmark needs ../shared beside the checkout")
        return 2
    gt = load_annotation_json(ANNOTATIONS).select("test")
    dets = make_detections(gt, args.per_video, np.random.default_rng(args.seed))
    thr = THUMOS14_TIOU
    run_s, result = _best(lambda: evaluate_detection(gt, dets, thr), args.repeat)
    print(f"detection evaluation speed: {len(gt.videos)} videos x {args.per_video} detections = {len(dets)}, "
          f"{sum(v.labels.size for v in gt.videos.values())} ground-truth segments, {len(thr)} tIoU thresholds; "
          f"best of {args.repeat}; {os.cpu_count()} CPUs")
    header = f"{'implementation':<34} {'seconds':>9} {'avg mAP':>8} {'same AP':>8}"
    print(header)
    print("-" * len(header))
    if not args.no_reference:
        ref_s, ref = _best(lambda: reference_ap(gt, dets, thr), 1)
        same = bool(np.allclose(ref, result.ap, atol=1e-9, equal_nan=True))
        ref_map = float(np.mean(np.nanmean(ref, axis=1)))
        print(f"{'loops (ActivityNet style)':<34} {ref_s:>9.3f} {ref_map:>8.4f} {'':>8}")
    else:
        same = True
    print(f"{'runtime.evaluation (vectorised)':<34} {run_s:>9.3f} {result.average_map:>8.4f} "
          f"{'yes' if same else 'NO':>8}")
    print("mAP per tIoU: " + "  ".join(f"{t:.1f}: {m:.4f}" for t, m in zip(thr, result.map, strict=True)))
    ok = same and run_s < TARGET_SECONDS
    print(f"target: same APs, under {TARGET_SECONDS:.0f} s: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
