"""What the commands write gets the permissions a plain open()/mkdir would give under the
user's umask (results, run folders and bundles are shared with colleagues and with
containers running as other users), and a replaced file keeps its mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.helpers import cli

TINY = ["--set", "model.attention_dim=8", "--set", "data.num_snippets=8", "--set", "data.batch_size=4",
        "--eval-every", "0", "--device", "cpu", "-q"]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(folder: Path) -> dict[str, str]:
    """Every path under `folder` (itself included) whose mode is not 0644 (files) / 0755 (folders)."""
    wrong = {}
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != (0o755 if path.is_dir() else 0o644):
            wrong[path.relative_to(folder.parent).as_posix()] = oct(mode)
    return wrong


def test_every_output_is_0644_and_every_folder_0755(umask_022, tmp_path, monkeypatch):
    monkeypatch.setenv("HAMNET_CACHE", str(tmp_path / "cache"))
    data, run, bundle = tmp_path / "data", tmp_path / "run", tmp_path / "bundle"
    assert cli("synth", data, "--videos", 6, "--dim", 8, "--classes", 2).exit_code == 0
    assert cli("train", "--data", data, "--out", run, "--epochs", 1, *TINY).exit_code == 0
    result = cli("export", run, "--out", bundle, "--skip-parity-long", "--int8-cpu", "--calib", data / "videos",
                 "--triton", tmp_path / "triton")
    assert result.exit_code == 0, result.output
    results = tmp_path / "out" / "results.json"
    assert cli("detect", data / "videos", "--model", bundle, "--out", results).exit_code == 0
    assert cli("eval", results, "-a", data / "annotations.json", "--json", tmp_path / "out" / "map.json",
               ).exit_code == 0
    assert cli("export", bundle, "--int8-cpu", "--calib", data / "videos", "--force").exit_code == 0
    for folder in (data, run, bundle, tmp_path / "triton", tmp_path / "out"):
        assert modes(folder) == {}, folder


def test_a_replaced_file_keeps_its_mode(umask_022, tmp_path, monkeypatch, built_bundle, tiny_data):
    results = tmp_path / "results.csv"
    results.write_text("old")
    results.chmod(0o600)  # private on purpose: stays private
    assert cli("detect", tiny_data / "videos", "--model", built_bundle, "--out", results,
               "--force").exit_code == 0
    assert stat.S_IMODE(results.stat().st_mode) == 0o600 and results.read_text() != "old"
