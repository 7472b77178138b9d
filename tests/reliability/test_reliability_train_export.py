"""Bad inputs and faults for `hamnet train` and `hamnet export` (docs/RELIABILITY.md).

Every case runs the real command line in process and checks for a one-line `error:`
with exit code 2 and no traceback, and that nothing was left half-written (the
previous checkpoint or bundle still loads).
"""

from __future__ import annotations

import errno
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hamnet_deploy.runtime.bundle import load_bundle
from hamnet_deploy.training.checkpoint import load_checkpoint
from tests.helpers import cli, one_line_error

D, C = 8, 2
TINY = ["--set", "model.attention_dim=8", "--set", "data.num_snippets=8", "--set", "data.batch_size=4",
        "--eval-every", "0", "--device", "cpu", "-q"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Nothing here may fall back to generating the embedded dataset in the user's cache."""
    monkeypatch.setenv("HAMNET_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny dataset and a 2-epoch run made by `hamnet train` (so --resume finds its data)."""
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("train-export")
    generate_dataset(root / "data", SynthConfig(videos=6, dim=D, num_classes=C, seed=5))
    result = cli("train", "--data", root / "data", "--out", root / "run", "--epochs", 2, *TINY)
    assert result.exit_code == 0, result.output
    return {"root": root, "data": root / "data", "run": root / "run"}


def copy_data(env, dst: Path, edit=None) -> Path:
    shutil.copytree(env["data"], dst)
    if edit:
        edit(dst, sorted((dst / "videos").iterdir())[2])
    return dst


def copy_run(env, dst: Path, edit=None) -> Path:
    shutil.copytree(env["run"], dst)
    if edit:
        ckpt = dst / json.loads((dst / "latest.json").read_text())["path"]
        edit(dst, ckpt)
    return dst


def _state(edit):
    def apply(run: Path, ckpt: Path) -> None:
        state = json.loads((ckpt / "state.json").read_text())
        edit(state)
        (ckpt / "state.json").write_text(json.dumps(state))
    return apply


def _weights(edit):
    def apply(run: Path, ckpt: Path) -> None:
        from safetensors.torch import load_file, save_file

        w = load_file(str(ckpt / "model.safetensors"))
        edit(w)
        save_file(w, str(ckpt / "model.safetensors"))
    return apply


def _npy_header_claiming(shape) -> bytes:
    from numpy.lib import format as npy_format

    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 64


# --------------------------------------------------------------------------- #
#                               train: bad data                               #
# --------------------------------------------------------------------------- #
DATA_CASES = {
    "D-mismatch": (lambda d, v: np.save(v, np.zeros((20, D + 2), np.float32)), "10-D but 8-D are expected"),
    "NaN": (lambda d, v: np.save(v, np.full((20, D), np.nan, np.float32)), "NaN or infinity"),
    "T=0": (lambda d, v: np.save(v, np.zeros((0, D), np.float32)), "no snippets (T = 0)"),
    "int64": (lambda d, v: np.save(v, np.zeros((20, D), np.int64)), "2-D floating array"),
    "rank-3": (lambda d, v: np.save(v, np.zeros((1, 20, D), np.float32)), "2-D floating array"),
    "object-array": (lambda d, v: np.save(v, np.array([np.zeros((2, D))], dtype=object), allow_pickle=True),
                     "object array"),
    "truncated": (lambda d, v: v.write_bytes(v.read_bytes()[:150]), "truncated or corrupt"),
    "huge-shape-in-header": (lambda d, v: v.write_bytes(_npy_header_claiming((10**12, D))), "header says shape"),
    "missing-video-file": (lambda d, v: v.unlink(), "not found"),
    "annotations-truncated": (lambda d, v: (d / "annotations.json").write_text("{"), "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_training_data(env, tmp_path, case):
    edit, needle = DATA_CASES[case]
    data = copy_data(env, tmp_path / "data", edit)
    one_line_error(cli("train", "--data", data, "--out", tmp_path / "run", "--epochs", 1, *TINY), needle)


def test_float16_and_single_snippet_videos_train(env, tmp_path):
    def edit(d: Path, v: Path) -> None:
        np.save(v, np.load(v).astype(np.float16))
        np.save(sorted((d / "videos").iterdir())[3], np.ones((1, D), np.float32))

    data = copy_data(env, tmp_path / "data", edit)
    result = cli("train", "--data", data, "--out", tmp_path / "run", "--epochs", 1, *TINY)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args, needle", [
    (("--data", "{tmp}/nope", "--out", "{tmp}/run"), "dataset path not found"),
    (("--data", "{data}", "--out", "{tmp}/file"), "cannot create the run folder"),
    (("--data", "{data}", "--out", "{tmp}/file/run"), "cannot create the run folder"),
    (("--data", "{data}", "--out", "{tmp}/run", "--set", "loss.r=0.3"), "loss.r=0.3"),
    (("--data", "{data}", "--out", "{tmp}/run", "--set", "optim.lr=abc"), "optim.lr"),
    (("--data", "{data}", "--out", "{tmp}/run", "--recipe", "{tmp}/deep.json"), "JSON nested too deeply to read"),
    (("--data", "{data}", "--out", "{tmp}/run", "--recipe", "{tmp}/file"), "not valid JSON"),
])
def test_bad_training_arguments(env, tmp_path, args, needle):
    (tmp_path / "file").write_text("x")
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    args = [a.format(tmp=tmp_path, data=env["data"]) for a in args]
    one_line_error(cli("train", *args, "--epochs", 1, *TINY), needle)


def test_existing_run_is_not_overwritten(env):
    one_line_error(cli("train", "--data", env["data"], "--out", env["run"], "--epochs", 1, *TINY), "--resume")


# --------------------------------------------------------------------------- #
#                              train: resuming                                #
# --------------------------------------------------------------------------- #
def _torch_save(obj):
    def apply(run: Path, ckpt: Path) -> None:
        torch.save(obj, ckpt / "optimizer.pt")
    return apply


RESUME_CASES = {
    "config-truncated": (lambda r, c: (r / "config.json").write_text("{"), "config.json: not valid JSON"),
    "config-nested-100000-deep": (lambda r, c: (r / "config.json").write_text("[" * 100000 + "]" * 100000),
                                  "config.json: JSON nested too deeply"),
    "config-binary": (lambda r, c: (r / "config.json").write_bytes(b"\xff\xfe\x00"), "run config is not UTF-8 text"),
    "optimizer-random-bytes": (lambda r, c: (c / "optimizer.pt").write_bytes(bytes(range(256)) * 2),
                               "corrupt optimizer state"),
    "optimizer-truncated": (lambda r, c: (c / "optimizer.pt").write_bytes((c / "optimizer.pt").read_bytes()[:300]),
                            "corrupt optimizer state"),
    "optimizer-other-model": (_torch_save({"state": {}, "param_groups": [{"params": [0]}]}), "does not fit"),
    "optimizer-a-list": (_torch_save([1, 2]), "does not fit"),
    "weights-wrong-shape": (_weights(lambda w: w.update({k: w[k][..., :1].contiguous() for k in list(w)[:1]})),
                            "weights do not fit"),
    "weights-missing-tensor": (_weights(lambda w: w.pop(next(iter(w)))), "weights do not fit"),
    "weights-truncated": (lambda r, c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:99]),
                          "corrupt or truncated weights"),
    "state-epoch-negative": (_state(lambda s: s.update(epoch=-5)), "epoch -5"),
    "state-no-config": (_state(lambda s: s.pop("config")), "corrupt checkpoint state"),
    "latest-absolute-path": (lambda r, c: (r / "latest.json").write_text(json.dumps({"path": str(c.resolve())})),
                             "leaves the run folder"),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_bad_run_folder_on_resume(env, tmp_path, case):
    edit, needle = RESUME_CASES[case]
    run = copy_run(env, tmp_path / "run", edit)
    one_line_error(cli("train", "--resume", run, "--epochs", 3, *TINY), needle)


def test_resume_survives_a_damaged_metrics_log(env, tmp_path):
    run = copy_run(env, tmp_path / "run")
    with open(run / "metrics.jsonl", "ab") as fh:
        fh.write(b'[1, 2]\n"text"\n{"epoch": "x"}\n\xff\xfe\n{"epoch": 2, "lo')  # a kill cut the last line
    result = cli("train", "--resume", run, "--epochs", 3, *TINY)
    assert result.exit_code == 0, result.output
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_resume_with_another_dataset_is_refused(env, tmp_path):
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset

    generate_dataset(tmp_path / "more", SynthConfig(videos=4, dim=D, num_classes=C + 1, seed=2))
    generate_dataset(tmp_path / "wider", SynthConfig(videos=4, dim=D * 2, num_classes=C, seed=2))
    run = copy_run(env, tmp_path / "run")
    one_line_error(cli("train", "--resume", run, "--data", tmp_path / "more", "--epochs", 3, *TINY), "has 3")
    one_line_error(cli("train", "--resume", run, "--data", tmp_path / "wider", "--epochs", 3, *TINY), "has 16-D")


def test_resume_before_the_first_checkpoint_starts_over(env, tmp_path):
    """Killed after config.json but before the first checkpoint: --resume starts at epoch 1."""
    run = copy_run(env, tmp_path / "run")
    shutil.rmtree(run / "checkpoints")
    (run / "latest.json").unlink()
    result = cli("train", "--resume", run, "--epochs", 1, *TINY)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run).epoch == 1


