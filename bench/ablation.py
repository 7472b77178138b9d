"""Paper Table 1 on the synthetic benchmark: train exp1 (BCL), exp5 (MIL-only:
BCL+SAL+sparsity+guide) and exp11 (all six terms, HAM-Net) on the same synthetic
dataset built on THUMOS14's real timelines, and print mAP at tIoU 0.1..0.7.

    python bench/ablation.py                 # the README's table
    python bench/ablation.py --dim 64 --epochs 10 --runs exp1 exp11   # quicker look

Settings changed from the THUMOS14 recipe are listed in the output (reduced feature
dimension and attention width so three runs fit in 45 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from training.config import apply_overrides, load_recipe  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.embedded import embedded_dataset  # noqa: E402
from training.trainer import train  # noqa: E402

TIMELINES = ROOT.parent / "shared" / "data" / "thumos14-reduced" / "thumos14-reduced.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=128, help="feature dimension D (recipe: 2048)")
    ap.add_argument("--attention-dim", type=int, default=128, help="attention branch width (recipe: 512)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-4, help="learning rate (recipe: 1e-5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", nargs="+", default=["exp1", "exp5", "exp11"])
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra setting key=value")
    args = ap.parse_args()

    console = Console()
    changed = [f"model.attention_dim={args.attention_dim}", f"optim.lr={args.lr}", f"epochs={args.epochs}",
               f"seed={args.seed}", "eval_every=0", "device=cpu", *args.sets]
    console.print(f"synthetic data: THUMOS14 timelines, D = {args.dim}; recipe thumos14 with " + ", ".join(changed))
    data = load_dataset(embedded_dataset(dim=args.dim, videos=0, seed=args.seed, timelines=str(TIMELINES)))
    results = {}
    for name in args.runs:
        cfg = apply_overrides(load_recipe("thumos14"), [*changed, f"ablation={name}"])
        run = args.out / f"{name}-d{args.dim}-s{args.seed}"
        t0 = time.perf_counter()
        outcome = train(cfg, data, run, resume=(run / "latest.json").exists(), console=console)
        results[name] = (outcome.last_eval, time.perf_counter() - t0)

    first = next(iter(results.values()))[0]
    thresholds = list(first.detection.thresholds)
    table = Table(title=f"Synthetic THUMOS14 (D = {args.dim}), detection mAP (%)")
    table.add_column("run")
    for t in thresholds:
        table.add_column(f"{t:.1f}", justify="right")
    table.add_column("avg", justify="right")
    table.add_column("minutes", justify="right")
    for name, (ev, secs) in results.items():
        maps = [100 * float(m) for m in ev.detection.map]
        table.add_row(name, *[f"{m:.1f}" for m in maps], f"{100 * ev.average:.1f}", f"{secs / 60:.1f}")
    console.print(table)
    summary = {n: {"map": [float(m) for m in ev.detection.map], "average": ev.average, "seconds": s}
               for n, (ev, s) in results.items()}
    (args.out / "ablation.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
