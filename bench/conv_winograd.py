"""How the k = 3 convolutions could run faster in ONNX Runtime FP32 (issue 15 §2): the
two 2048 -> 2048 k = 3 convolutions of HAM-Net's classifier (+ bias + LeakyReLU), as
the export writes them (Conv 2-D of height 1, ONNX Runtime's blocked-layout kernel,
channels-major [1, D, T]) against Winograd minimal filtering F(2,3) and F(4,3) written
as plain ONNX ops on time-major [1, T, D] features (input transform: adds of strided
rows; m + 2 MatMuls [T/m, D] x [D, D] with transformed weights; output transform).
F(m,3) needs (m + 2) / (3m) of the direct convolution's multiplications: 2/3 for
F(2,3), 1/2 for F(4,3); the transforms cost memory passes instead.

A measurement, not what bundles ship: the export keeps plain convolutions, because the
same model.onnx feeds TensorRT (which picks its own convolution algorithms and would
lose accuracy on F(4,3) in FP16) and the INT8 quantizer. Weights are random (speed and
relative error do not depend on them); the error column is the largest difference from
the direct graph over its largest output, to compare with the export's parity tolerance
(1e-4 + 1e-4 x max|ref|). Timings are medians of interleaved rounds.

    python bench/conv_winograd.py [--dim 2048] [--lengths 64 339 2615] [--threads N]
                                  [--min-repeat 5] [--budget 3]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infer_speed import cpu_isa, cpu_name, interleaved_medians, without_blas_overrides  # noqa: E402

# Winograd F(m, 3) for correlation y[i] = sum_k g[k] x[i + k]: Y = AT [(G g) * (BT d)]
# over input tiles d of m + 2 samples taken every m (Lavin & Gray 2016, points 0, +-1, +-2).
WINOGRAD = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float),
        np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float)),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                  [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], float),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], float)),
}


class _Graph:
    """Nodes and constants of one ONNX graph under construction."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, name: str, value: Any) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, name: str, *values: int) -> str:
        return self.const(name, np.array(values, np.int64))

    def op(self, op_type: str, inputs: list[str], output: str | list[str], **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, inputs, [output] if isinstance(output, str) else output, **attrs))
        return output if isinstance(output, str) else output[0]

    def combine(self, terms: list[tuple[float, str]], out: str) -> str:
        """sum(coef * tensor) with Add/Sub/Mul nodes (coefficients 0 skipped)."""
        acc = None
        for i, (coef, name) in enumerate(t for t in terms if t[0] != 0):
            if acc is not None and abs(coef) == 1:
                acc = self.op("Add" if coef > 0 else "Sub", [acc, name], f"{out}.{i}")
                continue
            term = name if coef == 1 else self.op("Mul", [name, self.const(f"{out}.c{i}", np.float32(coef))],
                                                  f"{out}.t{i}")
            acc = term if acc is None else self.op("Add", [acc, term], f"{out}.{i}")
        return self.op("Identity", [acc], out)

    def model(self, x_shape: list, y: str) -> Any:
        from onnx import TensorProto, helper

        self.op("Identity", [y], "y")
        graph = helper.make_graph(self.nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, x_shape)], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def direct_graph(weights: list[np.ndarray], biases: list[np.ndarray]) -> Any:
    """The export's form: Conv 2-D (height 1, pads 1) + bias, LeakyReLU 0.2, on [1, D, T]."""
    g = _Graph()
    axis = g.const("axis", np.array([2], np.int64))
    x = g.op("Unsqueeze", ["x", axis], "x4")
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        conv = g.op("Conv", [x, g.const(f"w{i}", w[:, :, None, :]), g.const(f"b{i}", b)], f"conv{i}",
                    kernel_shape=[1, 3], pads=[0, 1, 0, 1])
        x = g.op("LeakyRelu", [conv], f"act{i}", alpha=0.2)
    return g.model([1, weights[0].shape[1], "T"], g.op("Squeeze", [x, axis], "out"))


