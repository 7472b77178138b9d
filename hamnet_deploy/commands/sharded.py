"""`hamnet detect` at archive scale: results as a resumable folder of JSON-lines shards
(`--shards DIR`, `--shard I/N`, `--skip-existing`), on a Ray cluster (`--ray ADDRESS`),
and `--merge DIR` into one results file. The work is `runtime.shards` (local) and
`runtime.ray_detect` (Ray); this module checks the options and prints."""

from __future__ import annotations

import time
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


def run_ray(detector: Any, paths: list[str], *, address: str, workers: int | None, threads: int | None,
            options: dict[str, Any], model: Path, recursive: bool, shards: Path | None, out: Path | None,
            classes_out: Path | None, skip_existing: bool, durations: Any, force: bool, quiet: bool,
            as_json: bool) -> int:
    """`--ray ADDRESS`: the pending inputs on a Ray actor pool into the shard folder, then
    merged into --out; exit code."""
    from hamnet_deploy.runtime import ray_detect as rd
    from hamnet_deploy.runtime import shards as sh
    from hamnet_deploy.runtime.errors import DataError
    from hamnet_deploy.runtime.fileio import check_output
    from hamnet_deploy.runtime.results import VideoResult

    rd.require_ray()
    if workers is not None and not 1 <= workers <= 100_000:
        raise ConfigError(f"--workers {workers}: must be 1 to 100000 (actors, each with one runner)")
    sources, lost = rd.list_inputs(paths, recursive)
    if not sources:
        detail = "; ".join(reason for _, reason in lost[:3])
        raise DataError(f"no feature files to run ({detail}); give .npy/.npz files, folders, globs or URLs")
    inputs = [model, *[Path(s) for _, s in sources if not rd.is_url(s)]]
    check_output(out, "--out", inputs, force)
    check_output(classes_out, "--out-classes", inputs, force)
    device = str(options.get("device", "auto"))
    gpu = _gpu_actors(str(options.get("backend", "auto")), device)
    folder = sh.open_folder(shards_folder(shards, out, "--ray"), sh.detector_meta(
        detector, f"ray:{options.get('backend', 'auto')}:{device}"))
    todo, skipped = sh.pending(sources, folder, skip_existing)
    cpu_workers = workers or 1
    threads = threads or (rd.default_threads(cpu_workers) if address == "local" else 1)
    ray, started, init_s = rd.start(address, 0 if gpu else cpu_workers * threads)
    if gpu:  # one actor per GPU of the cluster unless told otherwise
        workers = workers or max(1, int(ray.cluster_resources().get("GPU", 1)))
    workers = workers or cpu_workers
    console.print(f"[bold]ray[/] {p(address)}: {workers} {'GPU' if gpu else 'CPU'} worker(s)"
                  + ("" if gpu else f", {threads} thread(s) each") + f"; {len(todo)} videos to run, {skipped} "
                  f"already in {p(folder)} (Ray started in {init_s:.1f} s)", highlight=False, soft_wrap=True)
    bar = Progress(TextColumn("[bold]detect (ray)[/]"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=err_console, transient=True,
                   disable=quiet or len(todo) < 2)
    counts = {"ok": 0, "failed": 0}
    t0 = time.perf_counter()
    try:
        with sh.PartWriter(folder) as writer, bar:
            task = bar.add_task("videos", total=len(todo), rate="- videos/s")
            writer.write([sh.record(VideoResult.failure(name, reason, detector.info.classes), name, video=name)
                          for name, reason in lost])

            def write(lines: list[dict]) -> None:
                writer.write(lines)
                for line in lines:
                    counts["failed" if line["status"] == "failed" else "ok"] += 1
                done_n = counts["ok"] + counts["failed"]
                bar.update(task, completed=done_n, rate=f"{done_n / max(time.perf_counter() - t0, 1e-9):.1f} videos/s")

            if todo:
                rd.run(ray, todo, model=str(model.resolve()), options={**options, "threads": threads},
                       workers=workers, cpus_per_worker=0 if gpu else threads, gpus_per_worker=1 if gpu else 0,
                       durations=durations, write=write)
    finally:
        if started:
            ray.shutdown()
    seconds = time.perf_counter() - t0
    report(folder, counts["ok"], counts["failed"] + len(lost), skipped, seconds, as_json)
    code = 1 if counts["failed"] or lost else 0
    if out is None and classes_out is None:
        return code
    return merge_into(folder, out, classes_out, True, as_json) or code


def _gpu_actors(backend: str, device: str) -> bool:
    """Whether each actor takes a GPU: a CUDA `--device`, or a backend that runs only on one."""
    from hamnet_deploy.runtime.backends import registry
    from hamnet_deploy.runtime.devices import parse_device

    if parse_device(device)[0] == "cuda":
        return True
    return backend != "auto" and registry.get(backend).devices == ("cuda",)