def test_resume_when_the_pointer_was_never_written(env, tmp_path):
    """Killed between the first checkpoint's rename and latest.json: the newest folder is used."""
    run = copy_run(env, tmp_path / "run")
    (run / "latest.json").unlink()
    assert load_checkpoint(run).epoch == 2
    result = cli("train", "--resume", run, "--epochs", 3, *TINY)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run).epoch == 3


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(env, tmp_path, monkeypatch):
    run = copy_run(env, tmp_path / "run")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("hamnet_deploy.training.checkpoint.save_file", full)
    one_line_error(cli("train", "--resume", run, "--epochs", 3, *TINY), "No space left on device")
    monkeypatch.undo()
    ckpt = load_checkpoint(run, with_optimizer=True)
    assert ckpt.epoch == 2 and ckpt.optimizer_state is not None
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")] == []


def test_full_disk_while_logging_metrics(env, tmp_path, monkeypatch):
    run = copy_run(env, tmp_path / "run")
    import hamnet_deploy.training.trainer as trainer

    real_open = open

    def full_on_append(path, mode="r", *args, **kwargs):
        if str(path).endswith("metrics.jsonl") and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(trainer, "open", full_on_append, raising=False)
    one_line_error(cli("train", "--resume", run, "--epochs", 3, *TINY), "No space left on device")
    assert load_checkpoint(run).epoch == 3  # the checkpoint came first; the log line is all that is lost


