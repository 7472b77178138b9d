"""`hamnet detect PATH...`: actions (start, end, class, score) in feature files, with an
exported bundle (ONNX Runtime / TensorRT) or a checkpoint (PyTorch), never needing
PyTorch for a bundle.

Steps: find the files -> pick and start a backend (`runtime.backends.select`) -> the one
files -> outputs -> detections loop (`runtime.detect`: each file read and checked, a bad
one reported and skipped; exact chunked/batched inference; NumPy post-processing with
the bundle's settings, overridable) -> tables, results file, plots. Exit code 0, or 1 when
any file failed (the good files' results are still written), or 2 for a usage error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from hamnet_deploy.console import backend_names, console, err_console, handle_errors
from hamnet_deploy.display import p
from hamnet_deploy.reporting import json_line
from hamnet_deploy.runtime.errors import ConfigError, DataError
from hamnet_deploy.runtime.results_file import ResultsFile

RESULT_SUFFIXES = (".json", ".csv")


class _Rate(ProgressColumn):
    """videos/s of a progress task."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} videos/s" if speed else "- videos/s", style="progress.data.speed")


# --------------------------------------------------------------------------- #
#                              settings helpers                               #
# --------------------------------------------------------------------------- #
def _check_out(out: Path | None) -> None:
    if out is not None and out.suffix.lower() not in RESULT_SUFFIXES:
        raise ConfigError(f"--out {out}: use a .json (ActivityNet results format) or .csv file name")


def _ground_truth(annotations: Path | None) -> Any:
    if annotations is None:
        return None
    if not annotations.exists():
        raise DataError(f"--annotations {annotations}: not found; give a dataset folder, its annotation JSON or a W-TALC annotation folder")
    from hamnet_deploy.training.data import load_ground_truth

    return load_ground_truth(annotations)


def _gt_for(gt: Any, video: str, classes: Sequence[str]) -> Any:
    """Ground truth of one video with labels mapped to the model's class indices (-1: unknown)."""
    if gt is None or video not in gt.videos:
        return None
    ann = gt.videos[video]
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index.get(gt.classes[c], -1) for c in ann.labels.tolist()], dtype=np.int64)
    return SimpleNamespace(segments=ann.segments, labels=labels)


# --------------------------------------------------------------------------- #
#                                   tables                                    #
# --------------------------------------------------------------------------- #
def _detail_table(video: str, T: int, dets: Any, rows: int) -> Table:
    ordered = dets.select(np.argsort(-dets.score, kind="stable"))
    table = Table(title=f"{p(video)}: {len(dets)} detections, T = {T}", title_justify="left")
    for col in ("#", "class", "start (s)", "end (s)", "score"):
        table.add_column(col, justify="left" if col == "class" else "right")
    shown = len(ordered) if rows <= 0 else min(rows, len(ordered))
    names = ordered.label_names
    for i in range(shown):
        table.add_row(str(i + 1), p(names[i]), f"{ordered.t_start[i]:.2f}", f"{ordered.t_end[i]:.2f}",
                      f"{ordered.score[i]:.4f}")
    if shown < len(ordered):
        table.caption = f"{len(ordered) - shown} more (--rows 0 shows all, --out writes all)"
    return table


def _summary_table(rows_seen: Sequence[tuple], detections: int, rows: int) -> Table:
    table = Table(title=f"{len(rows_seen)} videos, {detections} detections", title_justify="left")
    for col in ("video", "T", "detections", "top class", "top score"):
        table.add_column(col, justify="left" if col in ("video", "top class") else "right", overflow="fold")
    shown = rows_seen if rows <= 0 else rows_seen[:rows]
    for v, T, n, top, score in shown:
        table.add_row(p(v), str(T), str(n), p(top), "-" if score is None else f"{score:.4f}")
    if len(shown) < len(rows_seen):
        table.caption = f"{len(rows_seen) - len(shown)} more videos (--rows 0 shows all, --out writes all)"
    return table


