"""`hamnet detect` at archive scale: results as a resumable folder of JSON-lines shards
(`--shards DIR`, `--shard I/N`, `--skip-existing`), on a Ray cluster (`--ray ADDRESS`),
and `--merge DIR` into one results file. The work is `runtime.shards` (local) and
`runtime.ray_detect` (Ray); this module checks the options and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hamnet_deploy.console import console, err_console
from hamnet_deploy.display import p
from hamnet_deploy.reporting import json_line
from hamnet_deploy.runtime.errors import ConfigError


def shards_folder(shards: Path | None, out: Path | None, what: str) -> Path:
    """--shards DIR, else OUT's name with `.shards` (results.json -> results.shards)."""
    if shards is not None:
        return shards
    if out is None:
        raise ConfigError(f"{what} writes results into a --shards folder: add --shards DIR (or --out R.json, "
                          "whose R.shards folder is then used)")
    return out.with_suffix(".shards")


def check_options(*, shard: str | None, out: Path | None, plot: Path | None, ray: str | None) -> tuple | None:
    """The shard I/N (or None); refuses what a sharded run cannot do."""
    from hamnet_deploy.runtime.shards import parse_shard

    if plot is not None:
        raise ConfigError("--plot draws from one process's results: run without --shards/--shard/--ray, or plot "
                          "a subset of the videos")
    if shard is not None and ray is not None:
        raise ConfigError("--shard splits the work between processes you start; with --ray, Ray splits it: drop "
                          "--shard")
    if shard is not None and out is not None:
        raise ConfigError(f"--out with --shard {shard}: each shard writes only its part; merge them afterwards "
                          "with hamnet detect --merge DIR --out R.json")
    return parse_shard(shard) if shard is not None else None


def run_local(detector: Any, items: list, folder: Path, *, shard: tuple | None, skip_existing: bool,
              durations: Any, quiet: bool) -> tuple[int, int, int, float]:
    """Run the pending items of this process into `folder`: (written, failed, skipped, seconds)."""
    from hamnet_deploy.runtime import shards as sh

    folder = sh.open_folder(folder, sh.detector_meta(detector))
    todo, skipped = sh.pending(items, folder, skip_existing, shard)
    bar = Progress(TextColumn("[bold]detect[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err_console, transient=True, disable=quiet or len(todo) < 2)
    with bar:
        task = bar.add_task("videos", total=len(todo))
        written, failed, seconds = sh.run_into(detector, todo, folder, durations=durations,
                                               on_video=lambda: bar.advance(task))
    return written, failed, skipped, seconds


def report(folder: Path, written: int, failed: int, skipped: int, seconds: float, as_json: bool) -> None:
    rate = (written + failed) / seconds if seconds > 0 else 0.0
    console.print(f"{written + failed} videos into {p(folder)} in {seconds:.2f} s ({rate:.1f} videos/s): "
                  f"{written} ok, {failed} failed, {skipped} already there", highlight=False, soft_wrap=True)
    if as_json:
        json_line({"event": "detect.shards", "shards": str(folder), "written": written, "failed": failed,
                   "skipped": skipped, "seconds": round(seconds, 4)})


def merge_into(folder: Path, out: Path | None, classes_out: Path | None, force: bool, as_json: bool) -> int:
    """`--merge DIR`: the folder's results into --out (and --out-classes); exit code."""
    from hamnet_deploy.runtime.fileio import check_output
    from hamnet_deploy.runtime.shards import merge

    if out is None and classes_out is None:
        raise ConfigError(f"--merge {folder}: add --out R.json (or .csv) for the merged results")
    check_output(out, "--out", [folder], force)
    check_output(classes_out, "--out-classes", [folder], force)
    results = merge(folder)
    if out is not None:
        results.write(out)
    if classes_out is not None:
        results.to_classification(classes_out)
    failed = results.failed
    ran = len(results) - len(failed)
    written = ", ".join(str(x) for x in (out, classes_out) if x is not None)
    console.print(f"merged {p(folder)}: {ran} videos, {len(results.detections)} detections, {len(failed)} failed "
                  f"inputs -> {p(written)}", highlight=False, soft_wrap=True)
    if as_json:
        json_line({"event": "detect.merge", "shards": str(folder), "videos": ran, "failed": len(failed),
                   "detections": len(results.detections), "out": None if out is None else str(out)})
    return 1 if failed else 0