def test_checkpoint_pruning_keeps_the_latest_past_epoch_9999(tmp_path):
    from hamnet_deploy.training.checkpoint import save_checkpoint
    from hamnet_deploy.training.config import ModelConfig
    from hamnet_deploy.training.model import HamNet

    model = HamNet.from_config(ModelConfig(feature_dim=D, num_classes=C, attention_dim=8))
    for epoch in (9998, 9999, 10000, 10001):
        save_checkpoint(tmp_path, epoch, model, None, {"classes": ["a", "b"], "config": {}})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-10000", "epoch-10001"]
    assert load_checkpoint(tmp_path).epoch == 10001


# --------------------------------------------------------------------------- #
#                             export: bad checkpoints                         #
# --------------------------------------------------------------------------- #
EXPORT_CASES = {
    "weights-truncated": (lambda r, c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:500]),
                          "corrupt or truncated weights"),
    "weights-random-bytes": (lambda r, c: (c / "model.safetensors").write_bytes(bytes(range(256)) * 4),
                             "corrupt or truncated weights"),
    "weights-missing": (lambda r, c: (c / "model.safetensors").unlink(), "not a checkpoint"),
    "state-truncated": (lambda r, c: (c / "state.json").write_text("{"), "corrupt checkpoint state"),
    "state-nested-100000-deep": (lambda r, c: (c / "state.json").write_text("[" * 100000 + "]" * 100000),
                                 "corrupt checkpoint state"),
    "state-no-config": (_state(lambda s: s.pop("config")), "corrupt checkpoint state"),
    "state-config-not-an-object": (_state(lambda s: s.update(config=5)), "'config' must be an object"),
    "state-classes-not-names": (_state(lambda s: s.update(classes=[1, 2])), "'classes' must be a non-empty list"),
    "another-class-count": (_state(lambda s: s.update(classes=[*s["classes"], "Extra"])), "lists 3"),
    "another-class-count-everywhere": (_state(lambda s: (s.update(classes=[*s["classes"], "Extra"]),
                                                        s["config"]["model"].update(num_classes=C + 1))),
                                       "weights do not fit"),
    "state-bad-postprocess": (_state(lambda s: s["postprocess"].update(nms="fastest")), "state.json"),
}
for _pointer in ("latest", "best"):  # export takes best.json's checkpoint, else latest.json's
    def _write(text, name=_pointer):
        return lambda r, c: ((r / "best.json").unlink(missing_ok=True), (r / f"{name}.json").write_text(text))

    EXPORT_CASES[f"{_pointer}-unreadable"] = (_write("[1]"), "unreadable checkpoint pointer")
    EXPORT_CASES[f"{_pointer}-dotdot"] = (_write(json.dumps({"path": "../../etc"})), "leaves the run folder")
    EXPORT_CASES[f"{_pointer}-absolute"] = (_write(json.dumps({"path": "/etc"})), "leaves the run folder")


