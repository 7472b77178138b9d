"""`hamnet detect ... --ray ADDRESS`: detection on a Ray cluster with the same runners,
windowing and post-processing as on one machine (`runtime.detector.Detector`), the
results written as the same resumable shard folder (`runtime.shards`).

Ray Data reads the feature files (local paths or URLs its filesystems read, such as
`s3://bucket/feats/`; the driver lists them, it never loads them), a pool of actors each
holding one active runner turns each batch of files into result lines, and the driver
appends the lines to its part file as they arrive. Ray schedules, retries failed tasks
and restarts lost actors; nothing here does. Ray is an optional extra
(`pip install "hamnet-deploy[ray]"`), imported only when asked.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.errors import ConfigError, DataError
from hamnet_deploy.runtime.feature_files import (
    SUFFIXES,
    find_feature_files,
    load_feature_bytes,
    video_id,
)

RAY_MISSING = "--ray needs Ray: pip install 'hamnet-deploy[ray]'"
VIDEOS_PER_CALL = 8
"""Files per actor call: the videos in flight per actor, at most lost when it dies."""


def require_ray() -> Any:
    """The `ray` module (with Ray Data), or ConfigError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def is_url(text: str) -> bool:
    return "://" in str(text)


def list_inputs(paths: Sequence[str], recursive: bool = False) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(video id, file or URL) of every feature file the arguments name, and (argument,
    why nothing) for those naming none. Local paths as `hamnet detect` expands them; URLs
    through pyarrow's filesystems (listing only: nothing is read)."""
    local = [p for p in paths if not is_url(p)]
    files, missing = find_feature_files(local, recursive=recursive)
    found = [(video_id(f), str(f)) for f in files]
    lost = [(m.path, f"{m.path}: {m.reason}") for m in missing]
    for url in (p for p in paths if is_url(p)):
        try:
            listed = _list_url(url, recursive)
        except (OSError, ValueError) as exc:  # pyarrow raises these for unknown schemes, missing buckets, ...
            lost.append((url, f"{url}: cannot list ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"))
            continue
        if not listed:
            lost.append((url, f"{url}: holds no .npy or .npz files"))
        found += [(video_id(u), u) for u in listed]
    return found, lost


def _list_url(url: str, recursive: bool) -> list[str]:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(url)
    scheme = url.split("://", 1)[0]
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        names = [root]
    elif info.type == pafs.FileType.Directory:
        entries = fs.get_file_info(pafs.FileSelector(root, recursive=recursive))
        names = sorted(e.path for e in entries if e.type == pafs.FileType.File)
    else:
        return []
    return [f"{scheme}://{n}" for n in names if Path(n).suffix.lower() in SUFFIXES]


class DetectActor:
    """One Ray actor: one active runner (a `Detector`), called with batches of files
    (`bytes`, `path`) and returning one JSON result line per file."""

    def __init__(self, model: str, options: dict[str, Any], durations: dict[str, float] | None = None) -> None:
        from hamnet_deploy.runtime.detector import Detector

        self.detector = Detector(model, **options)  # the keyword arguments of `hamnet detect`'s Detector
        self.durations = durations or None

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from hamnet_deploy.runtime.results import VideoResult
        from hamnet_deploy.runtime.shards import record

        dim = self.detector.info.feature_dim
        items, lines, sources = [], [], {}
        for data, path in zip(batch["bytes"], batch["path"], strict=True):
            vid, path = video_id(str(path)), str(path)
            try:
                items.append((vid, load_feature_bytes(data, path, dim)))
                sources[vid] = path
            except DataError as exc:
                failed = VideoResult.failure(path, str(exc), self.detector.info.classes)
                lines.append(record(failed, path, video=vid))
        t0 = time.perf_counter()
        results = self.detector.run(items, durations=self.durations) if items else []
        share = (time.perf_counter() - t0) / max(len(items), 1)
        for r in results:
            if r.ok:
                lines.append(record(r, sources[r.video], share))
            else:  # an array rejected by the checks: named by its id
                lines.append(record(r, sources.get(r.video, r.video), share, r.video))
        return {"line": np.array([json.dumps(x, allow_nan=False) for x in lines], dtype=object)}

    def __del__(self) -> None:
        detector = getattr(self, "detector", None)
        if detector is not None:
            detector.close()


def start(address: str, cpus: int) -> tuple[Any, bool, float]:
    """Connect to (or, for "local", start with the actors' `cpus`) Ray; (ray, started
    here, seconds)."""
    ray = require_ray()
    t0 = time.perf_counter()
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if ray.is_initialized():  # a Python caller (or a test) already holds a connection: use it
        started = False
    elif address == "local":
        ray.init(num_cpus=cpus + 1, **quiet)  # one CPU beyond the actors for Ray Data's read tasks
        started = True
    else:
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as exc:
            raise ConfigError(f"--ray {address}: cannot connect ({str(exc).splitlines()[0]}); give a running "
                              "cluster's address, auto (the cluster this machine is in) or local") from None
        started = False
    import logging

    for name in ("ray", "ray.data"):  # our own progress line replaces Ray Data's logged progress
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.print_on_execution_start = False
    return ray, started, time.perf_counter() - t0


def run(ray: Any, sources: Sequence[tuple[str, str]], *, model: str, options: dict[str, Any], workers: int,
        cpus_per_worker: float, gpus_per_worker: float, durations: dict[str, float] | None,
        write: Callable[[list[dict]], None], on_lines: Callable[[int], None] | None = None) -> None:
    """Run detection over `sources` ((video id, file or URL)) on the pool; `write` gets each
    arriving batch of result lines (with `input` as the user named the file)."""
    given = {vid: src for vid, src in sources}
    ds = ray.data.read_binary_files([src for _, src in sources], include_paths=True,
                                    override_num_blocks=max(1, -(-len(sources) // VIDEOS_PER_CALL)))
    ds = ds.map_batches(DetectActor, fn_constructor_kwargs={"model": model, "options": options,
                                                            "durations": durations},
                        batch_size=VIDEOS_PER_CALL, compute=ray.data.ActorPoolStrategy(size=workers),
                        num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        lines = [json.loads(x) for x in batch["line"]]
        for line in lines:
            line["input"] = given.get(line["video"], line.get("input"))
        write(lines)
        if on_lines is not None:
            on_lines(len(lines))


def default_threads(workers: int) -> int:
    """CPU threads per actor on this machine: its usable cores shared by the actors."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // max(workers, 1))
