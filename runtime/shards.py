"""Sharded detection results: a folder of JSON-lines part files, one line per video,
appended as videos finish. A run that stops (a killed driver, a lost node, one task of
a job array) loses at most the videos in flight; a rerun skips the videos already
written; `merge` turns the folder into the results JSON or CSV that `hamnet detect
--out` writes, each video once.

    SHARDS/_shards.json         what wrote it: classes, post-processing, model checksum
    SHARDS/part-<who>.jsonl     one line per video: {"video", "input", "status": "ok" |
                                "empty" | "failed", "T", "detections": [{"label", "score",
                                "segment"}], "class_probs": [C], "seconds"} (failed: "error")

Each process appends to a part file of its own (one `write` per batch of lines, then
fsync): a line cut by a kill is ignored when read, and that video runs again. One folder
holds the results of one model with one set of post-processing settings; others are
refused rather than mixed. Used by `hamnet detect --shards/--shard/--skip-existing/
--merge` and by the Ray path (`runtime.ray_detect`).
"""

from __future__ import annotations

import json
import os
import platform
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hamnet_deploy.runtime.detections import Detections
from hamnet_deploy.runtime.errors import ConfigError, DataError
from hamnet_deploy.runtime.fileio import read_json, write_json_atomic
from hamnet_deploy.runtime.results import Results, VideoResult

