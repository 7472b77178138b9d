"""Parity of an exported model against a reference (SPEC §6; Polygraphy-style: one
runner interface for every backend, a comparator with per-output tolerances).

A runner is a callable `features [B, T, D] float32 -> {"cas": ..., "attention": ...}`.
`compare` runs two runners on the same inputs over a grid of (batch, T) and records,
per output, the max absolute error and the max error relative to the reference's
largest magnitude. An output passes when `max_abs <= atol + rtol * max|ref|`.

After every ONNX export `check_onnx_parity` runs ONNX Runtime against PyTorch at
T = 1, 2, 37 (odd), 339 and 2,615 and batch 1 and 4: a "dynamic" axis that was
silently traced to a constant fails there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hamnet_deploy.runtime.errors import BackendUnavailable, BundleError

OUTPUTS = ("cas", "attention")
PARITY_LENGTHS = (1, 2, 37, 339, 2615)
"""T values of the parity run: smallest, 2, an odd one, a typical (THUMOS14 mean) and
the longest THUMOS14 video."""
LONG_LENGTHS = (2615,)
"""Skipped with `--skip-parity-long`."""
PARITY_BATCHES = (1, 4)
FP32_ATOL = 1e-4
FP32_RTOL = 1e-4

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


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

    def to_table(self) -> Any:
        """A rich Table of the rows."""
        from rich.table import Table

        table = Table(title=self.name, title_justify="left")
        for col in ("case", "output", "max abs err", "max rel err", "|ref| max", ""):
            table.add_column(col, justify="left" if col in ("case", "output") else "right")
        for r in self.rows:
            mark = "[green]ok[/]" if r.ok else ("[red]FAIL[/]" if self.enforced else "[yellow]high[/]")
            table.add_row(r.case, r.output, f"{r.max_abs:.2e}", f"{r.max_rel:.2e}", f"{r.ref_scale:.3g}", mark)
        return table


def compare_outputs(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], case: str,
                    atol: float, rtol: float) -> list[ParityRow]:
    """Rows comparing `got` with `ref`, one per output; a shape mismatch fails the row."""
    rows = []
    for name in OUTPUTS:
        a = np.asarray(ref[name], dtype=np.float64)
        b = np.asarray(got[name], dtype=np.float64)
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


def compare(reference: Runner, candidate: Runner, cases: Iterable[tuple[int, int]] | None = None, *,
            feature_dim: int, name: str, atol: float = FP32_ATOL, rtol: float = FP32_RTOL,
            inputs: Sequence[tuple[str, np.ndarray]] | None = None, enforced: bool = True,
            seed: int = 0, on_case: Callable[[str], None] | None = None) -> ParityReport:
    """Run both runners over `cases` (random features) and/or named `inputs`."""
    report = ParityReport(name, atol, rtol, enforced=enforced)
    work: list[tuple[str, Callable[[], np.ndarray]]] = []
    for b, t in cases or ():
        work.append((f"batch {b}, T {t}", lambda b=b, t=t: random_features(b, t, feature_dim, seed)))
    for label, x in inputs or ():
        work.append((label, lambda x=x: np.ascontiguousarray(x, dtype=np.float32)))
    for label, make in work:
        x = make()
        report.rows += compare_outputs(reference(x), candidate(x), label, atol, rtol)
        if on_case is not None:
            on_case(label)
    return report


# --------------------------------------------------------------------------- #
#                                   runners                                   #
# --------------------------------------------------------------------------- #
def torch_runner(model: Any, threads: int | None = None) -> Runner:
    """PyTorch eval-mode forward without a mask."""
    import torch

    model = model.eval()
    if threads:
        torch.set_num_threads(threads)

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            cas, att = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return {"cas": cas.float().cpu().numpy(), "attention": att.float().cpu().numpy()}

    return run


def ort_session(path: str | os.PathLike, providers: Sequence[str] | None = None,
                threads: int | None = None) -> Any:
    """An ONNX Runtime session on CPU (or the given providers), all graph optimisations on."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), opts, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{path}: ONNX Runtime cannot load the model ({first}); re-export it") from None


