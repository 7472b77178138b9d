"""How fast `hamnet synth` writes the default synthetic dataset (412 videos, D = 2048,
about 1.1 GB of float32) into a temporary folder, which is deleted afterwards.

    python bench/synth_speed.py [--videos N] [--dim D] [--wtalc] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hamnet_deploy.training.synth import SynthConfig, dataset_stats, generate_dataset  # noqa: E402


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=412)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--wtalc", action="store_true", help="also write the W-TALC layout")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workers", type=int, default=None, help="writer threads (default: up to 4)")
    args = ap.parse_args()
    cfg = SynthConfig(videos=args.videos, dim=args.dim)
    rows = []
    for _ in range(args.repeat):
        tmp = Path(tempfile.mkdtemp(prefix="hamnet-synth-bench-"))
        try:
            t0 = time.perf_counter()
            ann = generate_dataset(tmp, cfg, wtalc=args.wtalc, workers=args.workers)
            seconds = time.perf_counter() - t0
            size = _size(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        st = dataset_stats(ann, cfg.snippet_seconds)
        rows.append((st["videos"], st["snippets"], size / 1e9, seconds, size / 1e6 / seconds))
    print(f"hamnet synth speed: D = {args.dim}, wtalc = {args.wtalc}, {os.cpu_count()} CPUs")
    print(f"{'videos':>7} {'snippets':>9} {'GB':>6} {'seconds':>8} {'MB/s':>7}")
    for v, s, gb, sec, mbs in rows:
        print(f"{v:>7} {s:>9} {gb:>6.2f} {sec:>8.2f} {mbs:>7.0f}")


if __name__ == "__main__":
    main()
