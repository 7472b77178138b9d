"""One rule for existing outputs in every command, one-line usage errors, and text that
can always be printed (file names that are not UTF-8, ASCII terminals)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import cli, one_line_error


def test_every_command_treats_an_existing_output_the_same_way(built_bundle, tiny_data, tiny_run, tmp_path):
    """An existing output is refused without --force and left as it was; with --force it
    is replaced atomically. Folders the tool does not own are never emptied."""
    videos = tiny_data / "videos"
    out = tmp_path / "r.csv"
    out.write_text("mine\n")
    one_line_error(cli("detect", videos, "--model", built_bundle, "--out", out), "already exists; pass --force")
    assert out.read_text() == "mine\n"
    assert cli("detect", videos, "--model", built_bundle, "--out", out, "--force").exit_code == 0
    assert out.read_text().startswith("video")
    report = tmp_path / "eval.json"
    report.write_text("mine\n")
    one_line_error(cli("eval", out, "-a", tiny_data, "--out", report), "--out")
    assert report.read_text() == "mine\n"
    assert cli("eval", out, "-a", tiny_data, "--out", report, "-f").exit_code == 0
    one_line_error(cli("eval", out, "-a", tiny_data, "--json", report), "--json")  # its old name, same rule
    assert "average_mAP" in json.loads(report.read_text())
    plots = tmp_path / "plots"
    plots.mkdir()
    first = sorted(videos.iterdir())[0]
    (plots / f"{first.stem}.png").write_bytes(b"mine")
    one_line_error(cli("detect", first, "--model", built_bundle, "--plot", plots), f"{first.stem}.png already exists")
    assert (plots / f"{first.stem}.png").read_bytes() == b"mine"
    # the commands that write folders: the same answer, in their words
    one_line_error(cli("export", tiny_run, "--out", built_bundle), "--force")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("mine")
    one_line_error(cli("synth", taken, "--videos", 4, "--dim", 8), "--force")
    assert (taken / "x").read_text() == "mine"


def test_triton_force_never_deletes_files_it_did_not_write(built_bundle, tmp_path):
    repo = tmp_path / "repo"
    assert cli("export", built_bundle, "--triton", repo).exit_code == 0
    model = repo / "hamnet"
    assert (model / "config.pbtxt").is_file()
    one_line_error(cli("export", built_bundle, "--triton", repo), "pass --force")
    assert cli("export", built_bundle, "--triton", repo, "--force").exit_code == 0
    (model / "2").mkdir()
    (model / "2" / "model.onnx").write_bytes(b"a version the user added")
    (model / "notes.txt").write_text("mine")
    one_line_error(cli("export", built_bundle, "--triton", repo, "--force"), "holds files hamnet export did not write")
    assert (model / "notes.txt").read_text() == "mine" and (model / "2" / "model.onnx").is_file()


@pytest.mark.parametrize("args, needle", [
    (["detect", "x.npy", "--batch-size", "abc"], "'--batch-size'"),
    (["train", "--data", "d", "--seed", "1e23"], "'--seed'"),
    (["detect", "-x.npy"], "put it after '--'"),
    (["detect", "x.npy", "--bogus"], "No such option: --bogus"),
    (["export"], "Missing argument"),
    (["nosuch"], "No such command"),
])
def test_usage_errors_are_one_line(args, needle):
    line = one_line_error(cli(*args), needle)
    assert "--help" in line or "'--'" in line


def test_settings_are_validated_before_anything_is_written(tiny_data, tmp_path):
    """A bad --seed (or any setting) is refused before the run folder is created, and on
    --resume before RUN/config.json is touched: later resumes still work."""
    run = tmp_path / "run"
    for seed in ("-1", "-4", str(2 ** 64)):
        one_line_error(cli("train", "--data", tiny_data, "--out", run, "--epochs", 1, "--seed", seed), "--seed")
        assert not run.exists()
    tiny = ["--set", "model.attention_dim=8", "--set", "data.num_snippets=8", "--set", "data.batch_size=4"]
    assert cli("train", "--data", tiny_data, "--out", run, "--epochs", 1, *tiny).exit_code == 0
    before = (run / "config.json").read_bytes()
    one_line_error(cli("train", "--resume", run, "--seed", "-4"), "--seed -4: must be >= 0")
    one_line_error(cli("train", "--resume", run, "--epochs", 2, "--set", "optim.lr=-1"), "optim.lr")
    assert (run / "config.json").read_bytes() == before
    assert cli("train", "--resume", run, "--epochs", 2).exit_code == 0


def _hamnet(*args: object, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "hamnet_deploy.cli", *map(os.fsencode, map(str, args))],
                          capture_output=True, env=full, cwd=cwd, timeout=300)


def test_non_utf8_file_names_on_an_ascii_terminal(built_bundle, tiny_data, tmp_path):
    """A file name that is not UTF-8 in --out and in an input, printed on a terminal
    that only takes ASCII: escapes (`\\xff`), never a UnicodeEncodeError."""
    first = sorted((tiny_data / "videos").iterdir())[0]
    name = os.fsdecode(b"r\xff.csv")
    done = _hamnet("detect", first, "--model", built_bundle, "--out", name, cwd=tmp_path,
                   env={"PYTHONIOENCODING": "ascii"})
    text = (done.stdout + done.stderr).decode("ascii", "replace")
    assert done.returncode == 0 and "Traceback" not in text, text
    assert "wrote r\\xff.csv" in text and (tmp_path / os.fsencode(name).decode("utf-8", "surrogateescape")).is_file()
    missing = _hamnet("detect", os.fsdecode(b"no\xfe.npy"), "--model", built_bundle, cwd=tmp_path,
                      env={"PYTHONIOENCODING": "ascii"})
    err = missing.stderr.decode("ascii", "replace")
    assert missing.returncode == 2 and "Traceback" not in err and "no\\xfe.npy" in err, err


def test_a_fifo_is_not_a_feature_file(built_bundle, tmp_path):
    fifo = tmp_path / "video.npy"
    os.mkfifo(fifo)
    one_line_error(cli("detect", fifo, "--model", built_bundle), "not a regular file (a pipe, socket or device)")


def test_settings_too_large_for_memory_are_one_line(tiny_data, tmp_path):
    """Model sizes past any sane bound are refused by the settings check; sizes within it
    that do not fit in memory (here under a 6 GB address-space limit) end in one line
    naming the settings, not PyTorch's allocator traceback."""
    import resource

    one_line_error(cli("train", "--data", tiny_data, "--out", tmp_path / "a", "--set", "model.attention_dim=10000000000"),
                   "model.attention_dim=10000000000: must be <= 65536")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    done = subprocess.run([sys.executable, "-m", "hamnet_deploy.cli", "train", "--data", str(tiny_data), "--out",
                           str(tmp_path / "b"), "--epochs", "1", "--set", "model.attention_dim=65536", "--set",
                           "data.batch_size=65536", "--set", "data.num_snippets=100000"],
                          capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "not enough memory for the model and batch these settings make" in done.stderr, done.stderr
