"""GPU inference check: export a HAM-Net (D = 2048, C = 20) to ONNX, compare ONNX Runtime
with PyTorch on CUDA (FP32, TF32 off) at several T, and time PyTorch CUDA FP32 and FP16
latency (batch 1, median of repeats, CUDA events).

    python bench/gpu_infer.py [--checkpoint RUN] [--repeats 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from hamnet_deploy.export.onnx_export import export_onnx  # noqa: E402
from hamnet_deploy.training.model import HamNet  # noqa: E402

T_VALUES = (64, 339, 2615)


def cuda_latency_ms(fn, repeats: int) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None, help="run folder; default: random init")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    console = Console(width=120)
    if not torch.cuda.is_available():
        console.print("error: no CUDA GPU visible to PyTorch")
        raise SystemExit(2)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.checkpoint:
        from hamnet_deploy.training.checkpoint import load_model

        loaded = load_model(args.checkpoint)
        model, classes = loaded.model, loaded.classes
    else:
        torch.manual_seed(0)
        model, classes = HamNet(2048, 20).eval(), [f"c{i}" for i in range(20)]
    console.print(f"GPU {torch.cuda.get_device_name(0)}, torch {torch.__version__}, D = {model.feature_dim}, "
                  f"C = {model.num_classes}, {model.flops_per_snippet() / 1e6:.1f} MFLOP/snippet")
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        info = export_onnx(model.cpu(), Path(tmp) / "model.onnx", classes=classes, snippet_seconds=0.64)
        for note in info.notes:
            console.print(f"note: {note}")
        sess = ort.InferenceSession(str(Path(tmp) / "model.onnx"), providers=["CPUExecutionProvider"])
        gpu = model.cuda()
        parity = Table(title="parity: ONNX Runtime (CPU) vs PyTorch CUDA FP32 (TF32 off)")
        for col in ("batch", "T", "cas max abs", "cas max rel", "attention max abs"):
            parity.add_column(col, justify="right")
        rng = np.random.default_rng(0)
        worst = 0.0
        for batch, t in ((1, 1), (1, 2), (4, 37), (1, 339), (4, 339), (1, 2615)):
            x = rng.standard_normal((batch, t, model.feature_dim)).astype(np.float32)
            cas_o, att_o = sess.run(None, {"features": x})
            with torch.inference_mode():
                cas_t, att_t = (y.float().cpu().numpy() for y in gpu(torch.from_numpy(x).cuda()))
            d_cas = float(np.abs(cas_o - cas_t).max())
            rel = d_cas / max(float(np.abs(cas_t).max()), 1e-12)
            d_att = float(np.abs(att_o - att_t).max())
            worst = max(worst, rel)
            parity.add_row(str(batch), str(t), f"{d_cas:.2e}", f"{rel:.2e}", f"{d_att:.2e}")
        console.print(parity)
        console.print(f"parity {'ok' if worst < 1e-3 else 'FAILED'} (worst relative CAS error {worst:.2e})")

    lat = Table(title="PyTorch CUDA latency, batch 1 (median ms) and achieved TFLOP/s")
    for col in ("T", "FP32 ms", "FP32 TFLOP/s", "FP16 ms", "FP16 TFLOP/s", "FP16 speed-up"):
        lat.add_column(col, justify="right")
    half = HamNet(model.feature_dim, model.num_classes, pool_kernel=model.pool_kernel).cuda().eval()
    half.load_state_dict(gpu.state_dict())
    half = half.half()
    flops = model.flops_per_snippet()
    for t in T_VALUES:
        x = torch.randn(1, t, model.feature_dim, device="cuda")
        xh = x.half()
        with torch.inference_mode():
            f32 = cuda_latency_ms(lambda x=x: gpu(x), args.repeats)
            f16 = cuda_latency_ms(lambda xh=xh: half(xh), args.repeats)
        lat.add_row(str(t), f"{f32:.3f}", f"{flops * t / f32 / 1e9:.1f}", f"{f16:.3f}",
                    f"{flops * t / f16 / 1e9:.1f}", f"{f32 / f16:.2f}x")
    console.print(lat)


if __name__ == "__main__":
    main()