# --------------------------------------------------------------------------- #
#                                  the command                                #
# --------------------------------------------------------------------------- #
def run_detect(paths: Sequence[str], *, model: Path | None, backend: str, device: str, batch_size: int,
               max_t: int | None, threads: int | None, post_sets: Sequence[str], post_flags: dict[str, Any],
               out: Path | None, plot: Path | None, annotations: Path | None, cas_mode: str, rows: int,
               plot_top: int = 5,
               classes_out: Path | None = None, as_json: bool = False, quiet: bool = False,
               recursive: bool, fp16: bool, force: bool = False, shards: Path | None = None,
               shard: str | None = None, skip_existing: bool = False, merge: Path | None = None,
               ray: str | None = None, workers: int | None = None) -> int:
    """The command without argument parsing; returns the exit code (0, or 1 when a file failed)."""
    from hamnet_deploy.commands import sharded
    from hamnet_deploy.runtime.backends.select import resolve_model
    from hamnet_deploy.runtime.detector import Detector
    from hamnet_deploy.runtime.feature_files import video_id
    from hamnet_deploy.runtime.fileio import check_output

    _check_out(out)
    if merge is not None:
        if paths:
            raise ConfigError(f"--merge {merge} merges results already written: drop the feature paths")
        return sharded.merge_into(merge, out, classes_out, force, as_json)
    if not paths:
        raise ConfigError("no feature files given: pass .npy/.npz files, folders or globs (or --merge DIR)")
    is_sharded = shards is not None or shard is not None or skip_existing or ray is not None
    shard_index = sharded.check_options(shard=shard, out=out, plot=plot, ray=ray) if is_sharded else None
    if plot is not None:
        from hamnet_deploy.runtime.plotting import CAS_MODES, require_matplotlib

        require_matplotlib()
        if cas_mode not in CAS_MODES:
            raise ConfigError(f"--plot-cas {cas_mode!r}: choose one of {', '.join(CAS_MODES)}")
        if not 1 <= plot_top <= 1000:
            raise ConfigError(f"--plot-top {plot_top}: must be 1 to 1000 (detections drawn per class)")
        if plot.exists() and not plot.is_dir():
            raise ConfigError(f"--plot {plot}: exists and is not a folder; give a folder for the PNG files")
    if rows < 0:
        raise ConfigError(f"--rows {rows}: must be >= 0 (0 shows all)")
    gt = _ground_truth(annotations)
    model_path = resolve_model(model)
    ort_trt = None
    if backend == "onnxruntime-tensorrt":
        from hamnet_deploy.runtime.backends.onnxruntime import OrtTensorRTOptions
        from hamnet_deploy.runtime.profile import Profile

        top_t = max_t or Profile().max_t
        ort_trt = OrtTensorRTOptions(fp16=fp16, profile=Profile(opt_t=min(512, top_t), max_t=top_t,
                                                                max_batch=batch_size))
    elif fp16:
        raise ConfigError("--fp16 applies to ONNX Runtime's TensorRT provider: add --backend onnxruntime-tensorrt "
                          "(TensorRT engines carry their precision in the bundle)")
    with console.status(f"starting a backend for {p(model_path)}"):
        detector = Detector(model_path, backend=backend, device=device, threads=threads, batch_size=batch_size,
                            max_t=max_t, sets=post_sets, ort_trt=ort_trt, **post_flags)
    with detector:
        if ray is not None:
            gt_durations = {v: a.duration for v, a in gt.videos.items()} if gt is not None else None
            console.print(f"[bold]model[/] {p(model_path)}; the workers choose their backend ({p(backend)}, device "
                          f"{p(device)})", highlight=False, soft_wrap=True)
            return sharded.run_ray(detector, list(paths), address=ray, workers=workers, threads=threads,
                                   options={"backend": backend, "device": device, "batch_size": batch_size,
                                            "max_t": max_t, "sets": list(post_sets), **post_flags},
                                   model=model_path, recursive=recursive, shards=shards, out=out,
                                   classes_out=classes_out, skip_existing=skip_existing, durations=gt_durations,
                                   force=force, quiet=quiet or as_json, as_json=as_json)
        items = detector.expand(paths, recursive=recursive)
        files = [src for _, src in items if isinstance(src, Path)]
        if not files:
            detail = "; ".join(reason for _, reason in detector.missing(items)[:3])
            raise DataError(f"no feature files to run ({detail}); give .npy/.npz files, folders or globs")
        inputs = [annotations, model_path, *files]
        check_output(out, "--out", inputs, force)
        check_output(classes_out, "--out-classes", inputs, force)
        if plot is not None:
            from hamnet_deploy.runtime.plot_index import INDEX

            check_output(plot, "--plot", inputs, force, [plot / f"{video_id(f)}.png" for f in files] + [plot / INDEX])
        selection, info, post = detector.selection, detector.info, detector.post
        console.print(f"[bold]backend[/] {p(selection.describe())}", soft_wrap=True, highlight=False)
        console.print(f"[dim]why: {p(selection.reason)}[/]", soft_wrap=True, highlight=False)
        durations = {v: a.duration for v, a in gt.videos.items()} if gt is not None else None
        if is_sharded:
            folder = sharded.shards_folder(shards, out, "--shard/--skip-existing" if ray is None else "--ray")
            written, failed_n, skipped, seconds = sharded.run_local(
                detector, items, folder, shard=shard_index, skip_existing=skip_existing, durations=durations,
                quiet=quiet or as_json)
            sharded.report(folder, written, failed_n, skipped, seconds, as_json)
            code = 1 if failed_n else 0
            if out is None and classes_out is None:
                return code
            return sharded.merge_into(folder, out, classes_out, True, as_json) or code
        bar = Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(), _Rate(),
                       TimeElapsedColumn(), console=err_console, transient=True,
                       disable=len(items) < 2 or quiet or as_json)
        seen = _Seen(info.classes, keep_classes=classes_out is not None)
        with contextlib.ExitStack() as stack:  # the results file is renamed into place only when all went well
            writer = stack.enter_context(ResultsFile(out)) if out is not None else None
            stack.enter_context(bar)
            task = bar.add_task("detect", total=len(items))
            drawing = bar.add_task("plot", total=len(files)) if plot is not None else None
            for chunk in detector.stream(items, chunk=CHUNK, durations=durations,
                                         on_video=lambda: bar.advance(task)):
                if writer is not None:
                    writer.add(chunk)
                seen.add(chunk)
                if plot is not None:
                    seen.plots += _plots(plot, chunk, info, post, gt, cas_mode, plot_top,
                                         lambda: bar.advance(drawing))
    if plot is not None and seen.plots:
        from hamnet_deploy.runtime.plot_index import INDEX, write_index

        write_index(plot, seen.plots, f"hamnet detect: {len(seen.plots)} videos")
    order = [v for v, *_ in seen.rows]
    if quiet:
        pass  # -q: no tables
    elif len(order) == 1:
        console.print(_detail_table(order[0], seen.rows[0][1], seen.last, rows))
    elif order:
        console.print(_summary_table(seen.rows, seen.detections, rows))
    stats = seen.stats
    seconds = seen.network_seconds + seen.post_seconds
    rate = len(order) / seconds if seconds > 0 else 0.0
    console.print(f"{_count(len(order), 'video')} ({stats.useful_snippets} snippets) in {seconds:.2f} s, "
                  f"{rate:.1f} videos/s: network {stats.network_seconds:.2f} s ({stats.batches} batches, "
                  f"{stats.windows} windows, {100 * stats.overhead:.1f} % overlap/padding), post-processing "
                  f"{seen.post_seconds:.3f} s", highlight=False)
    failed = seen.failed
    if out is not None:
        extra = f", {len(failed)} failed inputs recorded" if failed else ""
        console.print(f"wrote {p(out)} ({len(order)} videos, {seen.detections} detections{extra})", highlight=False)
    if classes_out is not None:
        from hamnet_deploy.runtime.fileio import write_json_atomic

        write_json_atomic(classes_out, seen.classification())
        console.print(f"wrote {p(classes_out)} (class probabilities of {len(order)} videos)", highlight=False)
    if plot is not None and seen.plots:
        from hamnet_deploy.runtime.plot_index import INDEX

        console.print(f"wrote {len(seen.plots)} plots and {p(plot / INDEX)}", highlight=False, soft_wrap=True)
    if as_json:
        json_line({"event": "detect.done", "videos": len(order), "detections": seen.detections,
                   "seconds": round(seconds, 4), "out": None if out is None else str(out),
                   "per_video": [{"video": v, "snippets": t, "detections": n} for v, t, n, *_ in seen.rows],
                   "failed": [{"input": name, "reason": reason} for name, reason in failed]})
    for _name, reason in failed:
        err_console.print(f"[bold red]failed:[/] {p(reason)}", soft_wrap=True, highlight=False)
    if failed:
        err_console.print(f"[bold red]{len(failed)} of {len(items)} inputs failed[/]; the other "
                          f"{len(order)} ran", highlight=False)
        return 1
    return 0


