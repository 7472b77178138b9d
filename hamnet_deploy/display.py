"""Tables the commands print (rich): mAP per tIoU, parity reports, bundle files, the
accuracy guard. The layers below the CLI return these results as objects; only the
command line draws them."""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from hamnet_deploy.console import printable
from hamnet_deploy.runtime.evaluation import DetectionResult


def p(value: Any) -> str:
    """User-derived text (paths, names) made safe for rich markup and for printing."""
    return escape(printable(value))


def pct(x: float) -> str:
    """A fraction as a percentage with two decimals ('-' for NaN)."""
    return "-" if math.isnan(x) else f"{100 * x:.2f}"


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def map_table(result: DetectionResult, per_class: bool = False, title: str | None = None) -> Table:
    """mAP (%) per tIoU threshold and the average; with `per_class`, a row per class."""
    table = Table(title=p(title) if title else None, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("class (AP %)" if per_class else "tIoU", no_wrap=True)
    for t in result.thresholds:
        table.add_column(f"{t:g}", justify="right", no_wrap=True, min_width=5)
    table.add_column("Avg", justify="right", style="bold", no_wrap=True, min_width=5)
    table.add_row("mAP (%)", *(pct(m) for m in result.map), pct(result.average_map), style="bold")
    if per_class:
        table.add_section()
        for c, name in enumerate(result.classes):
            row = result.ap[:, c]
            avg = float("nan") if math.isnan(row[0]) else float(row.mean())
            table.add_row(p(name), *(pct(x) for x in row), pct(avg))
    return table


def print_summary(summary: Any, console: Any) -> None:
    """An `runtime.scoring.EvalSummary`: the mAP table and the classification mAP."""
    console.print(map_table(summary.detection))
    console.print(f"classification mAP {100 * summary.classification_map:.2f}")


def parity_table(report: Any) -> Table:
    """An `export.parity.ParityReport`, one row per (case, output)."""
    table = Table(title=p(report.name), title_justify="left")
    for col in ("case", "output", "max abs err", "max rel err", "|ref| max", ""):
        table.add_column(col, justify="left" if col in ("case", "output") else "right")
    for r in report.rows:
        mark = "[green]ok[/]" if r.ok else ("[red]FAIL[/]" if report.enforced else "[yellow]high[/]")
        table.add_row(p(r.case), r.output, f"{r.max_abs:.2e}", f"{r.max_rel:.2e}", f"{r.ref_scale:.3g}", mark)
    return table


def files_table(bundle: Any) -> Table:
    """A bundle's files: name, kind, size, sha256 prefix."""
    table = Table(title=f"bundle {p(bundle.path)}", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("kind", overflow="fold")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("sha256", no_wrap=True)
    rows = [(m.file, f"{kind} ({m.precision})", m.sha256) for kind, m in bundle.manifest.models.items()]
    rows += [(e.file, f"engine ({e.precision}, {e.gpu_name})", e.sha256) for e in bundle.engines]
    for name, kind, sha in rows:
        table.add_row(p(name), p(kind), human_size((bundle.path / name).stat().st_size), sha[:12])
    manifest = bundle.path / "manifest.json"
    table.add_row("manifest.json", "manifest", human_size(manifest.stat().st_size), "-")
    return table


def accuracy_table(scores: list[Any], title: str) -> Table:
    """The accuracy guard: each model's average mAP, mAP near tIoU 0.5, classification
    mAP and its drop against the first (the PyTorch reference)."""
    ref = scores[0]
    thresholds = ref.detection.thresholds
    mid = min(range(len(thresholds)), key=lambda i: abs(thresholds[i] - 0.5))
    table = Table(title=p(title), title_justify="left")
    for col in ("model", "avg mAP", f"mAP@{thresholds[mid]:g}", "cls mAP", "drop"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for i, sc in enumerate(scores):
        drop = "-" if i == 0 else f"{100 * (ref.average - sc.average):+.2f}"
        table.add_row(p(sc.name), f"{100 * sc.average:.2f}", f"{100 * sc.detection.map[mid]:.2f}",
                      f"{100 * sc.classification_map:.2f}", drop)
    return table
