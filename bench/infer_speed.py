"""CPU inference speed of the exported HAM-Net: PyTorch eager vs ONNX Runtime FP32 vs
ONNX Runtime static INT8 (QDQ), at T = 64, 339 (THUMOS14 mean) and 2,615 (THUMOS14
longest), batch 1, D = 2048, C = 20, median of repeats. Also the machine's
attainable rate ("peak") of the kernel its largest layers are made of (a k = 3 conv
D -> D at the same T, timed as an ONNX Runtime Conv and MatMul graph and as torch's
conv1d and matmul; the best of them) and what fraction of it each backend achieves
(FLOPs from `HamNet.flops_per_snippet()`, about 58.3 MFLOP/snippet); the same for the
INT8 kernel (`int8_kernels`, timed in the same rounds: INT8 rows are reported against it, and its ratio to
the FP32 peak is the INT8 speed-up the machine allows). The CPU model,
cores and vector ISA head the output; OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for
this benchmark only (they slow a current NumPy).

The model is randomly initialised (speed does not depend on the weights); the INT8
model is calibrated on synthetic features (`training.synth`, a few videos). The
backends come from the export format table (`export.formats.benchmark_formats`).

Targets (issue 15): ONNX Runtime FP32 at least 1.2x PyTorch eager at every T, and at
T >= 339 at least 80 % of the peak; INT8 at least 4x FP32 at T >= 339.

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

TARGET_ORT_VS_TORCH = 1.2  # ONNX Runtime FP32 at least this much faster than PyTorch eager
TARGET_INT8_SPEEDUP = 4.0  # INT8 at least this much faster than FP32, at T >= TARGET_LONG_T
TARGET_PEAK = 0.8  # ONNX Runtime FP32 reaches this share of the peak, at T >= TARGET_LONG_T
TARGET_LONG_T = 339


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


BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
"""Set on some machines here; they slow a current NumPy's OpenBLAS. Unset for this
benchmark only (the script restarts itself without them), never in tests or CI."""


def without_blas_overrides() -> None:
    """Restart this script without BLAS_VARIABLES when any is set."""
    if any(v in os.environ for v in BLAS_VARIABLES):
        env = {k: v for k, v in os.environ.items() if k not in BLAS_VARIABLES}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def cpu_isa() -> str:
    """The vector extensions that matter for float32/int8 kernels, from /proc/cpuinfo."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "asimd", "sve")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return " ".join(w for w in wanted if w in have) or "-"
    except OSError:
        pass
    return platform.machine()


def one_node_session(node: Any, x_type: int, x_shape: list[int], y_type: int, initializers: list[Any],
                     threads: int) -> Any:
    """An ONNX Runtime CPU session of one node `x -> y` (the kernels timed for the peaks)."""
    import onnxruntime as ort
    from onnx import helper

    graph = helper.make_graph([node], "peak", [helper.make_tensor_value_info("x", x_type, x_shape)],
                              [helper.make_tensor_value_info("y", y_type, None)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def kernel_peaks(t: int, dim: int, threads: int, min_repeat: int,
                 budget: float) -> tuple[dict[str, float], dict[str, float]]:
    """GFLOP/s of the kernel HAM-Net's largest layers are made of, a k = 3 convolution
    D -> D over T snippets, done the ways the backends do it: an ONNX Runtime Conv graph
    and the same as one MatMul (the unfolded input [T, 3D] x [3D, D]), torch's conv1d and
    matmul, and as the 2-D convolution of height 1 the exported graph uses (ONNX Runtime's
    blocked-layout kernel). Their best is the attainable rate at this shape ("peak").
    The INT8 kernels (`int8_kernels`) are timed in the same round-robin, so the ratio of
    the two peaks is measured under the same background load. Returns (FP32 GFLOP/s,
    INT8 GOP/s) per kernel."""
    import torch
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((dim, dim, 3)) * 0.01).astype(np.float32)
    x = rng.standard_normal((1, dim, t)).astype(np.float32)
    unfolded = np.ascontiguousarray(np.concatenate([np.pad(x[0], ((0, 0), (1, 1)))[:, i:i + t] for i in range(3)]).T)
    w2 = np.ascontiguousarray(w.transpose(2, 1, 0).reshape(3 * dim, dim))

    f = TensorProto.FLOAT
    conv = one_node_session(helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1]), f, [1, dim, t], f,
                            [numpy_helper.from_array(w, "w")], threads)
    conv2d = one_node_session(helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 1, 0, 1]), f, [1, dim, 1, t], f,
                              [numpy_helper.from_array(w[:, :, None, :], "w")], threads)
    x4 = x[:, :, None, :]
    mm = one_node_session(helper.make_node("MatMul", ["x", "w"], ["y"]), f, [t, 3 * dim], f,
                          [numpy_helper.from_array(w2, "w")], threads)
    tx, tw, tu, tw2 = (torch.from_numpy(a) for a in (x, w, unfolded, w2))
    fns = {"ORT Conv": lambda: conv.run(None, {"x": x}), "ORT Conv 2-D": lambda: conv2d.run(None, {"x": x4}),
           "ORT MatMul": lambda: mm.run(None, {"x": unfolded}),
           "torch conv1d": lambda: torch.nn.functional.conv1d(tx, tw, padding=1), "torch matmul": lambda: tu @ tw2}
    int8 = int8_kernels(t, dim, threads)
    with torch.inference_mode():
        times = interleaved_medians({**fns, **int8}, min_repeat, budget)
    flop = 2.0 * t * dim * dim * 3
    rates = {name: flop / sec / 1e9 for name, (sec, _) in times.items()}
    return {n: rates[n] for n in fns}, {n: rates[n] for n in int8}