CHUNK = 256
"""Videos per step of the detection loop: what is held in memory at once."""


class _Seen:
    """What the command keeps of a streamed run: a small row per video, totals, the
    class probabilities (C numbers a video) and the last chunk's detections."""

    def __init__(self, classes: Sequence[str], keep_classes: bool = False) -> None:
        from hamnet_deploy.runtime.inference import InferenceStats

        self.classes = tuple(classes)
        self.rows: list[tuple[str, int, int, str, float | None]] = []  # video, T, detections, top class, score
        self.failed: list[tuple[str, str]] = []
        self.detections = 0
        self.stats = InferenceStats()
        self.network_seconds = self.post_seconds = 0.0
        self.last: Any = None
        self.plots: list[Any] = []
        self._classes: dict[str, Any] = {}
        self.keep_classes = keep_classes  # --out-classes: C probabilities a video

    def add(self, chunk: Any) -> None:
        import dataclasses

        for r in chunk:
            if not r.ok:
                continue
            d = r.detections
            best = int(np.argmax(d.score)) if len(d) else None
            self.rows.append((r.video, r.snippets, len(d), d.classes[d.label[best]] if best is not None else "-",
                              float(d.score[best]) if best is not None else None))
        self.failed += chunk.failed
        self.last = chunk.detections  # the table of the chunk's videos (the single video's, for one)
        self.detections += len(self.last)
        run = chunk.run
        for f in dataclasses.fields(self.stats):
            setattr(self.stats, f.name, getattr(self.stats, f.name) + getattr(run.stats, f.name))
        self.network_seconds += run.network_seconds
        self.post_seconds += run.post_seconds
        if self.keep_classes:
            self._classes.update(chunk.classification_entries())

    def classification(self) -> dict[str, Any]:
        from hamnet_deploy.runtime.detections import activitynet_document

        return activitynet_document(self._classes, self.failed)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _plots(folder: Path, chunk: Any, info: Any, post: Any, gt: Any, cas_mode: str, top: int,
           tick: Any) -> list[Any]:
    """One PNG per video of a chunk; their summaries (for the index page)."""
    from hamnet_deploy.runtime.plotting import plot_video

    run, summaries = chunk.run, []
    for v in run.videos:
        cas, att = run.outputs[v]
        summaries.append(plot_video(
            folder / f"{v}.png", v, cas, att, run.detections.for_video(v), post.snippet_seconds,
            ground_truth=_gt_for(gt, v, info.classes), thresholds=post.action_thresholds, cas_mode=cas_mode,
            class_probs=run.video_scores[v], class_threshold=post.class_threshold, top=top))
        tick()
    return summaries


