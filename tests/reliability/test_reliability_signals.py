"""Interrupted and killed commands (docs/RELIABILITY.md, "Signals").

- Ctrl-C (SIGINT to the command's process group, as a terminal sends it) during
  `hamnet train`, `hamnet export` and `hamnet detect`: exit code 130, one line that
  says so, no traceback, no half-written file, and the previous checkpoint / bundle /
  results file intact.
- `hamnet train` killed with SIGKILL at 10 seeded-random moments (some of them while a
  checkpoint is being written): after every kill each checkpoint on disk loads, the
  latest one is no older than the last epoch the run reported complete, `--resume`
  continues from it, and the run finally completes with every epoch logged once.
- `hamnet export` killed with SIGKILL at random moments: the target bundle is either
  absent (new export) or complete and valid (old or new, with --force).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hamnet_deploy.runtime.bundle import load_bundle
from hamnet_deploy.training.checkpoint import CHECKPOINTS, LATEST, load_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "model.attention_dim=8", "--set", "data.num_snippets=8", "--set", "data.batch_size=4",
        "--eval-every", "0", "--device", "cpu", "-q"]


def hamnet(*args: object) -> list[str]:
    return [sys.executable, "-m", "hamnet_deploy.cli", *map(str, args)]


def _interruptible() -> None:
    """In the child: Ctrl-C acts as in a terminal, even when these tests run with SIGINT
    ignored (nohup, a background job), whose ignored disposition a child would inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


_SPAWNED: list[subprocess.Popen] = []


def spawn(cmd: list[str], cwd: Path) -> subprocess.Popen:
    """Start a command in its own process group (ended after the test, pass or fail)."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1", "HAMNET_CACHE": str(cwd / "cache")}
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True, preexec_fn=_interruptible)
    _SPAWNED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _end_spawned():
    """No command a test started outlives it, whatever the test's outcome."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.communicate(timeout=30)


def wait_for(proc: subprocess.Popen, needle: str, timeout: float = 60.0) -> str:
    """Read stdout until it holds `needle` (the command reached that stage)."""
    seen = b""
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)  # unbuffered: select and the reads see the same data
            seen += chunk
            if needle.encode() in seen:
                return seen.decode(errors="replace")
            if not chunk and proc.poll() is not None:
                break
        elif proc.poll() is not None:
            break
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    raise AssertionError(f"{needle!r} never appeared; output:\n{seen.decode(errors='replace')}\n"
                         f"{err.decode(errors='replace')}")