def winograd_graph(weights: list[np.ndarray], biases: list[np.ndarray], m: int) -> Any:
    """The same layers by Winograd F(m, 3) on time-major [1, T, D]."""
    bt, gm, at = WINOGRAD[m]
    dim = weights[0].shape[1]
    g = _Graph()
    i64 = g.ints
    one, mm, zero, end = i64("one", 1), i64("m", m), i64("zero", 0), i64("end", 2 ** 62)
    ax1, ax2 = i64("ax1", 1), i64("ax2", 2)
    t = g.op("Gather", [g.op("Shape", ["x"], "shape"), one], "T", axis=0)
    n = g.op("Div", [g.op("Add", [t, i64("m-1", m - 1)], "T+m-1"), mm], "n")  # tiles: ceil(T / m)
    # Pad 1 before and up to m * (n + 1) samples: n + 1 blocks of m.
    right = g.op("Add", [g.op("Sub", [g.op("Mul", [n, mm], "mn"), t], "mn-T"), i64("m-1'", m - 1)], "right")
    pads = g.op("Concat", [i64("pads0", 0, 1, 0, 0), right, zero], "pads", axis=0)
    blocks = g.op("Concat", [one, g.op("Add", [n, one], "n+1"), mm, i64("dim", dim)], "blocks", axis=0)
    x = "x"
    for li, (w, b) in enumerate(zip(weights, biases, strict=True)):
        p = f"l{li}."
        # Tile j reads samples m*j .. m*j + m + 1 of the padded input: phases 0..m-1 of block j
        # and phases 0, 1 of block j + 1.
        grid = g.op("Reshape", [g.op("Pad", [x, pads], p + "pad"), blocks], p + "grid")
        phases = [p + f"ph{k}" for k in range(m)]
        g.op("Split", [grid], phases, axis=2)
        rows = [g.op("Squeeze", [ph, ax2], ph + ".sq") for ph in phases]
        taps = [g.op("Slice", [r, zero, n, ax1], p + f"d{k}") for k, r in enumerate(rows)]
        taps += [g.op("Slice", [rows[k], one, end, ax1], p + f"d{m + k}") for k in range(2)]
        transformed = np.einsum("ak,oik->aio", gm, w.astype(np.float64)).astype(np.float32)  # (m + 2, I, O)
        products = []
        for r in range(m + 2):
            u = g.combine([(bt[r, c], taps[c]) for c in range(m + 2)], p + f"u{r}")
            products.append(g.op("MatMul", [u, g.const(p + f"G{r}", transformed[r])], p + f"M{r}"))
        outs = [g.op("Unsqueeze", [g.combine([(at[q, r], products[r]) for r in range(m + 2)], p + f"y{q}"), ax2],
                     p + f"y{q}.u") for q in range(m)]
        y = g.op("Reshape", [g.op("Concat", outs, p + "ys", axis=2), i64(p + "flat.shape", 1, -1, dim)], p + "flat")
        y = g.op("Add", [g.op("Slice", [y, zero, t, ax1], p + "crop"), g.const(p + "b", b)], p + "biased")
        x = g.op("LeakyRelu", [y], p + "act", alpha=0.2)
    return g.model([1, "T", dim], x)


def session(model: Any, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 339, 2615])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--min-repeat", type=int, default=5)
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timing per form and T")
    args = ap.parse_args(argv)
    without_blas_overrides()

    rng = np.random.default_rng(0)
    d = args.dim
    weights = [rng.normal(0.0, 1.0 / np.sqrt(3 * d), (d, d, 3)).astype(np.float32) for _ in range(2)]
    biases = [rng.normal(0.0, 0.1, d).astype(np.float32) for _ in range(2)]
    forms = {"direct": session(direct_graph(weights, biases), args.threads)}
    forms.update({f"F({m},3)": session(winograd_graph(weights, biases, m), args.threads) for m in WINOGRAD})
    print(f"two k = 3 convs {d} -> {d} (+ bias, LeakyReLU), ONNX Runtime CPU, {args.threads} threads; "
          f"{cpu_name()}, {os.cpu_count()} cores, ISA {cpu_isa()}")
    names = [n for n in forms if n != "direct"]
    print("| T | direct Conv 2-D | " + " | ".join(f"{n} (speed-up, rel. error)" for n in names) + " |")
    print("| ---: | ---: | " + " | ".join("---:" for _ in names) + " |")
    for t in args.lengths:
        x = rng.normal(0.0, 1.0, (1, d, t)).astype(np.float32)
        xt = np.ascontiguousarray(x.transpose(0, 2, 1))
        feeds = {n: {"x": x if n == "direct" else xt} for n in forms}
        ref = forms["direct"].run(None, feeds["direct"])[0]
        errors = {n: float(np.abs(forms[n].run(None, feeds[n])[0].transpose(0, 2, 1) - ref).max() / np.abs(ref).max())
                  for n in names}
        med = interleaved_medians({n: (lambda s=s, f=feeds[n]: s.run(None, f)) for n, s in forms.items()},
                                  args.min_repeat, args.budget)
        base = med["direct"][0]
        cells = [f"{med[n][0] * 1e3:.2f} ms ({base / med[n][0]:.2f}x, {errors[n]:.1e})" for n in names]
        print(f"| {t} | {base * 1e3:.2f} ms | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