META = "_shards.json"
PART_PREFIX = "part-"
FORMAT = 1
DONE = ("ok", "empty")


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard I/N` -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text}: give I/N, e.g. 0/4 (shard I of N, counted from 0)") from None
    if count < 1 or not 0 <= index < count or count > 1_000_000:
        raise ConfigError(f"--shard {text}: I/N needs 0 <= I < N <= 1000000 (shards count from 0)")
    return index, count


def shard_of(video: str, count: int) -> int:
    """The shard (of `count`) a video id belongs to: CRC-32 of its UTF-8 bytes, the same on
    every machine and Python, and unchanged when other files are added."""
    return zlib.crc32(video.encode("utf-8", "surrogateescape")) % count


def meta_for(classes: Sequence[str], postprocess: dict[str, Any], model: str) -> dict[str, Any]:
    """What a shard folder records about the run that writes it."""
    return {"format": FORMAT, "classes": list(classes), "postprocess": postprocess, "model": model}


def open_folder(folder: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Create `folder` (or use it) for results described by `meta`; a folder written with
    another model or other settings is refused."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--shards {folder}: exists and is not a folder; choose a folder for the results")
    path = folder / META
    if path.is_file():
        have = read_json(path, "shard folder record", fix="choose another --shards folder")
        if have != meta:
            what = "classes" if have.get("classes") != meta["classes"] else (
                "model" if have.get("model") != meta["model"] else "post-processing settings")
            raise ConfigError(f"--shards {folder}: holds results of another {what}; choose another --shards "
                              "folder (results of one model and one set of settings per folder)")
        return folder
    if folder.is_dir() and any(folder.glob(f"{PART_PREFIX}*.jsonl")):
        raise ConfigError(f"--shards {folder}: holds part files but no {META}; choose another --shards folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {folder}: {exc.strerror}; choose a writable --shards folder") from None
    write_json_atomic(path, meta)
    return folder


class PartWriter:
    """Appends result lines to a part file of this process's own (`part-<tag>.jsonl`)."""

    def __init__(self, folder: Path, tag: str = "") -> None:
        who = tag or f"{platform.node() or 'host'}-{os.getpid()}-{time.time_ns()}"
        self.path = Path(folder) / f"{PART_PREFIX}{who}.jsonl"
        self._fh: Any = None

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """One `write` of the lines, flushed and fsynced (they survive a kill after this)."""
        text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
        if not text:
            return
        try:
            if self._fh is None:
                self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115  (kept open across batches)
            self._fh.write(text)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise DataError(f"cannot append to {self.path}: {exc.strerror}; free space or check the folder, "
                            "then rerun the same command (written videos are skipped)") from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def record(result: VideoResult, source: str, seconds: float = 0.0, video: str | None = None) -> dict[str, Any]:
    """The line of one video (`source`: its file or URL; `video`: its id, for a failed
    input whose result is named by its path)."""
    if not result.ok:
        return {"video": video or result.video, "input": source, "status": "failed", "error": result.error or ""}
    d = result.detections
    return {"video": result.video, "input": source, "status": "ok" if len(d) else "empty", "T": result.snippets,
            "detections": [{"label": d.classes[c], "score": s, "segment": [a, b]} for c, s, a, b in
                           zip(d.label.tolist(), d.score.tolist(), d.t_start.tolist(), d.t_end.tolist(), strict=True)],
            "class_probs": [result.class_probs.get(c, float("nan")) for c in d.classes],
            "seconds": round(float(seconds), 6)}


def read_records(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Video id -> its line, read from every part file: a video that finished anywhere
    (ok or empty) wins over its failures; lines cut by a kill are skipped."""
    found: dict[str, dict[str, Any]] = {}
    for part in sorted(Path(folder).glob(f"{PART_PREFIX}*.jsonl")):
        try:
            lines = part.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            raise DataError(f"{part}: cannot read ({exc.strerror}); check the folder") from None
        for line in lines:
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):
                continue  # a line cut by a kill: that video runs again
            if not isinstance(rec, dict) or not isinstance(rec.get("video"), str) or rec.get("status") not in (
                    *DONE, "failed"):
                continue
            old = found.get(rec["video"])
            if old is None or old["status"] == "failed":
                found[rec["video"]] = rec
    return found


def done(folder: str | os.PathLike) -> set[str]:
    """Video ids with a finished line (ok or empty); failed ones run again."""
    return {v for v, rec in read_records(folder).items() if rec["status"] in DONE}


def merge(folder: str | os.PathLike) -> Results:
    """The folder's results, each video once, by input path: what `hamnet detect --out`
    writes for the same inputs."""
    folder = Path(folder)
    if not (folder / META).is_file():
        raise ConfigError(f"--merge {folder}: not a shard folder (no {META}); give the --shards folder of a "
                          "hamnet detect run")
    meta = read_json(folder / META, "shard folder record", fix="give the --shards folder of a hamnet detect run")
    classes = tuple(meta.get("classes") or ())
    if not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{folder / META}: no class list; give the --shards folder of a hamnet detect run")
    index = {c: i for i, c in enumerate(classes)}
    records = read_records(folder)
    ok, bad = [], []
    for rec in sorted(records.values(), key=lambda r: (str(r.get("input", "")), r["video"])):
        if rec["status"] == "failed":
            bad.append(VideoResult.failure(str(rec.get("input") or rec["video"]), str(rec.get("error", "")), classes))
            continue
        try:
            dets = rec.get("detections") or []
            table = Detections.from_arrays(classes, rec["video"], [index[x["label"]] for x in dets],
                                           [x["score"] for x in dets], [x["segment"][0] for x in dets],
                                           [x["segment"][1] for x in dets])
            probs = {c: float(p) for c, p in zip(classes, rec.get("class_probs") or [], strict=True)}
            ok.append(VideoResult(rec["video"], "ok", table, probs, int(rec.get("T", 0))))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DataError(f"{folder}: the line of video {rec['video']!r} is damaged ({type(exc).__name__}); "
                            "delete its part file line or rerun that video") from None
    seconds = float(sum(float(r.get("seconds", 0.0)) for r in records.values()))
    return Results(classes, ok + bad, {"seconds": seconds})


def model_id(detector: Any, backend: str | None = None) -> str:
    """Which model and backend a detector runs, for the folder record: the backend name
    (or `backend`, e.g. what Ray workers are asked to run) and the checksum of what it
    loads (a bundle's manifest lists every file's checksum)."""
    import hashlib

    info = detector.info
    source = Path(info.path)
    target = source / "manifest.json" if info.kind == "bundle" else source
    digest = ""
    if target.is_file():
        digest = hashlib.sha256(target.read_bytes()).hexdigest()[:16]
    return f"{backend or detector.selection.backend}:{info.kind}:{digest or source.resolve()}"


def detector_meta(detector: Any, backend: str | None = None) -> dict[str, Any]:
    return meta_for(detector.info.classes, detector.post.to_dict(), model_id(detector, backend))


def pending(items: Sequence[tuple[str, Any]], folder: Path, skip_existing: bool,
            shard: tuple[int, int] | None = None) -> tuple[list[tuple[str, Any]], int]:
    """The items this run does: those of shard I/N, without the videos the folder already
    has (with `skip_existing`; without it they are an error). Returns (items, skipped)."""
    if shard is not None:
        items = [(v, s) for v, s in items if shard_of(v, shard[1]) == shard[0]]
    have = done(folder)
    already = [v for v, _ in items if v in have]
    if already and not skip_existing:
        raise ConfigError(f"--shards {folder}: already has results for {len(already)} of these videos (e.g. "
                          f"{already[0]!r}); add --skip-existing to run only the others, or choose another "
                          "--shards folder")
    return [(v, s) for v, s in items if v not in have], len(already)


def run_into(detector: Any, items: Sequence[tuple[str, Any]], folder: Path, *, chunk: int = 64,
             durations: Any = None, on_video: Any = None, tag: str = "") -> tuple[int, int, float]:
    """Run `detector` over `items` in chunks, appending each chunk's lines to this
    process's part file as it finishes. Returns (videos written, failed, seconds)."""
    written = failed = 0
    started = time.perf_counter()
    with PartWriter(folder, tag) as writer:
        for first in range(0, len(items), chunk):
            part = list(items[first:first + chunk])
            t0 = time.perf_counter()
            results = detector.run(part, durations=durations, on_video=on_video)
            share = (time.perf_counter() - t0) / max(len(part), 1)
            sources = {v: str(s) if isinstance(s, str | os.PathLike) else v for v, s in part}
            ids = {src: v for v, src in sources.items()}  # a failed input is named by its path
            lines = [record(r, sources.get(r.video, r.video), share) if r.ok else
                     record(r, r.video, share, ids.get(r.video, r.video)) for r in results]
            writer.write(lines)
            written += sum(r.ok for r in results)
            failed += sum(not r.ok for r in results)
    return written, failed, time.perf_counter() - started
