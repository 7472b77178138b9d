"""CPU inference speed of the exported HAM-Net: PyTorch eager vs ONNX Runtime FP32 vs
ONNX Runtime static INT8 (QDQ), at T = 64, 339 (THUMOS14 mean) and 2,615 (THUMOS14
longest), batch 1, D = 2048, C = 20, median of repeats. Also the machine's
single-precision matrix-multiply rate (NumPy sgemm) and what fraction of it each
backend achieves (FLOPs from `HamNet.flops_per_snippet()`, about 58.3 MFLOP/snippet).

The model is randomly initialised (speed does not depend on the weights); the INT8
model is calibrated on synthetic features (`training.synth`, a few videos). The
backends come from the export format table (`export.formats.benchmark_formats`).

Targets (2-core machine): ONNX Runtime FP32 no slower than PyTorch eager; INT8 at
least 1.5x faster than FP32.

    python bench/infer_speed.py [--lengths 64 339 2615] [--threads N] [--min-repeat 5]
                                [--dim 2048] [--classes 20] [--calib-videos 6] [--check]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_ORT_VS_TORCH = 1.0  # ONNX Runtime FP32 time <= PyTorch time
TARGET_INT8_SPEEDUP = 1.5  # INT8 at least this much faster than FP32


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def interleaved_medians(fns: dict[str, Callable[[], object]], min_repeat: int,
                        budget_s: float) -> dict[str, tuple[float, int]]:
    """Median seconds of each function, timed round-robin (rotating order) so that every
    backend sees the same background load on a shared machine; 2 warm-up calls each,
    at least `min_repeat` rounds, more while `budget_s` per backend lasts (up to 50)."""
    first = {}
    for name, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    rounds = int(min(50, max(min_repeat, budget_s / max(max(first.values()), 1e-6))))
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {n: (float(np.median(v)), len(v)) for n, v in times.items()}


def matmul_gflops(n: int = 2048, repeat: int = 7) -> dict[str, float]:
    """Best float32 n x n matmul rate of NumPy's BLAS (sgemm) and of torch.mm, all threads."""
    import torch

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out = {}
    for name, fn in (("numpy", lambda: a @ b), ("torch", lambda: torch.mm(ta, tb))):
        fn()
        best = min(_timed(fn) for _ in range(repeat))
        out[name] = 2.0 * n**3 / best / 1e9
    return out


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 339, 2615])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--min-repeat", type=int, default=5)
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timed runs per cell (more repeats)")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--calib-videos", type=int, default=6)
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch
    from rich.console import Console
    from rich.table import Table

    from hamnet_deploy.export.formats import benchmark_formats
    from hamnet_deploy.export.int8_cpu import calibration_features, quantize_int8_cpu
    from hamnet_deploy.export.onnx_export import export_onnx
    from hamnet_deploy.export.parity import compare, random_features
    from hamnet_deploy.runtime.backends.onnxruntime import OnnxRuntimeRunner
    from hamnet_deploy.training.model import HamNet
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset
    from hamnet_deploy.training.torch_runner import TorchRunner

    console = Console(width=max(110, Console().width))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = HamNet(args.dim, args.classes).eval()
    flops = model.flops_per_snippet()
    console.print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, {args.threads} threads | torch {torch.__version__}, "
                  f"onnxruntime {ort.__version__}, numpy {np.__version__}")
    console.print(f"model: D = {args.dim}, C = {args.classes}, {model.num_parameters() / 1e6:.1f} M parameters, "
                  f"{flops / 1e6:.1f} MFLOP per snippet; random weights")
    console.print("[yellow]note:[/] the machine may be shared with other jobs; rerun for stable numbers")

    with tempfile.TemporaryDirectory(prefix="hamnet-bench-") as tmp:
        tmp_path = Path(tmp)
        fp32 = tmp_path / "model.onnx"
        int8 = tmp_path / "model.int8.onnx"
        with console.status("exporting ONNX, generating synthetic features, quantizing INT8"):
            export_onnx(model, fp32, classes=[f"c{i}" for i in range(args.classes)], snippet_seconds=0.64)
            generate_dataset(tmp_path / "synth", SynthConfig(videos=max(4, 2 * args.calib_videos), dim=args.dim,
                                                             num_classes=args.classes))
            feats = calibration_features(tmp_path / "synth", args.calib_videos, feature_dim=args.dim,
                                         max_snippets=512)
            res = quantize_int8_cpu(fp32, int8, feats)
        console.print(f"INT8: calibrated on {res.calib_videos} synthetic videos ({res.calib_snippets} snippets) "
                      f"in {res.seconds:.1f} s; {fp32.stat().st_size / 2**20:.0f} MB -> "
                      f"{int8.stat().st_size / 2**20:.0f} MB")
        with console.status("measuring sgemm"):
            rates = matmul_gflops()
        peak = rates["numpy"]
        console.print(f"sgemm (2048^3 float32, best of 7): NumPy {rates['numpy']:.1f} GFLOP/s, "
                      f"torch.mm {rates['torch']:.1f} GFLOP/s; '% sgemm' below is against NumPy's")

        runners: dict[str, Any] = {}
        for fmt in benchmark_formats("cpu"):
            if fmt.key == "pytorch":
                runners["torch eager fp32"] = TorchRunner.from_model(model).activate()
            elif fmt.key == "onnx":
                runners["ORT fp32"] = OnnxRuntimeRunner(fp32, threads=args.threads).activate()
            elif fmt.key == "onnx_int8":
                runners["ORT int8"] = OnnxRuntimeRunner(int8, threads=args.threads).activate()

        table = Table(title="HAM-Net inference on CPU, batch 1 (median)", title_justify="left")
        for col in ("T", "backend", "ms", "snippets/s", "GFLOP/s", "% sgemm", "vs torch", "vs ORT fp32", "runs"):
            table.add_column(col, justify="left" if col == "backend" else "right")
        misses = []
        for t in args.lengths:
            x = random_features(1, t, args.dim)
            with console.status(f"T = {t}: timing {', '.join(runners)} round-robin"):
                times = interleaved_medians({n: (lambda run=run, x=x: run.infer(x)) for n, run in runners.items()},
                                            args.min_repeat, args.budget)
            base = times["torch eager fp32"][0]
            fp = times["ORT fp32"][0]
            for name, (sec, n) in times.items():
                gf = flops * t / sec / 1e9
                table.add_row(str(t), name, f"{sec * 1e3:.1f}", f"{t / sec:,.0f}", f"{gf:.1f}", f"{100 * gf / peak:.0f}",
                              f"{base / sec:.2f}x", f"{fp / sec:.2f}x", str(n))
            table.add_section()
            if fp > base * TARGET_ORT_VS_TORCH:
                misses.append(f"T = {t}: ONNX Runtime FP32 {fp * 1e3:.1f} ms is slower than PyTorch {base * 1e3:.1f} ms")
            q = times["ORT int8"][0]
            if fp / q < TARGET_INT8_SPEEDUP:
                misses.append(f"T = {t}: INT8 is {fp / q:.2f}x FP32, target {TARGET_INT8_SPEEDUP}x")
        console.print(table)

        with console.status("INT8 vs FP32 outputs"):
            report = compare(runners["ORT fp32"], runners["ORT int8"], feature_dim=args.dim,
                             name="INT8 vs FP32", atol=0.0, rtol=0.1, enforced=False,
                             inputs=[(f"synthetic video {i}", f[None]) for i, f in enumerate(feats[:3])])
        console.print(f"outputs, {report.summary()} (random weights; judge INT8 by mAP: hamnet export --verify)")

    console.print(f"targets: ONNX Runtime FP32 <= PyTorch eager; INT8 >= {TARGET_INT8_SPEEDUP}x FP32")
    for line in misses:
        console.print(f"[red]missed:[/] {line}")
    if not misses:
        console.print("[green]all targets met[/]")
    return 1 if misses and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
