"""The GPU recipe in seconds (issue 15 §5): one script for one GPU machine, a table out.

1. Training: the full THUMOS14 recipe (D = 2048, 100 epochs, batch 20, 500 snippets,
   evaluation every 5 epochs) on synthetic data of THUMOS14's size and timelines, with
   the training split kept on the GPU (`data.loader=device`: order and snippets drawn
   there, nothing read back per step) and bf16 autocast. Reports the wall time, the
   seconds per epoch and where the rest goes (data to the GPU, evaluations,
   checkpoints, the first epoch's warm-up). Target: <= 30 s of wall time.
2. Detection: THUMOS-length videos (lengths cycled from the same timelines) through the
   PyTorch backend in bf16, windows of --window snippets batched --batch at a time, the
   outputs post-processed by `localize_many` in --workers processes while the GPU runs
   the next chunk. Reports videos/s for the GPU alone, the post-processing alone and the
   two together. Target: >= 5,000 videos/s end to end.

    python bench/gpu_recipe.py [--out DIR] [--epochs 100] [--videos 5000]
    python bench/gpu_recipe.py --device cpu --tiny     # a smoke run on a CPU (the tests use it)

The table is printed and, with --out, written to DIR/gpu_recipe.md with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hamnet_deploy.runtime.inference import Inference  # noqa: E402
from hamnet_deploy.runtime.postprocess import PostprocessConfig, localize_many  # noqa: E402
from hamnet_deploy.training.data import load_dataset  # noqa: E402
from hamnet_deploy.training.embedded import embedded_dataset  # noqa: E402
from hamnet_deploy.training.model import HamNet  # noqa: E402
from hamnet_deploy.training.recipes import load_recipe  # noqa: E402
from hamnet_deploy.training.torch_runner import TorchRunner  # noqa: E402
from hamnet_deploy.training.trainer import train  # noqa: E402

TIMELINES = ROOT.parent / "shared" / "data" / "thumos14-reduced" / "thumos14-reduced.json"
TARGET_TRAIN_S = 30.0
TARGET_VIDEOS_S = 5000.0


class Clock:
    """Collects the trainer's events with the time each arrived."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, dict]] = []

    def __call__(self, event) -> None:
        if event.name != "train.step":
            self.events.append((time.perf_counter(), event.name, dict(event.data)))


def train_part(args, rows: list[tuple[str, str]]) -> HamNet:
    t0 = time.perf_counter()
    timelines = str(TIMELINES) if TIMELINES.is_file() and not args.tiny else None
    videos = 40 if args.tiny else 0 if timelines else 412
    folder = embedded_dataset(dim=args.dim, videos=videos, seed=0, timelines=timelines)
    data = load_dataset(folder)
    made = time.perf_counter() - t0
    sets = [f"device={args.device}", f"epochs={args.epochs}", "eval_every=5", "seed=0", "data.loader=device",
            f"amp={'true' if args.device.startswith('cuda') else 'false'}", *args.sets]
    if args.tiny:
        sets += ["model.attention_dim=16", "data.num_snippets=64"]
    cfg = load_recipe("thumos14").with_overrides(sets)
    clock = Clock()
    run = Path(args.out or "runs") / "gpu-recipe-run"
    if run.exists():
        shutil.rmtree(run)
    start = time.perf_counter()
    outcome = train(cfg, data, run, report=clock)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    starts = {d["epoch"]: t for t, name, d in clock.events if name == "train.epoch.start"}
    ends = {d["epoch"]: (t, d["record"]) for t, name, d in clock.events if name == "train.epoch"}
    train_s = [ends[e][1]["seconds"] for e in sorted(ends)]
    evals = [e for e in sorted(ends) if "eval" in ends[e][1]]
    after = {e: ends[e][0] - starts[e] - ends[e][1]["seconds"] for e in ends}  # checkpoint (+ evaluation)
    setup = starts[min(starts)] - start
    steady = statistics.median(train_s[1:]) if len(train_s) > 1 else train_s[0]
    eval_s = sum(after[e] for e in evals)
    ckpt_s = sum(after[e] for e in ends if e not in evals)
    last = outcome.last_eval
    rows += [
        ("training: wall time, whole recipe", f"{wall:.1f} s (target <= {TARGET_TRAIN_S:.0f} s: "
                                              f"{'PASS' if wall <= TARGET_TRAIN_S else 'FAIL'})"),
        ("  seconds per epoch (median, after the first)", f"{steady:.3f} s x {len(train_s)} epochs = "
                                                         f"{sum(train_s):.1f} s"),
        ("  first epoch (warm-up)", f"{train_s[0]:.2f} s"),
        ("  set-up (model, split to the GPU)", f"{setup:.1f} s"),
        (f"  {len(evals)} evaluations", f"{eval_s:.1f} s ({eval_s / max(len(evals), 1):.2f} s each)"),
        ("  checkpoints of the other epochs", f"{ckpt_s:.1f} s"),
        ("  average mAP of the last epoch", f"{100 * last.average:.1f} %" if last else "-"),
        ("  dataset (generated once, then cached)", f"{made:.1f} s, {len(data)} videos, D = {args.dim}"),
    ]
    return outcome_model(run, cfg)