@handle_errors
def detect_command(
    paths: list[str] = typer.Argument(None, help="Feature files (.npy / .npz, T x D), folders of them, or globs "
                                      "('feats/*.npy', 'feats/**/*.npz'). Video id = file name without suffix."),
    model: Path = typer.Option(None, "--model", "-m", help="Bundle folder from hamnet export (default: "
                               "$HAMNET_MODEL, else ./bundle), or a training run folder (runs with PyTorch)."),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto (TensorRT engine matching this GPU > ONNX "
                                "Runtime CUDA > ONNX Runtime CPU) or one of: " + ", ".join(backend_names()) + "."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or N (a GPU index)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Windows per network call (videos of equal length, "
                                   "or chunks of long ones)."),
    max_t: int = typer.Option(None, "--max-t", help="Chunk length: longer videos run in overlapping chunks with "
                              "receptive-radius context (exact). Default: the backend's limit, else whole videos."),
    threads: int = typer.Option(None, "--threads", help="CPU threads for ONNX Runtime / PyTorch (default: all "
                                "usable cores)."),
    class_threshold: float = typer.Option(None, "--class-threshold", help="Localize classes whose video score "
                                          "is at least this (bundle default: 0.2)."),
    nms: str = typer.Option(None, "--nms", help="soft (Gaussian soft-NMS), hard, or none (bundle default: soft)."),
    max_detections: int = typer.Option(None, "--max-detections", help="Keep the N best detections per video."),
    preset: str = typer.Option("released", "--preset", help="Post-processing: released (the bundle's settings, "
                               "what evaluation and the paper use) or deploy (hard NMS, top 5 per class and 20 per "
                               "video, no negative scores: a short list for pipelines)."),
    conf: float = typer.Option(None, "--conf", help="Drop detections scoring below this (after NMS)."),
    sets: list[str] = typer.Option([], "--set", help="Any post-processing setting, key=value (e.g. nms_sigma=0.5, "
                                   "action_thresholds=0.1,0.3,0.5); repeatable."),
    out: Path = typer.Option(None, "--out", "-o", help="Write detections: .json (ActivityNet results format) or "
                             ".csv, atomically."),
    classes_out: Path = typer.Option(None, "--out-classes", help="Also write video-level class probabilities "
                                     "(ActivityNet classification format, .json)."),
    plot: Path = typer.Option(None, "--plot", help="Write one PNG per video here and an index.html linking them: "
                              "attention, CAS, the top detections per class with scores (true/false positives "
                              "and ground truth with --annotations), class probabilities. Needs matplotlib."),
    annotations: Path = typer.Option(None, "--annotations", "-a", help="Ground truth (a dataset folder of either "
                                     "layout, its annotation JSON or a W-TALC annotation folder): drawn in plots; "
                                     "its durations clip the detections."),
    plot_top: int = typer.Option(5, "--plot-top", help="Detections drawn per class in plots (the best by score)."),
    cas_mode: str = typer.Option("softmax", "--plot-cas", help="CAS in plots: softmax (foreground probability) "
                                 "or sigmoid."),
    rows: int = typer.Option(30, "--rows", help="Table rows to print (0: all)."),
    recursive: bool = typer.Option(False, "--recursive", help="Also read feature files in sub-folders."),
    fp16: bool = typer.Option(False, "--fp16", help="With --backend onnxruntime-tensorrt: let ONNX Runtime's "
                              "TensorRT provider run in FP16."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing --out file or --plot images."),
    shards: Path = typer.Option(None, "--shards", help="Write results into this folder as JSON lines as videos "
                                "finish (resumable with --skip-existing; merge with --merge). Default with "
                                "--out: R.shards beside R.json."),
    shard: str = typer.Option(None, "--shard", help="I/N: run only shard I of N (0-based, by video id) into "
                              "--shards, e.g. one task of a job array."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip videos that already have results in "
                                       "--shards (continue a stopped run)."),
    merge: Path = typer.Option(None, "--merge", help="Merge a --shards folder into --out (no feature paths)."),
    ray: str = typer.Option(None, "--ray", help="Run on Ray: a cluster address, auto (this machine's cluster) or "
                            "local (start one here); results go to --shards, then --out. Needs the ray extra."),
    workers: int = typer.Option(None, "--workers", help="With --ray: actors, each with one runner (CPU default "
                                "1; with --device cuda one GPU each, default one per GPU of the cluster)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or tables."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary line on stdout, nothing else."),
) -> None:
    """Detect actions in feature files with an exported bundle (no PyTorch needed)."""
    if as_json:
        console.quiet = True
    code = run_detect(paths, model=model, backend=backend, device=device, batch_size=batch_size, max_t=max_t,
                      threads=threads, post_sets=sets,
                      post_flags={"class_threshold": class_threshold, "nms": nms, "max_detections": max_detections,
                                  "preset": preset, "conf": conf},
                      out=out, classes_out=classes_out, plot=plot, annotations=annotations, cas_mode=cas_mode, rows=rows,
                      plot_top=plot_top,
                      recursive=recursive, fp16=fp16, force=force, as_json=as_json, quiet=quiet, shards=shards,
                      shard=shard, skip_existing=skip_existing, merge=merge, ray=ray, workers=workers)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("detect")(detect_command)
