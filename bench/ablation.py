"""Paper Table 1 on the synthetic benchmark: train exp1 (BCL only), exp5 (the "MIL-only"
model: BCL + SAL + sparsity + guide) and exp11 (all six terms, HAM-Net) on the same
synthetic dataset built on THUMOS14's real timelines, and print detection mAP at tIoU
0.1..0.7 and the average, next to the paper's averages.

    python bench/ablation.py                   # the README's table (about 8 min on 2 cores)
    python bench/ablation.py --seed 1          # another dataset and initialisation
    python bench/ablation.py --runs exp5 exp11 --epochs 30   # a quicker look
    python bench/ablation.py --runs exp11 --set data.short_videos=mask   # a variant, in its own folders

The THUMOS14 recipe is used as is except for the settings printed under "changed from
the recipe" (a reduced feature dimension and attention width, a learning rate raised
accordingly, CPU, evaluation only after the last epoch), so three runs fit in about
10 minutes on 2 CPU cores. exp1 trains no attention (no loss term reaches the attention
branch), so its detections use the CAS foreground probability as the attention
(`PostprocessConfig.attention_source="cas"`, chosen by `training.evaluate.postprocess_config`);
the other runs use their attention branch as in SPEC §4.

Finished runs in --out are reused (only re-evaluated) when they were trained with the
same settings on the same dataset; --fresh retrains them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from hamnet_deploy.training.checkpoint import load_model  # noqa: E402
from hamnet_deploy.training.config import ABLATIONS  # noqa: E402
from hamnet_deploy.training.data import load_dataset  # noqa: E402
from hamnet_deploy.training.embedded import embedded_dataset  # noqa: E402
from hamnet_deploy.training.evaluate import evaluate_model, postprocess_config  # noqa: E402
from hamnet_deploy.training.recipes import load_recipe  # noqa: E402
from hamnet_deploy.training.trainer import train  # noqa: E402

TIMELINES = ROOT.parent / "shared" / "data" / "thumos14-reduced" / "thumos14-reduced.json"
PAPER_AVG = {"exp1": 24.6, "exp2": 30.8, "exp3": 28.9, "exp4": 30.9, "exp5": 34.8, "exp6": 30.9,
             "exp7": 31.1, "exp8": 37.9, "exp9": 36.6, "exp10": 38.1, "exp11": 39.8}
RUN_RECORD = "bench_run.json"


def _checks(results: dict, thresholds: list[float]) -> list[tuple[str, bool]]:
    """The acceptance checks of the ablation (issue 4) on the runs that were made."""
    avg = {n: r["average"] for n, r in results.items()}
    out = []
    if {"exp1", "exp5", "exp11"} <= set(avg):
        out.append(("exp11 > exp5 > exp1 on average mAP", avg["exp11"] > avg["exp5"] > avg["exp1"]))
    if {"exp5", "exp11"} <= set(avg):
        out.append(("exp11 at least 2 points above exp5", avg["exp11"] - avg["exp5"] >= 2.0))
        gain = [a - b for a, b in zip(results["exp11"]["map"], results["exp5"]["map"], strict=True)]
        best = thresholds[max(range(len(gain)), key=gain.__getitem__)]
        out.append((f"exp11's largest gain over exp5 at tIoU 0.5-0.7 (it is at {best:.1f})", best >= 0.45))
    return out


def _variant(sets: list[str]) -> str:
    """Folder suffix of the --set settings, so a variant never replaces the recipe's runs."""
    return "".join("-" + "".join(ch if ch.isalnum() else "_" for ch in item) for item in sets)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=128, help="feature dimension D (recipe: 2048)")
    ap.add_argument("--attention-dim", type=int, default=128, help="attention branch width (recipe: 512)")
    ap.add_argument("--epochs", type=int, default=100, help="training epochs (recipe: 100)")
    ap.add_argument("--lr", type=float, default=1e-4, help="learning rate (recipe: 1e-5)")
    ap.add_argument("--batch", type=int, default=20, help="videos per batch (recipe: 20)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the dataset and of training")
    ap.add_argument("--runs", nargs="+", default=["exp1", "exp5", "exp11"], choices=list(ABLATIONS))
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--fresh", action="store_true", help="retrain runs that already exist in --out")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra setting key=value")
    args = ap.parse_args()

    console = Console() if sys.stdout.isatty() else Console(width=120)  # the table needs ~110 columns
    recipe = load_recipe("thumos14")
    changed = [f"model.attention_dim={args.attention_dim}", f"optim.lr={args.lr:g}", f"epochs={args.epochs}",
               f"data.batch_size={args.batch}", f"seed={args.seed}", "eval_every=0", "device=cpu", *args.sets]
    base = recipe.with_overrides(changed)
    deviations = [f"feature dimension D = {args.dim} (recipe 2048: I3D RGB + flow)"]
    for key, old, new in (("model.attention_dim", recipe.model.attention_dim, base.model.attention_dim),
                          ("optim.lr", recipe.optim.lr, base.optim.lr), ("epochs", recipe.epochs, base.epochs),
                          ("data.batch_size", recipe.data.batch_size, base.data.batch_size),
                          ("eval_every", recipe.eval_every, "0 (evaluate after the last epoch only)"),
                          ("device", recipe.device, base.device)):
        if str(old) != str(new):
            deviations.append(f"{key} = {new} (recipe {old})")
    deviations += [f"--set {s}" for s in args.sets]
    console.print("[bold]Paper Table 1 on synthetic THUMOS14[/] (real THUMOS14 timelines, synthetic features: "
                  "training.synth defaults)")
    console.print("changed from the thumos14 recipe: " + "; ".join(deviations))
    console.print("exp1 (BCL only) trains no attention: its detections use the CAS foreground probability "
                  "1 - softmax(s_t)[background] as the attention (post-processing attention_source=cas)")

    t0 = time.perf_counter()
    folder = embedded_dataset(dim=args.dim, videos=0, seed=args.seed, timelines=str(TIMELINES))
    console.print(f"dataset {folder} ({time.perf_counter() - t0:.0f} s)")
    data = load_dataset(folder)
    args.out.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict] = {}
    for name in args.runs:
        cfg = base.with_overrides([f"ablation={name}"])
        run = args.out / f"{name}-d{args.dim}-s{args.seed}{_variant(args.sets)}"
        key = {"dataset": folder.name, "settings": changed, "ablation": name}
        record = run / RUN_RECORD
        old = json.loads(record.read_text()) if record.is_file() else None
        if run.exists() and (args.fresh or old is None or old.get("key") != key):
            if not args.fresh and old is None and any(run.iterdir()):
                raise SystemExit(f"{run} holds a run this bench did not record; remove it or pass --fresh")
            shutil.rmtree(run)
            old = None
        if old is not None and old.get("done"):
            console.print(f"[bold]{name}[/]: reusing the finished run in {run} (pass --fresh to retrain)")
            loaded = load_model(run)
            post = postprocess_config(loaded.config)
            summary = evaluate_model(loaded.model, data.select(cfg.data.test_subset), post)
            seconds = float(old["seconds"])
        else:
            console.print(f"[bold]{name}[/]: {ABLATIONS[name]['description']}; training in {run}")
            run.mkdir(parents=True, exist_ok=True)
            (run / RUN_RECORD).write_text(json.dumps({"key": key, "done": False}))
            t0 = time.perf_counter()
            outcome = train(cfg, data, run, resume=(run / "latest.json").exists())
            seconds = time.perf_counter() - t0 + float((old or {}).get("seconds", 0.0))
            summary = outcome.last_eval
            (run / RUN_RECORD).write_text(json.dumps({"key": key, "done": True, "seconds": seconds}))
        post = postprocess_config(cfg)
        results[name] = {"map": [100 * float(m) for m in summary.detection.map], "average": 100 * summary.average,
                         "classification_map": 100 * summary.classification_map, "seconds": seconds,
                         "attention_source": post.attention_source}

    thresholds = [float(t) for t in summary.detection.thresholds]
    table = Table(title=f"Synthetic THUMOS14 (D = {args.dim}, seed {args.seed}): detection mAP (%)")
    table.add_column("run")
    for t in thresholds:
        table.add_column(f"{t:.1f}", justify="right")
    table.add_column("avg", justify="right", style="bold")
    table.add_column("paper", justify="right")
    table.add_column("cls mAP", justify="right")
    table.add_column("attention", justify="left")
    table.add_column("minutes", justify="right")
    for name, r in results.items():
        table.add_row(name, *[f"{m:.1f}" for m in r["map"]], f"{r['average']:.1f}", f"{PAPER_AVG[name]:.1f}",
                      f"{r['classification_map']:.1f}", r["attention_source"], f"{r['seconds'] / 60:.1f}")
    if {"exp5", "exp11"} <= set(results):
        gain = [a - b for a, b in zip(results["exp11"]["map"], results["exp5"]["map"], strict=True)]
        table.add_section()
        table.add_row("exp11 - exp5", *[f"{g:+.1f}" for g in gain],
                      f"{results['exp11']['average'] - results['exp5']['average']:+.1f}",
                      f"{PAPER_AVG['exp11'] - PAPER_AVG['exp5']:+.1f}", "", "", "")
    console.print(table)
    total = sum(r["seconds"] for r in results.values()) / 60
    console.print(f"training time: {total:.1f} min for {len(results)} runs")
    checks = _checks(results, thresholds)
    for text, ok in checks:
        console.print(f"  [{'green' if ok else 'red'}]{'PASS' if ok else 'FAIL'}[/] {text}")
    (args.out / f"ablation-d{args.dim}-s{args.seed}{_variant(args.sets)}.json").write_text(json.dumps(
        {"dataset": folder.name, "changed": deviations, "thresholds": thresholds, "runs": results,
         "checks": {text: ok for text, ok in checks}}, indent=1))


if __name__ == "__main__":
    main()
