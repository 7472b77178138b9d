"""`hamnet export BUNDLE ...`: adding to a bundle in place, on a machine without PyTorch
(a subprocess that sees only the base install), with the checks a user's files need:
a damaged bundle is refused before anything is made, an existing model is replaced only
with --force, the manifest keeps its permissions, options that need the checkpoint are
refused. TensorRT from a bundle: tests/trt_api/test_trt_bundle_update.py."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hamnet_deploy.runtime.bundle import load_bundle
from tests.helpers import cli, one_line_error, run_base_cli


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) and its sha256."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def bundle(built_bundle, tmp_path) -> Path:
    """A copy of the tiny exported bundle (ONNX only)."""
    return Path(shutil.copytree(built_bundle, tmp_path / "bundle"))


def test_int8_cpu_from_a_bundle_without_torch(bundle, tiny_data, tmp_path):
    (bundle / "manifest.json").chmod(0o640)
    shutil.copy(bundle / "manifest.json", str(bundle) + "-before.json")
    before = tree(bundle)
    out = run_base_cli(["export", bundle, "--int8-cpu", "--calib", tiny_data / "videos", "--calib-videos", 4],
                       tmp_path, keep=("onnx",))
    assert out.returncode == 0, out.stderr + out.stdout
    loaded = load_bundle(bundle)  # every checksum checked
    int8 = loaded.model("onnx_int8")
    assert int8.file == "model.int8.onnx" and int8.precision == "int8"
    assert int8.extra["quantization"]["calib_videos"] == 4
    original = json.loads((Path(str(bundle) + "-before.json")).read_text())
    assert loaded.manifest.source == {**original["source"], "updated": loaded.manifest.source["updated"]}
    assert loaded.manifest.engines == () and loaded.manifest.models["onnx"].to_dict() == original["models"]["onnx"]
    assert (bundle / "manifest.json").stat().st_mode & 0o777 == 0o640  # the user's permissions are kept
    after = tree(bundle)
    assert after["model.onnx"] == before["model.onnx"] and not any(n.startswith(".") for n in after)
    result = cli("detect", tiny_data / "videos", "--model", bundle, "--backend", "onnxruntime-int8",
                 "-o", tmp_path / "dets.json")
    assert result.exit_code == 0, result.output

    # an INT8 model is there: replaced only with --force, under a new name, the old one deleted
    one_line_error(cli("export", bundle, "--int8-cpu", "--calib", tiny_data / "videos"),
                   "already has the onnx_int8 model (model.int8.onnx); pass --force")
    assert tree(bundle) == after
    result = cli("export", bundle, "--int8-cpu", "--calib", tiny_data / "videos/*.npy", "--calib-videos", 2,
                 "--force")
    assert result.exit_code == 0, result.output
    again = load_bundle(bundle)
    assert again.model("onnx_int8").file == "model.int8-2.onnx"
    assert not (bundle / "model.int8.onnx").exists() and (bundle / "model.int8-2.onnx").is_file()
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.int8-2.onnx", "model.onnx"]


def test_trt_from_a_bundle_in_the_base_install(bundle, tmp_path):
    """No TensorRT (and no PyTorch): one line saying so, exit 2, the bundle untouched."""
    before = tree(bundle)
    out = run_base_cli(["export", bundle, "--trt", "--fp16"], tmp_path)
    assert out.returncode == 2, out.stderr + out.stdout
    assert "Traceback" not in out.stderr + out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: TensorRT is not installed"), out.stderr
    assert "the ONNX model of the bundle is unchanged" in errors[0]
    assert tree(bundle) == before


def test_a_damaged_bundle_is_refused_before_anything_is_made(bundle, tiny_data):
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    before = tree(bundle)
    one_line_error(cli("export", bundle, "--int8-cpu", "--calib", tiny_data / "videos"), "checksum mismatch")
    assert tree(bundle) == before


@pytest.mark.parametrize("extra, needle", [
    (["--out", "elsewhere"], "--out applies when exporting a checkpoint"),
    (["--verify", "."], "--verify applies when exporting a checkpoint"),
    (["--opset", "18"], "--opset applies when exporting a checkpoint"),
    (["--skip-parity-long"], "--skip-parity-long applies when exporting a checkpoint"),
])
def test_checkpoint_only_options_are_refused(bundle, extra, needle):
    before = tree(bundle)
    one_line_error(cli("export", bundle, "--trt", *extra), needle)
    assert tree(bundle) == before


def test_nothing_to_add(bundle):
    one_line_error(cli("export", bundle), "is already a bundle: add --trt, --int8-cpu or --triton")


def test_calibration_files_are_checked_like_detect(bundle, tmp_path):
    bad = tmp_path / "calib"
    bad.mkdir()
    np.save(bad / "a.npy", np.zeros((20, 16), np.float32))
    np.save(bad / "b.npy", np.zeros((20, 7), np.float32))
    line = one_line_error(cli("export", bundle, "--int8-cpu", "--calib", bad))
    assert "b.npy: features are 7-D but 16-D are expected" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    line = one_line_error(cli("export", bundle, "--int8-cpu", "--calib", empty))
    assert "folder holds no .npy or .npz files, and it is not a dataset" in line
    one_line_error(cli("export", bundle, "--int8-cpu", "--calib", tmp_path / "nothing-*.npy"),
                   "not found; pass feature files")
    assert not (bundle / "model.int8.onnx").exists() and not list(bundle.glob(".hamnet-update-*"))