@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_bad_checkpoint_is_refused_by_export(env, tmp_path, case):
    edit, needle = EXPORT_CASES[case]
    run = copy_run(env, tmp_path / "run", edit)
    one_line_error(cli("export", run, "--out", tmp_path / "bundle", "--skip-parity-long"), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no bundle, no staging folder


def test_export_targets_that_cannot_be_used(env, tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(cli("export", tmp_path / "nope"), "checkpoint not found")
    one_line_error(cli("export", env["run"], "--out", tmp_path / "file"), "not a folder")
    one_line_error(cli("export", env["run"], "--out", tmp_path / "file" / "bundle"), "a part of its path is a file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    one_line_error(cli("export", env["run"], "--out", tmp_path / "mine"), "never deleted")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_full_disk_during_export_keeps_the_previous_bundle(env, tmp_path, monkeypatch):
    import os

    bundle = tmp_path / "bundle"
    assert cli("export", env["run"], "--out", bundle, "--skip-parity-long").exit_code == 0
    before = (bundle / "manifest.json").read_bytes()
    real_fdopen = os.fdopen

    class Full(io.RawIOBase):
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def fileno(self):
            return self.handle.fileno()

        def close(self):
            self.handle.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    one_line_error(cli("export", env["run"], "--out", bundle, "--force", "--skip-parity-long"), "No space left")
    monkeypatch.undo()
    assert (bundle / "manifest.json").read_bytes() == before
    load_bundle(bundle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # the staging folder was removed


def test_read_only_folders(env, tmp_path, monkeypatch):
    """Read-only folders, simulated (chmod does not stop root): creating the bundle's staging
    folder, the run folder or a checkpoint folder fails with EACCES."""
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    one_line_error(cli("export", env["run"], "--out", tmp_path / "bundle", "--skip-parity-long"), "Permission denied")
    run = copy_run(env, tmp_path / "run")
    one_line_error(cli("train", "--resume", run, "--epochs", 3, *TINY), "Permission denied")
    monkeypatch.setattr(Path, "mkdir", denied)
    one_line_error(cli("train", "--data", env["data"], "--out", tmp_path / "new", "--epochs", 1, *TINY),
                   "Permission denied")
    monkeypatch.undo()
    assert load_checkpoint(run).epoch == 2


def test_force_replaces_only_a_bundle_and_only_its_files(env, tmp_path):
    """`--force` over a folder with a manifest.json that is not a bundle's, or a bundle
    holding a file it does not list: refused, every file kept; a plain bundle is replaced."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "manifest.json").write_text('{"name": "my web app"}')
    (fake / "index.html").write_text("keep me")
    one_line_error(cli("export", env["run"], "--out", fake, "--force"), "is not a hamnet bundle's")
    assert (fake / "index.html").read_text() == "keep me" and (fake / "manifest.json").is_file()
    bundle = tmp_path / "bundle"
    assert cli("export", env["run"], "--out", bundle, "--skip-parity-long").exit_code == 0
    (bundle / "notes.txt").write_text("mine")
    (bundle / "sub").mkdir()
    (bundle / "sub" / "data.bin").write_bytes(b"mine too")
    line = one_line_error(cli("export", env["run"], "--out", bundle, "--force"), "does not list")
    assert "notes.txt" in line and "sub/data.bin" in line
    assert (bundle / "notes.txt").read_text() == "mine" and (bundle / "sub" / "data.bin").is_file()
    (bundle / "notes.txt").unlink()
    shutil.rmtree(bundle / "sub")
    result = cli("export", env["run"], "--out", bundle, "--force", "--skip-parity-long")
    assert result.exit_code == 0, result.output


def test_stale_temp_folders_of_killed_processes_are_removed(env, tmp_path):
    """Staging and aside folders carry their process id: the next export to the same place
    removes those of processes that are gone (a kill -9 left them), never a live one's."""
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    bundle = tmp_path / "bundle"
    stale = [tmp_path / f".bundle.tmp-{dead}-abc", tmp_path / f".bundle.old-{dead}-def"]
    live = tmp_path / f".bundle.tmp-{os.getppid()}-ghi"
    other = tmp_path / ".bundle.tmp-nopid"
    for folder in (*stale, live, other):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"half")
    result = cli("export", env["run"], "--out", bundle, "--skip-parity-long")
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in stale)
    assert live.is_dir() and other.is_dir()  # a live process's, and one without a process id: kept
