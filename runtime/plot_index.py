"""`index.html` beside the PNGs of `hamnet detect --plot DIR`: one table row per video
with what its plot shows (length, detections, best class, true positives and missed
classes when ground truth is given) and a thumbnail linking to the full PNG. A static
page with no script and no outside resource, so it opens from disk in any browser."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

from hamnet_deploy.runtime.fileio import write_text_atomic
from hamnet_deploy.runtime.plotting import TP_TIOU, PlotSummary

INDEX = "index.html"
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 6px 10px; text-align: left; vertical-align: middle; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
img { width: 360px; border: 1px solid #ccc; }
.missed { color: #b2182b; }
"""


def _href(name: str) -> str:
    """A file name as a relative URL (percent-encoded UTF-8: spaces, '#', '?' and the rest)."""
    return "".join(ch if ch in _SAFE else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in name)


def write_index(folder: str | os.PathLike, plots: Sequence[PlotSummary], title: str = "hamnet detect") -> Path:
    """Write FOLDER/index.html for `plots` (atomically); returns its path."""
    folder = Path(folder)
    with_gt = any(s.ground_truth is not None for s in plots)
    head = ["video", "length", "detections", "best class (probability)"]
    if with_gt:
        head += ["ground-truth segments", f"drawn true positives (tIoU >= {TP_TIOU:g})", "missed classes"]
    head.append("plot")
    rows = []
    for s in plots:
        link = _href(s.file)
        prob = "" if s.top_probability is None else f" ({s.top_probability:.2f})"
        cells = [f"<td>{html.escape(s.video)}</td>",
                 f'<td class="num">{s.seconds:.1f} s ({s.snippets} snippets)</td>',
                 f'<td class="num">{s.detections}</td>',
                 f"<td>{html.escape(s.top_class)}{prob}</td>"]
        if with_gt:
            tp = "" if s.true_positives is None else f"{s.true_positives} of {s.drawn}"
            gt = "" if s.ground_truth is None else str(s.ground_truth)
            missed = html.escape(", ".join(s.missed_classes))
            cells += [f'<td class="num">{gt}</td>', f'<td class="num">{tp}</td>', f'<td class="missed">{missed}</td>']
        cells.append(f'<td><a href="{link}"><img src="{link}" alt="{html.escape(s.video)}" loading="lazy"></a></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    total = sum(s.detections for s in plots)
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"<p>{len(plots)} videos, {total} detections. Click a plot to open it.</p>\n"
            "<table>\n<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody>\n</table>\n</body>\n</html>\n")
    path = folder / INDEX
    write_text_atomic(path, page)
    return path