def ort_runner(path: str | os.PathLike, providers: Sequence[str] | None = None,
               threads: int | None = None) -> Runner:
    """ONNX Runtime runner of a `features -> cas, attention` model."""
    session = ort_session(path, providers, threads)
    names = [o.name for o in session.get_outputs()]

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        outs = session.run(None, {"features": np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(names, outs, strict=True))

    return run


def check_onnx_parity(model: Any, onnx_path: str | os.PathLike, *, skip_long: bool = False,
                      atol: float = FP32_ATOL, rtol: float = FP32_RTOL,
                      on_case: Callable[[str], None] | None = None) -> ParityReport:
    """ONNX Runtime (FP32) against PyTorch over the parity grid; does not raise."""
    return compare(torch_runner(model), ort_runner(onnx_path), parity_cases(skip_long),
                   feature_dim=int(model.feature_dim), name="ONNX Runtime vs PyTorch (FP32)",
                   atol=atol, rtol=rtol, on_case=on_case)


# --------------------------------------------------------------------------- #
#                       task metric (the accuracy guard)                      #
# --------------------------------------------------------------------------- #
@dataclass
class TaskScore:
    """Detection and classification mAP of one model on a dataset split."""

    name: str
    thresholds: tuple[float, ...]
    map_per_threshold: list[float]
    average_map: float
    classification_map: float
    reference: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"thresholds": list(self.thresholds), "mAP": self.map_per_threshold,
                "average_mAP": self.average_map, "classification_mAP": self.classification_map}


def run_videos(runner: Runner, features: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(cas (T, C+1), attention (T,)) of each video, one video per call (batch 1, whole T)."""
    out = []
    for x in features:
        res = runner(np.ascontiguousarray(x, dtype=np.float32)[None])
        out.append((res["cas"][0], res["attention"][0, :, 0]))
    return out


def score_outputs(name: str, outputs: Sequence[tuple[np.ndarray, np.ndarray]], data: Any, post: Any,
                  thresholds: Sequence[float], reference: bool = False) -> TaskScore:
    """Localize every video of `data` (a training.data.WtalDataset) from its outputs with
    the runtime's post-processing and evaluate against its ground truth (SPEC §4-5)."""
    from hamnet_deploy.runtime.evaluation import evaluate_classification, evaluate_detection
    from hamnet_deploy.runtime.postprocess import localize_many, video_scores

    items = [(v, cas, att, data.annotations.videos[v].duration)
             for v, (cas, att) in zip(data.names, outputs, strict=True)]
    dets = localize_many(items, post, data.classes)
    scores = {v: video_scores(cas, att, post) for v, (cas, att) in zip(data.names, outputs, strict=True)}
    sub = data.annotations.select(None, [v for v in data.annotations.videos if v not in set(data.names)])
    result = evaluate_detection(sub, dets, thresholds)
    per = [float(x) for x in result.map]
    return TaskScore(name, tuple(float(t) for t in thresholds), per, float(result.average_map),
                     float(evaluate_classification(sub, scores)), reference)


def accuracy_guard(reference: TaskScore, candidates: Sequence[TaskScore], max_drop: float) -> list[str]:
    """Messages for each candidate whose average mAP is more than `max_drop` points
    (percentage points, mAP x 100) below the reference's."""
    bad = []
    for c in candidates:
        drop = 100.0 * (reference.average_map - c.average_map)
        if not np.isfinite(drop) or drop > max_drop:
            bad.append(f"{c.name}: average mAP {100 * c.average_map:.2f} vs {100 * reference.average_map:.2f} "
                       f"({reference.name}), a drop of {drop:.2f} points > --max-drop {max_drop:g}")
    return bad