def interrupt(proc: subprocess.Popen, now: bool = False, sig: int = signal.SIGINT) -> tuple[int, str]:
    """Ctrl-C as a terminal sends it (the whole process group; `sig` SIGTERM: as a service
    manager or `kill` stops it); (exit code, all output).

    `now`: stop the group first (SIGSTOP), queue the signal, then continue it, so it
    lands exactly where the command was, however fast the machine is."""
    if now:
        os.killpg(proc.pid, signal.SIGSTOP)
    os.killpg(proc.pid, sig)
    if now:
        os.killpg(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out.decode(errors="replace") + err.decode(errors="replace")


def assert_one_line_interrupt(code: int, text: str) -> None:
    assert code == 130, text
    assert "Traceback" not in text, text
    lines = [x for x in text.splitlines() if "interrupted" in x]
    assert len(lines) == 1, text


def train_until_a_checkpoint(data: Path, run: Path, cwd: Path) -> subprocess.Popen:
    """A long `hamnet train --out run` started, once it has written its first checkpoint
    (or 30 s have passed)."""
    proc = spawn(hamnet("train", "--data", data, "--out", run, "--epochs", 100000, *TINY), cwd)
    wait_for(proc, "run:")
    deadline = time.monotonic() + 30
    while not (run / LATEST).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc


def hidden(folder: Path) -> list[str]:
    """Hidden leftovers in `folder`: temp files and folders (the `.NAME.lock` files of
    `runtime.locks` are kept by design and are not leftovers)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("signals-data")
    generate_dataset(root / "data", SynthConfig(videos=6, dim=8, num_classes=2, seed=1))
    return root / "data"


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """A finished 2-epoch run (in-process) to export."""
    from hamnet_deploy.training.data import load_dataset
    from hamnet_deploy.training.recipes import load_recipe
    from hamnet_deploy.training.trainer import train

    out = tmp_path_factory.mktemp("signals-run") / "run"
    cfg = load_recipe("thumos14").with_overrides(["model.attention_dim=8", "data.num_snippets=8",
                                                     "data.batch_size=4", "eval_every=0", "device=cpu",
                                                     "epochs=2"])
    train(cfg, load_dataset(data), out)
    return out


# --------------------------------------------------------------------------- #
#                          one process per folder                             #
# --------------------------------------------------------------------------- #
def test_a_second_process_on_the_same_run_or_bundle_is_refused(data, run, tmp_path):
    """Two `hamnet train --out R` (or `--resume R`) at once: the second is refused naming
    the first (its pid and command), and the first's run is untouched. The same for a
    bundle folder while an export or an in-place update holds it. The lock is the
    kernel's: it ends with the process, even under SIGKILL."""
    from hamnet_deploy.runtime.locks import hold

    out = tmp_path / "run"
    first = spawn(hamnet("train", "--data", data, "--out", out, "--epochs", 100000, *TINY), tmp_path)
    wait_for(first, "run:")
    for args in (["--data", data, "--out", out], ["--resume", out]):
        second = subprocess.run(hamnet("train", *args, "--epochs", 2, *TINY), capture_output=True, text=True,
                                timeout=120, cwd=tmp_path)
        assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
        assert f"is in use by process {first.pid} on" in second.stderr and "(hamnet train" in second.stderr
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert [x["epoch"] for x in lines] == list(range(1, len(lines) + 1))  # one run's log, in order
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    assert subprocess.run(hamnet("train", "--resume", out, "--epochs", lines[-1]["epoch"] + 1 if lines else 2,
                                 *TINY), capture_output=True, timeout=120, cwd=tmp_path).returncode == 0
    bundle = tmp_path / "bundle"
    with hold(bundle, "hamnet export"):
        for args in ([run, "--out", bundle], [run, "--out", bundle, "--force"]):
            busy = subprocess.run(hamnet("export", *args, "--skip-parity-long"), capture_output=True, text=True,
                                  timeout=120, cwd=tmp_path)
            assert busy.returncode == 2 and f"is in use by process {os.getpid()}" in busy.stderr, busy.stderr
    assert not bundle.exists()
    assert subprocess.run(hamnet("export", run, "--out", bundle, "--skip-parity-long"), capture_output=True,
                          timeout=300, cwd=tmp_path).returncode == 0
    with hold(bundle, "hamnet export"):
        busy = subprocess.run(hamnet("export", bundle, "--int8-cpu", "--calib", data), capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert busy.returncode == 2 and "is in use by process" in busy.stderr, busy.stderr


# --------------------------------------------------------------------------- #
#                                   Ctrl-C                                    #
# --------------------------------------------------------------------------- #
def test_ctrl_c_during_train_keeps_the_last_checkpoint(data, tmp_path):
    run = tmp_path / "run"
    proc = train_until_a_checkpoint(data, run, tmp_path)
    before = load_checkpoint(run).epoch
    time.sleep(0.3)
    code, text = interrupt(proc)
    assert_one_line_interrupt(code, text)
    assert "--resume" in text  # says how to continue
    after = load_checkpoint(run, with_optimizer=True)
    assert after.epoch >= before and after.optimizer_state is not None
    assert hidden(run / CHECKPOINTS) == []  # no half-written checkpoint folder
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []


def test_ctrl_c_during_export_keeps_the_previous_bundle(run, tmp_path):
    bundle = tmp_path / "bundle"
    subprocess.run(hamnet("export", run, "--out", bundle, "--skip-parity-long"), check=True, cwd=tmp_path,
                   stdout=subprocess.DEVNULL)
    manifest = (bundle / "manifest.json").read_bytes()
    proc = spawn(hamnet("export", run, "--out", bundle, "--force"), tmp_path)
    wait_for(proc, "model:")  # the checkpoint is loaded; ONNX export and parity follow
    code, text = interrupt(proc, now=True)
    assert_one_line_interrupt(code, text)
    assert (bundle / "manifest.json").read_bytes() == manifest
    load_bundle(bundle)
    assert hidden(tmp_path) == [], "the staging folder was not removed"


def test_ctrl_c_during_detect_keeps_the_previous_results(run, tmp_path):
    bundle = tmp_path / "bundle"
    subprocess.run(hamnet("export", run, "--out", bundle, "--skip-parity-long"), check=True, cwd=tmp_path,
                   stdout=subprocess.DEVNULL)
    feats = tmp_path / "feats"
    feats.mkdir()
    rng = np.random.default_rng(0)
    for i in range(400):  # enough files that the run takes several seconds
        np.save(feats / f"v{i:03d}.npy", rng.normal(size=(3000, 8)).astype(np.float32))
    results = tmp_path / "results.json"
    results.write_text('{"results": {}}\n')
    proc = spawn(hamnet("detect", feats, "--model", bundle, "--out", results, "--batch-size", 1, "--force"), tmp_path)
    wait_for(proc, "backend")  # the model is loaded; reading and running 400 files follow
    code, text = interrupt(proc, now=True)
    assert_one_line_interrupt(code, text)
    assert results.read_text() == '{"results": {}}\n'
    assert hidden(tmp_path) == []


# --------------------------------------------------------------------------- #
#                                  SIGKILL                                    #
# --------------------------------------------------------------------------- #
def _completed_epochs(run: Path) -> list[int]:
    """Epochs whose metrics line was written completely (a kill may cut the last one)."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    done = []
    for line in path.read_text().splitlines():
        try:
            done.append(int(json.loads(line)["epoch"]))
        except (ValueError, KeyError, TypeError):
            continue
    return done


def _check_after_kill(run: Path, floor: int) -> int:
    """Every visible checkpoint loads; the latest is at least the last completed epoch
    and at least `floor` (the previous kill's). Returns the latest epoch (0: none yet)."""
    root = run / CHECKPOINTS
    folders = sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []
    for folder in folders:  # never half-written: built under a temporary name, then renamed
        ckpt = load_checkpoint(folder, with_optimizer=True)
        assert ckpt.optimizer_state is not None and ckpt.model_state
    if (run / "config.json").exists():
        json.loads((run / "config.json").read_text())  # written atomically: never cut
    completed = _completed_epochs(run)
    if not folders:
        assert not completed and floor == 0
        return 0
    latest = load_checkpoint(run, with_optimizer=True).epoch
    assert latest >= max(completed, default=0), (latest, completed)  # at most the epoch in progress is lost
    assert latest >= floor
    return latest


def _temp_folders(run: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(run / CHECKPOINTS) if e.name.startswith(".epoch-")}
    except FileNotFoundError:
        return set()


def _last_epoch(run: Path) -> int:
    return max(_completed_epochs(run), default=0)


def _kill(proc: subprocess.Popen, run: Path, mode: str, delay: float) -> bool:
    """SIGKILL the command (its whole process group) at a moment chosen by `mode`:

    - "startup": `delay` s after it was started (still importing / loading the data);
    - "early": `delay` s after it printed its run line (optimizer set-up, first epoch);
    - "epoch": `delay` s after it finished its first epoch (inside a later epoch);
    - "checkpoint": after its first epoch, as soon as the next checkpoint's temporary
      folder appears (the checkpoint is being written).

    Returns True when the kill came while a checkpoint was being written."""
    if mode != "startup":
        wait_for(proc, "run:")
    stale = _temp_folders(run)  # left by an earlier kill, removed by the next good save
    if mode in ("epoch", "checkpoint"):
        base = _last_epoch(run)
        deadline = time.monotonic() + 60
        while _last_epoch(run) <= base and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    deadline = time.monotonic() + (5.0 if mode == "checkpoint" else delay)
    while time.monotonic() < deadline and proc.poll() is None:
        if mode == "checkpoint" and _temp_folders(run) - stale:
            break
        time.sleep(0.0005 if mode == "checkpoint" else 0.005)
    assert proc.poll() is None, "the command ended before it was killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return bool(_temp_folders(run) - stale)


def test_killed_training_always_resumes(data, tmp_path):
    run = tmp_path / "run"
    rng = random.Random(20240607)
    modes = ["startup", "early", "early"] + ["epoch"] * 3 + ["checkpoint"] * 4
    rng.shuffle(modes)
    floor, mid_write, progress = 0, 0, []
    for mode in modes:
        args = ("train", "--resume", run) if (run / "config.json").exists() else (
            "train", "--data", data, "--out", run, "--epochs", 100000)
        proc = spawn(hamnet(*args, *TINY), tmp_path)
        mid_write += _kill(proc, run, mode, rng.uniform(0.05, 1.0) if mode == "startup" else rng.uniform(0.0, 2.5)
                           if mode == "early" else rng.uniform(0.0, 0.3))
        assert proc.returncode == -signal.SIGKILL
        latest = _check_after_kill(run, floor)
        progress.append((mode, latest))
        floor = latest
    assert mid_write >= 2, f"only {mid_write} kills landed during a checkpoint write: {progress}"
    assert floor >= 5, progress  # the run made progress across the kills
    # finish: a few more epochs, then the run is complete and every epoch is logged once
    target = floor + 3
    done = subprocess.run(hamnet("train", "--resume", run, "--epochs", target, *TINY), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert load_checkpoint(run).epoch == target
    epochs = _completed_epochs(run)
    assert epochs == sorted(set(epochs)) and epochs[-1] == target
    assert _temp_folders(run) == set()  # stale temporary folders were cleaned up


def test_killed_export_leaves_no_half_bundle(run, tmp_path):
    rng = random.Random(7)
    fresh, forced = tmp_path / "fresh", tmp_path / "forced"
    subprocess.run(hamnet("export", run, "--out", forced, "--skip-parity-long"), check=True, cwd=tmp_path,
                   stdout=subprocess.DEVNULL)
    for _ in range(2):
        for target, extra in ((fresh, ()), (forced, ("--force",))):
            proc = spawn(hamnet("export", run, "--out", target, "--skip-parity-long", *extra), tmp_path)
            wait_for(proc, "model:")
            time.sleep(rng.uniform(0.0, 2.5))  # ONNX export, parity, manifest, rename
            with contextlib.suppress(ProcessLookupError):  # it may have finished already
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            if target is forced:  # the old bundle or the new one, never none or a mix
                assert target.exists(), "--force must never leave the target without a bundle"
            if target.exists():  # absent, or complete and valid (checksums included)
                assert load_bundle(target).feature_dim == 8
            if fresh.exists():
                shutil.rmtree(fresh)


@pytest.mark.parametrize("delay", [0.1, 0.25, 0.5, 0.9])
def test_ctrl_c_while_the_command_is_starting(data, tmp_path, delay):
    """Ctrl-C while Python is still importing the command line and its command: exit
    130 quietly, never a traceback."""
    proc = spawn(hamnet("train", "--data", data, "--out", tmp_path / "run", "--epochs", 100000, *TINY), tmp_path)
    time.sleep(delay)
    code, text = interrupt(proc)
    assert "Traceback" not in text, text
    assert code == 130 or (code == -signal.SIGINT and not text.strip()), (code, text)
    assert not (tmp_path / "run" / "checkpoints").exists() or hidden(tmp_path / "run" / "checkpoints") == []


def test_sigterm_is_handled_like_ctrl_c(data, run, tmp_path):
    """SIGTERM during train and during export: the same clean-up as Ctrl-C, one line,
    exit 143; the last checkpoint and the previous bundle intact, no temp folder."""
    out = tmp_path / "run"
    proc = train_until_a_checkpoint(data, out, tmp_path)
    code, text = interrupt(proc, sig=signal.SIGTERM)
    assert code == 143, text
    assert "Traceback" not in text and "terminated; the last finished epoch is saved" in text
    assert load_checkpoint(out, with_optimizer=True).optimizer_state is not None
    assert hidden(out / CHECKPOINTS) == []

    bundle = tmp_path / "bundle"
    subprocess.run(hamnet("export", run, "--out", bundle, "--skip-parity-long"), check=True, cwd=tmp_path,
                   stdout=subprocess.DEVNULL)
    manifest = (bundle / "manifest.json").read_bytes()
    proc = spawn(hamnet("export", run, "--out", bundle, "--force"), tmp_path)
    wait_for(proc, "model:")
    code, text = interrupt(proc, now=True, sig=signal.SIGTERM)
    assert code == 143 and "Traceback" not in text and "terminated" in text, text
    assert (bundle / "manifest.json").read_bytes() == manifest
    load_bundle(bundle)
    assert hidden(tmp_path) == [], "the staging folder was not removed"
