"""`hamnet detect` throughput on the CPU and peak memory of chunked inference.

1. Throughput: 200 THUMOS-length synthetic videos (`training.synth`, D = 2048, C = 20,
   mean T about 333) through the detect pipeline (`runtime.feature_files` ->
   `runtime.inference` -> `runtime.scoring.detect_outputs`, as `hamnet detect`) with ONNX Runtime FP32 and
   static INT8 on the CPU. A randomly initialised HAM-Net is exported with
   `hamnet export --int8-cpu` (speed does not depend on the weights). Reported per row:
   videos/s end to end, and the split into reading + checking the files, the network
   (time inside `runner.infer`), window copies and post-processing.
2. Peak memory of one 20,000-snippet video, whole vs chunked (`--max-t`), each case in a
   fresh subprocess: the features are generated, the runner started and a warm-up run
   done, then the kernel's peak-RSS mark is reset (`/proc/self/clear_refs` = 5, Linux) and
   the video is run; "inference peak" = VmHWM after the run - VmRSS before it, i.e. the
   extra resident memory the run needed (ONNX Runtime's arena included, as users get it;
   the features and weights themselves are excluded). Where the reset is not allowed the
   process's `ru_maxrss` is reported instead (marked).

3. Streaming: peak RSS of `hamnet detect DIR --out r.json` over 10,000 short videos against
   one video (each in a fresh process): the results file is written as chunks finish, so
   the growth stays small whatever the number of videos.

    python bench/detect_speed.py [--videos 200] [--dim 2048] [--classes 20] [--threads N]
                                 [--max-t 512] [--batch-size 8] [--long 20000] [--stream-videos 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_bundle(work: Path, data: Path, dim: int, classes: int, calib_videos: int) -> Path:
    import torch

    from hamnet_deploy.runtime.postprocess import PostprocessConfig
    from hamnet_deploy.training.checkpoint import save_checkpoint
    from hamnet_deploy.training.config import DataConfig, ModelConfig, TrainConfig
    from hamnet_deploy.training.model import HamNet

    run = work / "run"
    cfg = TrainConfig(model=ModelConfig(feature_dim=dim, num_classes=classes),
                      data=DataConfig(feature_dim=dim), epochs=1, output_dir=str(run))
    torch.manual_seed(0)
    model = HamNet.from_config(cfg.model)
    names = json.loads((data / "annotations.json").read_text())["classes"]
    save_checkpoint(run, 1, model, None, {"classes": names, "config": cfg.to_dict(),
                                          "postprocess": PostprocessConfig().to_dict(),
                                          "feature_dim": dim, "num_classes": classes})
    bundle = work / "bundle"
    cmd = [sys.executable, "-m", "hamnet_deploy.cli", "export", str(run), "--out", str(bundle),
           "--skip-parity-long", "--int8-cpu", "--calib", str(data), "--calib-videos", str(calib_videos)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:  # e.g. no INT8 path: retry without it
        print(f"note: export with --int8-cpu failed ({proc.stderr.strip().splitlines()[-1:]}); FP32 only")
        proc = subprocess.run(cmd[:cmd.index("--int8-cpu")], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(proc.stdout + proc.stderr)
    return bundle


def throughput(bundle: Path, files: list[Path], backend: str, threads: int, max_t: int | None,
               batch_size: int) -> dict:
    from hamnet_deploy.runtime.backends.select import select_runner
    from hamnet_deploy.runtime.feature_files import load_features, video_id
    from hamnet_deploy.runtime.inference import Inference
    from hamnet_deploy.runtime.scoring import detect_outputs

    sel = select_runner(bundle, backend, "cpu", threads=threads)
    info = sel.info
    read_s = 0.0

    def items():
        nonlocal read_s
        for f in files:
            t0 = time.perf_counter()
            x = load_features(f, info.feature_dim)
            read_s += time.perf_counter() - t0
            yield video_id(f), x

    with sel.runner:
        warm = Inference(sel.runner, info.receptive_radius, max_t=max_t, batch_size=batch_size)
        warm.run([load_features(files[0], info.feature_dim)])
        infer = Inference(sel.runner, info.receptive_radius, max_t=max_t, batch_size=batch_size)
        t0 = time.perf_counter()
        outputs = [(v, cas, att) for v, cas, att in infer.stream(items())]
        t1 = time.perf_counter()
        dets, _ = detect_outputs({v: (cas, att) for v, cas, att in outputs}, info.postprocess, info.classes)
        t2 = time.perf_counter()
    s = infer.stats
    return {"backend": backend, "max_t": max_t, "batch": batch_size, "videos": len(outputs),
            "snippets": s.useful_snippets, "total_s": t2 - t0, "read_s": read_s, "network_s": s.network_seconds,
            "copy_s": s.copy_seconds, "post_s": t2 - t1, "detections": len(dets), "overhead": s.overhead,
            "batches": s.batches}


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_case(bundle: Path, backend: str, length: int, max_t: int | None, threads: int) -> dict:
    """Run in a fresh process: peak extra RSS of one `length`-snippet video."""
    from hamnet_deploy.runtime.backends.select import select_runner
    from hamnet_deploy.runtime.inference import Inference

    sel = select_runner(bundle, backend, "cpu", threads=threads)
    info = sel.info
    x = np.random.default_rng(0).normal(size=(length, info.feature_dim)).astype(np.float32)
    with sel.runner:
        Inference(sel.runner, info.receptive_radius, max_t=max_t, batch_size=1).run([x[:64]])  # warm-up
        infer = Inference(sel.runner, info.receptive_radius, max_t=max_t, batch_size=1)
        before = _rss_kib("VmRSS")
        reset = True
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            reset = False
        t0 = time.perf_counter()
        (cas, _), = infer.run([x])
        seconds = time.perf_counter() - t0
        peak = _rss_kib("VmHWM") if reset else None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"backend": backend, "max_t": max_t, "T": length, "rss_before_mib": (before or 0) / 1024,
            "peak_mib": (peak if peak is not None else maxrss) / 1024,
            "extra_mib": ((peak - before) / 1024) if (peak is not None and before) else None,
            "reset": reset, "seconds": seconds, "windows": infer.stats.windows, "cas": list(cas.shape)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-t", type=int, default=512, help="chunk length of the chunked rows")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--long", type=int, default=20000, help="T of the memory test video")
    ap.add_argument("--calib-videos", type=int, default=8)
    ap.add_argument("--stream-videos", type=int, default=10000, help="videos of the streaming memory test (0: skip)")
    ap.add_argument("--stream-threshold", type=float, default=0.07,
                    help="--class-threshold of the streaming test (a random model's class scores sit near 1/C)")
    ap.add_argument("--memory-case", nargs=4, metavar=("BUNDLE", "BACKEND", "T", "MAX_T"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    from hamnet_deploy.runtime.backends.onnxruntime import usable_cores

    threads = args.threads or usable_cores()
    if args.memory_case:
        bundle, backend, length, max_t = args.memory_case
        print(json.dumps(memory_case(Path(bundle), backend, int(length), int(max_t) or None, threads)))
        return

    from hamnet_deploy.runtime.bundle import load_bundle
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset

    with tempfile.TemporaryDirectory(prefix="hamnet-detect-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        generate_dataset(work / "data", SynthConfig(videos=args.videos, dim=args.dim, num_classes=args.classes))
        files = sorted((work / "data" / "videos").glob("*.npy"))
        t1 = time.perf_counter()
        bundle = make_bundle(work, work / "data", args.dim, args.classes, args.calib_videos)
        t2 = time.perf_counter()
        kinds = load_bundle(bundle).kinds
        lengths = [int(np.load(f, mmap_mode="r").shape[0]) for f in files]
        print(f"{len(files)} synthetic videos, D = {args.dim}, C = {args.classes}, mean T {np.mean(lengths):.0f}, "
              f"max T {max(lengths)} (generated in {t1 - t0:.1f} s); bundle {', '.join(kinds)} exported in "
              f"{t2 - t1:.1f} s; ONNX Runtime CPU, {threads} threads, {os.cpu_count()} cores")
        backends = ["onnxruntime"] + (["onnxruntime-int8"] if "onnx_int8" in kinds else [])
        rows = []
        for backend in backends:
            rows.append(throughput(bundle, files, backend, threads, None, args.batch_size))
            rows.append(throughput(bundle, files, backend, threads, args.max_t, args.batch_size))
        print()
        print("| backend | chunks | videos/s | total s | read s | network s | copies s | post-proc s | "
              "post ms/video | overlap | detections |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            chunks = f"max-t {r['max_t']}, batch {r['batch']}" if r["max_t"] else f"whole, batch {r['batch']}"
            print(f"| {r['backend']} | {chunks} | {r['videos'] / r['total_s']:.2f} | {r['total_s']:.1f} | "
                  f"{r['read_s']:.1f} | {r['network_s']:.1f} | {r['copy_s']:.2f} | {r['post_s']:.2f} | "
                  f"{1000 * r['post_s'] / r['videos']:.2f} | {100 * r['overhead']:.1f} % | {r['detections']} |")
        print()
        print(f"Peak memory, one video of T = {args.long} (D = {args.dim}; features {args.long * args.dim * 4 / 2**20:.0f} "
              "MiB), fresh process per case:")
        print("| backend | chunks | inference peak (MiB over RSS before) | process peak RSS (MiB) | seconds | windows |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for backend in backends:
            for max_t in (0, args.max_t):
                proc = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--memory-case",
                                       str(bundle), backend, str(args.long), str(max_t)],
                                      capture_output=True, text=True, cwd=ROOT)
                if proc.returncode != 0:
                    print(f"| {backend} | {max_t or 'whole'} | failed: {proc.stderr.strip().splitlines()[-1:]} |")
                    continue
                m = json.loads(proc.stdout.strip().splitlines()[-1])
                extra = f"{m['extra_mib']:.0f}" if m["extra_mib"] is not None else "n/a"
                mark = "" if m["reset"] else " (ru_maxrss)"
                print(f"| {backend} | {'max-t ' + str(max_t) if max_t else 'whole'} | {extra} | "
                      f"{m['peak_mib']:.0f}{mark} | {m['seconds']:.1f} | {m['windows']} |")
        if args.stream_videos:
            streaming(bundle, work, files, args.stream_videos, args.stream_threshold)


_LAUNCH = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def _peak_rss_mib(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of a command, started from a small launcher: Linux keeps
    a forked child's RSS mark across exec, so a child of this (large) process would report
    this process's size."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-S", "-c", _LAUNCH, *cmd], capture_output=True, text=True, cwd=ROOT)
    kib, code = proc.stdout.split()[-2:]
    if int(code) != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ...: exit {code}: {proc.stderr[-500:]}")
    return int(kib) / 1024, time.perf_counter() - t0


def streaming(bundle: Path, work: Path, files: list[Path], count: int, threshold: float) -> None:
    """Peak RSS of `hamnet detect DIR --out r.json` over `count` short videos (hard links to
    40 short feature files of T 16 to 128) against one video: what grows with the count."""
    base = work / "short"
    base.mkdir()
    rng = np.random.default_rng(0)
    dim = int(np.load(files[0], mmap_mode="r").shape[1])
    for i in range(40):
        np.save(base / f"b{i}.npy", rng.normal(size=(int(rng.integers(16, 129)), dim)).astype(np.float32))
    many = work / "many"
    many.mkdir()
    for i in range(count):
        os.link(base / f"b{i % 40}.npy", many / f"v{i:06d}.npy")
    cli = [sys.executable, "-m", "hamnet_deploy.cli", "detect", "--model", str(bundle), "-q",
           "--class-threshold", str(threshold), "--backend", "onnxruntime"]
    one, one_s = _peak_rss_mib([*cli, str(many / "v000000.npy"), "--out", str(work / "one.json")])
    peak, secs = _peak_rss_mib([*cli, str(many), "--out", str(work / "many.json")])
    doc = json.loads((work / "many.json").read_text())
    dets = sum(len(v) for v in doc["results"].values())
    print()
    print(f"Streaming: hamnet detect over {count} short videos (T 16-128, D = {dim}, --class-threshold {threshold}: "
          f"{dets} detections, {dets / count:.0f} per video), peak RSS of the whole process:")
    print("| videos | peak RSS (MiB) | growth over one video (MiB) | seconds |")
    print("| ---: | ---: | ---: | ---: |")
    print(f"| 1 | {one:.0f} | - | {one_s:.1f} |")
    print(f"| {count} | {peak:.0f} | {peak - one:.0f} | {secs:.1f} |")


if __name__ == "__main__":
    main()