def outcome_model(run: Path, cfg) -> HamNet:
    from hamnet_deploy.training.checkpoint import load_model

    return load_model(run, torch.device(cfg.device if cfg.device != "auto" else "cpu"), which="last").model


def _post(chunk: list) -> int:
    return len(localize_many(chunk, PostprocessConfig()))


def detect_part(args, model: HamNet, rows: list[tuple[str, str]]) -> None:
    rng = np.random.default_rng(0)
    if TIMELINES.is_file():
        entries = json.loads(TIMELINES.read_text())["database"].values()
        lengths = [int(e["duration"] / 0.64) for e in entries if e["subset"] == "test"]
    else:
        lengths = list(rng.integers(60, 900, size=200))
    if args.tiny:
        lengths = [min(t, 120) for t in lengths]
    distinct = [rng.normal(size=(t, model.feature_dim)).astype(np.float32) for t in lengths[:args.distinct]]
    videos = [distinct[i % len(distinct)] for i in range(args.videos)]
    mean_t = float(np.mean([len(v) for v in videos]))
    chunk = args.chunk
    with TorchRunner.from_model(model.eval(), precision=args.precision) as runner:
        infer = Inference(runner, runner.receptive_radius, max_t=args.window, batch_size=args.batch)
        infer.run(videos[: min(len(videos), chunk)])  # warm-up: kernels, allocator
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        outputs = []
        for s in range(0, len(videos), chunk):
            outputs.extend(infer.run(videos[s:s + chunk]))
        gpu_s = time.perf_counter() - t0
        items = [(f"v{i}", cas, att) for i, (cas, att) in enumerate(outputs)]
        parts = [items[s:s + args.post_chunk] for s in range(0, len(items), args.post_chunk)]
        with ProcessPoolExecutor(args.workers) as pool:
            list(pool.map(_post, parts[:args.workers]))  # start the workers
            t0 = time.perf_counter()
            detections = sum(pool.map(_post, parts))
            post_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            pending = []
            for s in range(0, len(videos), chunk):
                out = infer.run(videos[s:s + chunk])
                batch = [(f"v{s + i}", cas, att) for i, (cas, att) in enumerate(out)]
                pending += [pool.submit(_post, batch[j:j + args.post_chunk])
                            for j in range(0, len(batch), args.post_chunk)]
            together = sum(f.result() for f in pending)
            both_s = time.perf_counter() - t0
    n = len(videos)
    rows += [
        (f"detection: {n} videos, mean T = {mean_t:.0f}, {args.precision}, windows of {args.window} x {args.batch}",
         ""),
        ("  network alone (outputs on the host)", f"{n / gpu_s:,.0f} videos/s"),
        (f"  post-processing alone ({args.workers} processes)", f"{n / post_s:,.0f} videos/s, "
                                                              f"{detections / n:.0f} detections/video"),
        ("  end to end, overlapped", f"{n / both_s:,.0f} videos/s (target >= {TARGET_VIDEOS_S:,.0f}: "
                                     f"{'PASS' if n / both_s >= TARGET_VIDEOS_S else 'FAIL'})"),
    ]
    assert together == detections, "the overlapped run found other detections"


def machine(device: str) -> str:
    cpu = f"{os.cpu_count()} CPUs"
    if device.startswith("cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"{p.name}, {p.total_memory / 2**30:.0f} GiB; {cpu}; torch {torch.__version__}"
    return f"CPU only; {cpu}; torch {torch.__version__}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=None, help="folder for the run and gpu_recipe.md")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--videos", type=int, default=5000, help="videos to detect")
    ap.add_argument("--distinct", type=int, default=212, help="distinct feature arrays (cycled)")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--batch", type=int, default=128, help="windows per forward pass")
    ap.add_argument("--chunk", type=int, default=1000, help="videos per inference call")
    ap.add_argument("--post-chunk", type=int, default=50, help="videos per post-processing task")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra training setting key=value")
    ap.add_argument("--tiny", action="store_true", help="small shapes for a CPU smoke run")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA GPU visible to PyTorch; run this on a GPU machine or pass --device cpu --tiny",
              file=sys.stderr)
        return 2
    if args.tiny:
        args.dim, args.epochs, args.videos, args.distinct = 16, min(args.epochs, 2), min(args.videos, 60), 20
        args.window, args.batch, args.chunk, args.post_chunk, args.workers = 64, 8, 30, 10, min(args.workers, 2)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = []
    started = time.perf_counter()
    model = train_part(args, rows)
    detect_part(args, model, rows)
    rows.append(("whole script", f"{time.perf_counter() - started:.0f} s"))
    width = max(len(a) for a, _ in rows)
    lines = [f"GPU recipe benchmark: {machine(args.device)}", "", f"| {'what':<{width}} | result |",
             f"| {'-' * width} | --- |", *[f"| {a:<{width}} | {b} |" for a, b in rows]]
    text = "\n".join(lines)
    print(text)
    if args.out:
        (args.out / "gpu_recipe.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
