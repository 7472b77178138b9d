"""Rich tables of evaluation results, shared by `hamnet eval`, the trainer and the benches."""

from __future__ import annotations

import math

from rich import box
from rich.table import Table

from hamnet_deploy.runtime.evaluation import DetectionResult


def pct(x: float) -> str:
    """A fraction as a percentage with two decimals ('-' for NaN)."""
    return "-" if math.isnan(x) else f"{100 * x:.2f}"


def map_table(result: DetectionResult, per_class: bool = False, title: str | None = None) -> Table:
    """mAP (%) per tIoU threshold and the average; with `per_class`, a row per class."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
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
            table.add_row(name, *(pct(x) for x in row), pct(avg))
    return table