def int8_kernels(t: int, dim: int, threads: int) -> dict[str, Callable[[], object]]:
    """The same k = 3 convolution D -> D in INT8 (uint8 activations, int8
    weights per output channel, the scheme `export.int8_cpu` writes), the ways ONNX
    Runtime can run it: QLinearConv on the 2-D layout the INT8 model has, the
    channels-last QLinearConv its NHWC transformer turns that into (without the
    transposes), and the unfolded input as one QLinearMatMul and one MatMulInteger.
    Their best over the FP32 peak is the INT8 speed-up this machine allows."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    u8 = TensorProto.UINT8
    w = rng.integers(-127, 128, (dim, dim, 1, 3)).astype(np.int8)
    consts = [numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
              numpy_helper.from_array(np.array(128, np.uint8), "xz"),
              numpy_helper.from_array(np.full(dim, 1e-3, np.float32), "ws"),
              numpy_helper.from_array(np.zeros(dim, np.int8), "wz"),
              numpy_helper.from_array(np.zeros(dim, np.int32), "b")]
    scalar_w = [numpy_helper.from_array(np.array(1e-3, np.float32), "ws1"),
                numpy_helper.from_array(np.array(0, np.int8), "wz1")]
    conv_in = ["x", "xs", "xz", "w", "ws", "wz", "xs", "xz", "b"]

    def session(node: Any, shape: list[int], weight: np.ndarray, extra: list[Any], out_type: int = u8) -> Any:
        return one_node_session(node, u8, shape, out_type, [numpy_helper.from_array(weight, "w"), *consts, *extra],
                                threads)

    unfolded_w = np.ascontiguousarray(w[:, :, 0, :].transpose(2, 1, 0).reshape(3 * dim, dim))
    nchw = session(helper.make_node("QLinearConv", conv_in, ["y"], pads=[0, 1, 0, 1]), [1, dim, 1, t], w, [])
    nhwc = session(helper.make_node("QLinearConv", conv_in, ["y"], pads=[0, 1, 0, 1], channels_last=1,
                                    domain="com.microsoft"), [1, 1, t, dim], w, [])
    qmm = session(helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws1", "wz1", "xs", "xz"], ["y"]),
                  [t, 3 * dim], unfolded_w, scalar_w)
    mmi = session(helper.make_node("MatMulInteger", ["x", "w", "xz"], ["y"]), [t, 3 * dim], unfolded_w, [],
                  TensorProto.INT32)
    x4 = rng.integers(0, 256, (1, dim, 1, t)).astype(np.uint8)
    xl = np.ascontiguousarray(x4.transpose(0, 2, 3, 1))
    xu = rng.integers(0, 256, (t, 3 * dim)).astype(np.uint8)
    return {"QLinearConv 2-D": lambda: nchw.run(None, {"x": x4}),
            "QLinearConv NHWC": lambda: nhwc.run(None, {"x": xl}),
            "QLinearMatMul": lambda: qmm.run(None, {"x": xu}), "MatMulInteger": lambda: mmi.run(None, {"x": xu})}


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

    from hamnet_deploy.export.calibration import calibration_features
    from hamnet_deploy.export.formats import benchmark_formats
    from hamnet_deploy.export.int8_cpu import quantize_int8_cpu
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
    console.print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, ISA {cpu_isa()}, {args.threads} threads | "
                  f"{' '.join(v for v in BLAS_VARIABLES if v in os.environ) or 'no OPENBLAS overrides'} | "
                  f"torch {torch.__version__}, "
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
        console.print(f"sgemm (2048^3 float32, best of 7): NumPy {rates['numpy']:.1f} GFLOP/s, "
                      f"torch.mm {rates['torch']:.1f} GFLOP/s (for reference)")
        peaks: dict[int, dict[str, float]] = {}
        peaks8: dict[int, dict[str, float]] = {}
        for t in args.lengths:
            with console.status(f"T = {t}: the k = 3 conv kernel's attainable rate, FP32 and INT8"):
                peaks[t], peaks8[t] = kernel_peaks(t, args.dim, args.threads, args.min_repeat, args.budget)
        best = {t: max(row.values()) for t, row in peaks.items()}
        best8 = {t: max(row.values()) for t, row in peaks8.items()}
        for title, table_peaks, table_best in (
                (f"peak: one k = 3 conv {args.dim} -> {args.dim} (GFLOP/s, median)", peaks, best),
                ("INT8 peak: the same conv in ONNX Runtime INT8 (GOP/s, median)", peaks8, best8)):
            ptable = Table(title=title, title_justify="left")
            int8_table = table_peaks is peaks8
            for col in ("T", *next(iter(table_peaks.values())), "peak", *(("INT8 peak / FP32 peak",) * int8_table)):
                ptable.add_column(col, justify="right")
            for t, row in table_peaks.items():
                ratio = (f"{best8[t] / best[t]:.2f}x",) * int8_table
                ptable.add_row(str(t), *(f"{v:.1f}" for v in row.values()), f"{table_best[t]:.1f}", *ratio)
            console.print(ptable)

        runners: dict[str, Any] = {}
        for fmt in benchmark_formats("cpu"):
            if fmt.key == "pytorch":
                runners["torch eager fp32"] = TorchRunner.from_model(model).activate()
            elif fmt.key == "onnx":
                runners["ORT fp32"] = OnnxRuntimeRunner(fp32, threads=args.threads).activate()
            elif fmt.key == "onnx_int8":
                runners["ORT int8"] = OnnxRuntimeRunner(int8, threads=args.threads).activate()

        table = Table(title="HAM-Net inference on CPU, batch 1 (median)", title_justify="left")
        for col in ("T", "backend", "ms", "snippets/s", "GFLOP/s", "% peak", "vs torch", "vs ORT fp32", "runs"):
            table.add_column(col, justify="left" if col == "backend" else "right")
        misses = []
        for t in args.lengths:
            x = random_features(1, t, args.dim)
            with console.status(f"T = {t}: timing {', '.join(runners)} round-robin"):
                times = interleaved_medians({n: (lambda run=run, x=x: run.infer(x)) for n, run in runners.items()},
                                            args.min_repeat, args.budget)
            peak, peak8 = best[t], best8[t]
            base = times["torch eager fp32"][0]
            fp = times["ORT fp32"][0]
            for name, (sec, n) in times.items():
                gf = flops * t / sec / 1e9
                share = 100 * gf / (peak8 if "int8" in name else peak)
                table.add_row(str(t), name, f"{sec * 1e3:.1f}", f"{t / sec:,.0f}", f"{gf:.1f}", f"{share:.0f}",
                              f"{base / sec:.2f}x", f"{fp / sec:.2f}x", str(n))
            table.add_section()
            if base / fp < TARGET_ORT_VS_TORCH:
                misses.append(f"T = {t}: ONNX Runtime FP32 is {base / fp:.2f}x PyTorch eager, target "
                              f"{TARGET_ORT_VS_TORCH}x")
            share = flops * t / fp / 1e9 / peak
            if t >= TARGET_LONG_T and share < TARGET_PEAK:
                misses.append(f"T = {t}: ONNX Runtime FP32 reaches {100 * share:.0f} % of the peak, target "
                              f"{100 * TARGET_PEAK:.0f} %")
            q = times["ORT int8"][0]
            if t >= TARGET_LONG_T and fp / q < TARGET_INT8_SPEEDUP:
                misses.append(f"T = {t}: INT8 is {fp / q:.2f}x FP32, target {TARGET_INT8_SPEEDUP}x (this machine's "
                              f"INT8 / FP32 kernel peak: {peak8 / peak:.2f}x)")
        console.print(table)
        console.print("% peak: FP32 rows against the FP32 peak, INT8 rows against the INT8 peak")

        with console.status("INT8 vs FP32 outputs"):
            report = compare(runners["ORT fp32"], runners["ORT int8"], feature_dim=args.dim,
                             name="INT8 vs FP32", atol=0.0, rtol=0.1, enforced=False,
                             inputs=[(f"synthetic video {i}", f[None]) for i, f in enumerate(feats[:3])])
        console.print(f"outputs, {report.summary()} (random weights; judge INT8 by mAP: hamnet export --verify)")

    console.print(f"targets: ONNX Runtime FP32 >= {TARGET_ORT_VS_TORCH}x PyTorch eager, and at T >= {TARGET_LONG_T} "
                  f">= {100 * TARGET_PEAK:.0f} % of the peak; INT8 >= {TARGET_INT8_SPEEDUP}x FP32 at T >= "
                  f"{TARGET_LONG_T}")
    for line in misses:
        console.print(f"[red]missed:[/] {line}")
    if not misses:
        console.print("[green]all targets met[/]")
    return 1 if misses and args.check else 0


if __name__ == "__main__":
    without_blas_overrides()
    raise SystemExit(main())
