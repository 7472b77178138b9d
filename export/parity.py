"""Parity of an exported model against a reference (SPEC §6; Polygraphy-style): two
runners of the one runner contract (`runtime.backends.base.BaseRunner`) run the same
inputs, a comparator with per-output tolerances records, per output, the max absolute
error and the max error relative to the reference's largest magnitude. An output passes
when `max_abs <= atol + rtol * max|ref|`.

After every ONNX export `check_onnx_parity` runs ONNX Runtime against PyTorch at
T = 1, 2, 37 (odd), 339 and 2,615 and batch 1 and 4: a "dynamic" axis that was
silently traced to a constant fails there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hamnet_deploy.runtime.backends.base import BaseRunner
from hamnet_deploy.runtime.errors import BundleError

OUTPUTS = ("cas", "attention")
PARITY_LENGTHS = (1, 2, 37, 339, 2615)
"""T values of the parity run: smallest, 2, an odd one, a typical (THUMOS14 mean) and
the longest THUMOS14 video."""
LONG_LENGTHS = (2615,)
"""Skipped with `--skip-parity-long`."""
PARITY_BATCHES = (1, 4)
FP32_ATOL = 1e-4
FP32_RTOL = 1e-4

@dataclass
class ParityRow:
    """One (case, output) comparison."""

    case: str
    output: str
    max_abs: float
    max_rel: float
    ref_scale: float
    ok: bool


@dataclass
class ParityReport:
    """Rows of a comparison and its tolerances."""

    name: str
    atol: float
    rtol: float
    rows: list[ParityRow] = field(default_factory=list)
    enforced: bool = True

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def worst(self, output: str | None = None) -> tuple[float, float]:
        """(max abs error, max relative error) over the rows (of one output)."""
        rows = [r for r in self.rows if output is None or r.output == output]
        if not rows:
            return 0.0, 0.0
        return max(r.max_abs for r in rows), max(r.max_rel for r in rows)

    def failures(self) -> list[ParityRow]:
        return [r for r in self.rows if not r.ok]

    def summary(self) -> str:
        parts = []
        for out in OUTPUTS:
            a, r = self.worst(out)
            parts.append(f"{out}: max abs {a:.2e}, max rel {r:.2e}")
        return f"{self.name}: {len(self.rows) // max(1, len(OUTPUTS))} cases; " + "; ".join(parts)

    def raise_if_failed(self) -> None:
        """BundleError naming the worst failing case when an enforced tolerance is exceeded."""
        bad = self.failures()
        if self.enforced and bad:
            worst = max(bad, key=lambda r: r.max_abs - self.atol - self.rtol * r.ref_scale)
            raise BundleError(
                f"{self.name}: outputs differ at {worst.case} ({worst.output}: max abs error "
                f"{worst.max_abs:.3g}, relative {worst.max_rel:.3g}; tolerance {self.atol:g} + "
                f"{self.rtol:g} x {worst.ref_scale:.3g}) in {len(bad)} of {len(self.rows)} checks; "
                "the export is wrong: try another --opset and report the problem")


def compare_outputs(ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray], case: str,
                    atol: float, rtol: float) -> list[ParityRow]:
    """Rows comparing `got` (cas, attention) with `ref`, one per output; a shape mismatch
    fails the row."""
    rows = []
    for name, a, b in zip(OUTPUTS, ref, got, strict=True):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            rows.append(ParityRow(f"{case} (shape {b.shape} != {a.shape})", name, float("inf"),
                                  float("inf"), 0.0, False))
            continue
        scale = float(np.abs(a).max()) if a.size else 0.0
        err = float(np.abs(a - b).max()) if a.size else 0.0
        finite = bool(np.isfinite(b).all())
        rel = err / max(scale, 1e-12)
        ok = finite and err <= atol + rtol * scale
        rows.append(ParityRow(case, name, err if finite else float("inf"), rel if finite else float("inf"),
                              scale, ok))
    return rows


def random_features(batch: int, t: int, dim: int, seed: int = 0) -> np.ndarray:
    """Float32 [batch, t, dim] shaped like I3D features (non-negative, about unit scale)."""
    rng = np.random.default_rng([seed, batch, t, dim])
    return np.abs(rng.standard_normal((batch, t, dim), dtype=np.float32))


def parity_cases(skip_long: bool = False, lengths: Sequence[int] = PARITY_LENGTHS,
                 batches: Sequence[int] = PARITY_BATCHES) -> list[tuple[int, int]]:
    """(batch, T) pairs of the parity grid."""
    ts = [t for t in lengths if not (skip_long and t in LONG_LENGTHS)]
    return [(b, t) for t in ts for b in batches]


def compare(reference: BaseRunner, candidate: BaseRunner, cases: Iterable[tuple[int, int]] | None = None, *,
            feature_dim: int, name: str, atol: float = FP32_ATOL, rtol: float = FP32_RTOL,
            inputs: Sequence[tuple[str, np.ndarray]] | None = None, enforced: bool = True,
            seed: int = 0, on_case: Callable[[str], None] | None = None) -> ParityReport:
    """Run both runners over `cases` (random features) and/or named `inputs`. Runners not
    yet active are activated for the comparison and deactivated after it."""
    report = ParityReport(name, atol, rtol, enforced=enforced)
    work: list[tuple[str, Callable[[], np.ndarray]]] = []
    for b, t in cases or ():
        work.append((f"batch {b}, T {t}", lambda b=b, t=t: random_features(b, t, feature_dim, seed)))
    for label, x in inputs or ():
        work.append((label, lambda x=x: np.ascontiguousarray(x, dtype=np.float32)))
    with contextlib.ExitStack() as stack:
        for runner in (reference, candidate):
            if not runner.is_active:
                stack.enter_context(runner)
        for label, make in work:
            x = make()
            report.rows += compare_outputs(reference.infer(x), candidate.infer(x), label, atol, rtol)
            if on_case is not None:
                on_case(label)
    return report


def check_onnx_parity(model: Any, onnx_path: str | os.PathLike, *, skip_long: bool = False,
                      atol: float = FP32_ATOL, rtol: float = FP32_RTOL,
                      on_case: Callable[[str], None] | None = None) -> ParityReport:
    """ONNX Runtime (FP32, CPU) against PyTorch over the parity grid; does not raise."""
    from hamnet_deploy.runtime.backends.onnxruntime import OnnxRuntimeRunner
    from hamnet_deploy.training.torch_runner import TorchRunner

    return compare(TorchRunner.from_model(model), OnnxRuntimeRunner(onnx_path, feature_dim=int(model.feature_dim)),
                   parity_cases(skip_long), feature_dim=int(model.feature_dim),
                   name="ONNX Runtime vs PyTorch (FP32)", atol=atol, rtol=rtol, on_case=on_case)
