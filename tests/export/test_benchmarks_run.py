"""The CPU inference benchmark still runs (tiny shapes, one repeat): its table, the
kernel-peak table and the targets line come out. Speed itself is never asserted here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_infer_speed_runs_and_prints_its_tables(tmp_path):
    env = {**os.environ, "OPENBLAS_L2_SIZE": "1"}  # the benchmark restarts itself without it
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "infer_speed.py"), "--dim", "16", "--lengths", "8",
                           "--budget", "0.01", "--min-repeat", "1", "--calib-videos", "2"], capture_output=True,
                          text=True, env=env, timeout=600, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "no OPENBLAS overrides" in out and "ISA" in out
    assert "peak: one k = 3 conv" in out and "% peak" in out and "targets:" in out
    assert "INT8 peak: the same conv" in out and "INT8 peak / FP32 peak" in out


def test_postprocess_speed_runs_on_thumos_timelines(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "postprocess_speed.py"), "--videos", "12",
                           "--repeat", "1"], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "THUMOS14 test timelines" in out  # ../shared is beside the checkout, in CI too
    rows = [line for line in out.splitlines() if line.split()[-1:] == ["yes"]]
    assert len(rows) >= 6 and not any(line.split()[-1] == "NO" for line in out.splitlines()[4:-1])
    assert "localize >= 50x" in out and "localize_many >= 100x" in out
    share = re.search(r"is (\d+)% of `localize` and (\d+)% of `localize_many`.* at most ([\d.]+)x and ([\d.]+)x", out)
    assert share, out[-1000:]
    single, batched = (float(x) for x in re.search(r"localize >= 50x: ([\d.]+)x.*localize_many >= 100x: ([\d.]+)x",
                                                        out).groups())
    assert 0 < int(share[1]) < 100 and 0 < int(share[2]) < 100
    assert float(share[3]) > single and float(share[4]) > batched  # the bound without NMS exceeds what was measured


def test_gpu_recipe_script_runs_on_a_cpu(tmp_path):
    env = {**os.environ, "HAMNET_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_recipe.py"), "--device", "cpu", "--tiny",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=600,
                          cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = (tmp_path / "out" / "gpu_recipe.md").read_text()
    for row in ("training: wall time, whole recipe", "seconds per epoch", "evaluations", "network alone",
                "post-processing alone", "end to end, overlapped", "CPU only"):
        assert row in table, row
    without_gpu = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_recipe.py")], capture_output=True,
                                 text=True, env={**env, "CUDA_VISIBLE_DEVICES": ""}, timeout=120, cwd=tmp_path,
                                 stdin=subprocess.DEVNULL)
    assert without_gpu.returncode == 2 and "no CUDA GPU" in without_gpu.stderr


def test_conv_winograd_bench_computes_the_convolutions(tmp_path):
    # Its Winograd graphs must give the exported convolution's outputs (odd T included),
    # or the speed-ups it prints mean nothing.
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "conv_winograd.py"), "--dim", "16", "--lengths", "1",
                           "2", "5", "37", "--min-repeat", "1", "--budget", "0.01"], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "ms (" in line]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "2", "5", "37"]
    errors = [float(cell.split(",")[1].strip(" )")) for r in rows for cell in r.split("|")[3:5]]
    assert len(errors) == 8 and max(errors) < 1e-5, rows
