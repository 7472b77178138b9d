"""`hamnet detect --ray`: on one module-scoped local Ray cluster (2 CPUs here), the same
detections as one process; an actor killed mid-run and a driver killed with SIGKILL lose
nothing and double nothing once the run is repeated with --skip-existing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hamnet_deploy.runtime.shards import PART_PREFIX, read_records
from tests.conftest import TINY_D
from tests.helpers import cli, one_line_error

ray = pytest.importorskip("ray", reason="Ray is in the dev extra: pip install -e '.[dev]'")
VIDEOS = 120


@pytest.fixture(scope="module")
def cluster():
    """One local Ray for the module (its start-up stays out of the other tests)."""
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    """120 small videos (T 200 to 600, D = 16)."""
    folder = tmp_path_factory.mktemp("ray") / "videos"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(VIDEOS):
        np.save(folder / f"v{i:04d}.npy", rng.normal(size=(int(rng.integers(200, 600)), TINY_D)).astype(np.float32))
    return folder


@pytest.fixture(scope="module")
def single(feats, built_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "r.json"
    assert cli("detect", feats, "--model", built_bundle, "--out", out).exit_code == 0
    return json.loads(out.read_text())["results"]


def _driver(args: list[object], cwd: Path) -> subprocess.Popen:
    code = "import sys; from hamnet_deploy.cli import main; sys.argv = ['hamnet'] + sys.argv[1:]; main()"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _lines(shards: Path) -> list[dict]:
    out = []
    for part in shards.glob(f"{PART_PREFIX}*.jsonl"):
        for line in part.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _wait_for_lines(shards: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(_lines(shards)) < n:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "no results arrived"
        time.sleep(0.02)


def _actor_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker(MapBatches(DetectActor))" in cmd:
                found.append(int(entry.name))
    return found


def test_ray_gives_the_detections_of_one_process(cluster, feats, built_bundle, single, tmp_path):
    out = tmp_path / "r.json"
    result = cli("detect", feats, "--model", built_bundle, "--ray", cluster, "--workers", 2, "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["results"] == single
    assert f"{VIDEOS} videos into" in result.output and "videos/s" in result.output
    again = cli("detect", feats, "--model", built_bundle, "--ray", cluster, "--shards", tmp_path / "r.shards",
                "--out", tmp_path / "b.json")
    assert again.exit_code == 2 and "--skip-existing" in again.output  # its shards are there: nothing replaced


def test_a_killed_actor_loses_and_doubles_nothing(cluster, feats, built_bundle, single, tmp_path):
    shards = tmp_path / "r.shards"
    proc = _driver(["detect", feats, "--model", built_bundle, "--ray", cluster, "--workers", 2, "--out",
                    tmp_path / "r.json", "-q"], tmp_path)
    try:
        _wait_for_lines(shards, 16, proc)
        pids = _actor_pids()
        assert pids, "no actor process found"
        os.kill(pids[0], signal.SIGKILL)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    videos = [line["video"] for line in _lines(shards)]
    assert sorted(videos) == sorted(single)  # each video once: the lost batch ran again, nothing twice
    assert json.loads((tmp_path / "r.json").read_text())["results"] == single


def test_a_killed_driver_resumes_where_it_stopped(cluster, feats, built_bundle, single, tmp_path):
    shards = tmp_path / "r.shards"
    args = ["detect", feats, "--model", built_bundle, "--ray", cluster, "--workers", 2, "--out", tmp_path / "r.json",
            "--skip-existing", "-q"]
    proc = _driver(args, tmp_path)
    try:
        _wait_for_lines(shards, 16, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    before = len(read_records(shards))
    assert 16 <= before < VIDEOS and not (tmp_path / "r.json").exists()
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert f"{before} already there" in result.output
    assert sorted(line["video"] for line in _lines(shards)) == sorted(single)
    assert json.loads((tmp_path / "r.json").read_text())["results"] == single


def test_ray_options_say_what_is_wrong(cluster, feats, built_bundle, tmp_path):
    one_line_error(cli("detect", feats, "--model", built_bundle, "--ray", cluster, "--shard", "0/2", "--shards",
                       tmp_path / "s"), "drop --shard")
    one_line_error(cli("detect", feats, "--model", built_bundle, "--ray", cluster), "--shards DIR")
    one_line_error(cli("detect", tmp_path / "none", "--model", built_bundle, "--ray", cluster, "--out",
                       tmp_path / "r.json"), "no feature files to run")
    one_line_error(cli("detect", feats, "--model", built_bundle, "--ray", cluster, "--workers", 0, "--out",
                       tmp_path / "r.json"), "--workers 0")


def test_without_ray_installed_it_says_how_to_install(feats, built_bundle, tmp_path):
    from tests.helpers import run_base_cli

    done = run_base_cli(["detect", feats, "--model", built_bundle, "--ray", "local", "--out", tmp_path / "r.json"],
                        tmp_path, prepend=(_no_ray(tmp_path),))
    assert done.returncode == 2, done.stderr
    assert "pip install 'hamnet-deploy[ray]'" in done.stderr + done.stdout


def _no_ray(tmp_path: Path) -> Path:
    folder = tmp_path / "no-ray"
    (folder / "ray").mkdir(parents=True)
    (folder / "ray" / "__init__.py").write_text('raise ImportError("no ray here")\n')
    return folder


def test_urls_are_listed_not_loaded_and_read_by_ray(cluster, feats, built_bundle, single, tmp_path):
    """A URL input (file:// here; s3:// goes through the same pyarrow filesystems)."""
    from hamnet_deploy.runtime.ray_detect import list_inputs

    url = f"file://{feats}"
    found, lost = list_inputs([url, f"file://{tmp_path}/nothing"])
    assert [v for v, _ in found] == sorted(single) and all(src.startswith("file://") for _, src in found)
    assert len(lost) == 1 and "nothing" in lost[0][0]
    out = tmp_path / "r.json"
    result = cli("detect", url, "--model", built_bundle, "--ray", cluster, "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["results"] == single
