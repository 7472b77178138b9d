"""Detection throughput: one process vs `hamnet detect --ray local` with 1 and 2 CPU
workers, and what Ray itself costs (start-up, the pool's start, per-call overhead).

THUMOS-length synthetic videos (`training.synth`, D = 2048, C = 20, mean T about 333)
and a randomly initialised HAM-Net exported to ONNX (speed does not depend on the
weights). Every row runs the same `Detector` (ONNX Runtime FP32 on the CPU) over the same
files and checks that its detections equal the single-process ones.

Columns: `setup s` (Ray: `ray.init`; one process: starting the runner), `first s` (until
the first results arrive: the actor pool starting its runners), `videos/s` over the whole
run after setup, `steady videos/s` after the first results. The last table runs tiny
videos (D = 16, T = 8), where the network costs nothing: what is left is Ray's cost per
call of `VIDEOS_PER_CALL` files (read task, actor call, moving the result lines).

    python bench/ray_detect.py [--videos 100] [--dim 2048] [--classes 20] [--tiny 400]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def single(bundle: Path, files: list[Path], threads: int) -> tuple[dict, dict]:
    from hamnet_deploy.runtime.detector import Detector

    t0 = time.perf_counter()
    det = Detector(bundle, backend="onnxruntime", device="cpu", threads=threads)
    setup = time.perf_counter() - t0
    with det:
        t1 = time.perf_counter()
        results = det(files)
        total = time.perf_counter() - t1
    row = {"run": f"one process ({threads} threads)", "setup_s": setup, "first_s": 0.0,
           "videos_s": len(files) / total, "steady_s": len(files) / total}
    return row, json.loads(results.to_json())["results"]


def on_ray(ray_mod: object, bundle: Path, files: list[Path], workers: int, threads: int,
           init_s: float) -> tuple[dict, dict]:
    from hamnet_deploy.runtime import ray_detect as rd
    from hamnet_deploy.runtime.feature_files import video_id
    from hamnet_deploy.runtime.shards import PartWriter, merge, meta_for, open_folder

    with tempfile.TemporaryDirectory() as tmp:
        from hamnet_deploy.runtime.bundle import load_bundle

        b = load_bundle(bundle)
        folder = open_folder(Path(tmp) / "shards", meta_for(b.classes, b.postprocess.to_dict(), "bench"))
        arrivals: list[tuple[float, int]] = []
        t0 = time.perf_counter()
        with PartWriter(folder) as writer:
            def write(lines: list[dict]) -> None:
                writer.write(lines)
                arrivals.append((time.perf_counter() - t0, len(lines)))

            rd.run(ray_mod, [(video_id(f), str(f)) for f in files], model=str(bundle),
                   options={"backend": "onnxruntime", "device": "cpu", "threads": threads}, workers=workers,
                   cpus_per_worker=threads, gpus_per_worker=0, durations=None, write=write)
        total = time.perf_counter() - t0
        first = arrivals[0][0]
        after = sum(n for _, n in arrivals[1:])
        steady = after / (total - first) if total > first and after else float("nan")
        results = json.loads(merge(folder).to_json())["results"]
    row = {"run": f"ray local, {workers} worker(s) x {threads} thread(s)", "setup_s": init_s, "first_s": first,
           "videos_s": len(files) / total, "steady_s": steady}
    return row, results


def table(rows: list[dict], title: str) -> None:
    print(f"\n{title}\n")
    print("| run | setup s | first s | videos/s | steady videos/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['run']} | {r['setup_s']:.2f} | {r['first_s']:.2f} | {r['videos_s']:.2f} | {r['steady_s']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--tiny", type=int, default=400)
    args = parser.parse_args()

    import ray
    from detect_speed import make_bundle

    from hamnet_deploy.runtime import ray_detect as rd
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print(f"machine: {platform.processor() or platform.machine()}, {cores} usable cores; Ray {ray.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate_dataset(work / "data", SynthConfig(videos=args.videos, dim=args.dim, num_classes=args.classes))
        files = sorted((work / "data" / "videos").glob("*.npy"))
        bundle = make_bundle(work, work / "data", args.dim, args.classes, 4)
        ray_mod, _, init_s = rd.start("local", cores)
        try:
            rows, reference = [], None
            row, reference = single(bundle, files, cores)
            rows.append(row)
            for workers in (1, 2):
                row, got = on_ray(ray_mod, bundle, files, workers, max(1, cores // workers), init_s)
                assert got == reference, f"ray with {workers} workers differs from one process"
                rows.append(row)
            table(rows, f"{len(files)} THUMOS-length videos (D = {args.dim}, C = {args.classes}), ONNX Runtime FP32 "
                        "on the CPU; detections identical in every row")

            tiny = work / "tiny"
            tiny.mkdir()
            rng = np.random.default_rng(0)
            for i in range(args.tiny):
                np.save(tiny / f"t{i:05d}.npy", rng.normal(size=(8, 16)).astype(np.float32))
            generate_dataset(work / "tinydata", SynthConfig(videos=4, dim=16, num_classes=3))
            small = make_bundle(work / "small", work / "tinydata", 16, 3, 2)
            tiny_files = sorted(tiny.glob("*.npy"))
            row, _ = on_ray(ray_mod, small, tiny_files, 1, 1, init_s)
            calls = -(-len(tiny_files) // rd.VIDEOS_PER_CALL)
            per_call = (len(tiny_files) / row["steady_s"]) / calls if row["steady_s"] == row["steady_s"] else 0.0
            table([row], f"{len(tiny_files)} tiny videos (D = 16, T = 8): Ray's own cost")
            print(f"\nRay per call of {rd.VIDEOS_PER_CALL} files (read task, actor call, result lines): "
                  f"{1000 * per_call:.1f} ms")
        finally:
            ray_mod.shutdown()


if __name__ == "__main__":
    main()
