"""`hamnet export BUNDLE --trt`: engines built from a bundle's model.onnx and added to its
manifest in place (`export.bundle_update`), against the fake TensorRT; and a kill at
every file-system step of the update, after which the bundle still loads."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hamnet_deploy.runtime.backends.tensorrt import TensorRTRunner
from hamnet_deploy.runtime.bundle import load_bundle
from tests.helpers import cli, one_line_error
from tests.trt_api.fake_trt import fake_forward

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ["--min-t", 1, "--opt-t", 16, "--max-t", 64, "--max-batch", 2, "--workspace-mb", 64]


@pytest.fixture
def bundle(built_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(built_bundle, tmp_path / "bundle"))


def test_engine_built_from_a_bundle(fake_env, bundle, tiny_data, tmp_path):
    fake = fake_env("10.13.0.35")
    result = cli("export", bundle, "--trt", "--fp16", *PROFILE)
    assert result.exit_code == 0, result.output
    loaded = load_bundle(bundle)  # checksums of the old and the new files
    [engine] = loaded.engines
    assert engine.file == "hamnet_h100-80gb-hbm3_sm90_trt10.13.0_fp16.engine"
    assert engine.precision == "fp16" and engine.tensorrt_version == "10.13.0.35"
    assert engine.extra["source_onnx_sha256"] == loaded.model("onnx").sha256  # built from the bundle's ONNX
    assert fake.calls[0]["source"]["path"] == str(bundle / "model.onnx")
    assert loaded.manifest.source["updated"]
    x = np.random.default_rng(0).standard_normal((1, 10, loaded.feature_dim)).astype(np.float32)
    with TensorRTRunner(loaded.engine_path(engine), engine) as runner:
        cas, _ = runner.infer(x)
    np.testing.assert_allclose(cas, fake_forward(x, loaded.num_classes + 1)[0])

    # the same engine again: refused without --force; with it, rebuilt under a new name, the old deleted
    one_line_error(cli("export", bundle, "--trt", "--fp16", *PROFILE), "already has the engine "
                   "hamnet_h100-80gb-hbm3_sm90_trt10.13.0_fp16.engine")
    result = cli("export", bundle, "--trt", "--fp16", *PROFILE, "--force")
    assert result.exit_code == 0, result.output
    [again] = load_bundle(bundle).engines
    assert again.file == "hamnet_h100-80gb-hbm3_sm90_trt10.13.0_fp16-2.engine"
    assert not (bundle / engine.file).exists()
    # another precision is added beside it
    assert cli("export", bundle, "--trt", *PROFILE).exit_code == 0
    assert sorted(e.precision for e in load_bundle(bundle).engines) == ["fp16", "fp32"]
    assert not list(bundle.glob(".hamnet-update-*"))


def test_existing_engine_refused_before_building(fake_env, bundle, monkeypatch):
    """With TensorRT and the GPU known, a rebuild without --force is refused before the build."""
    fake = fake_env("10.13.0.35")
    assert cli("export", bundle, "--trt", "--fp16", *PROFILE).exit_code == 0
    from hamnet_deploy.runtime import devices

    monkeypatch.setattr(devices, "installed_tensorrt", lambda: "10.13.0.35")
    monkeypatch.setattr(devices, "cuda_devices", lambda: [{"name": "NVIDIA H100 80GB HBM3",
                                                            "compute_capability": "9.0"}])
    one_line_error(cli("export", bundle, "--trt", "--fp16", *PROFILE), "pass --force to rebuild it")
    assert len(fake.calls) == 1


@pytest.mark.parametrize("version, path", [("8.6.1", "builder_flags"), ("11.4.0.106", "graph")])
def test_int8_engine_calibrated_on_feature_files(fake_env, bundle, tiny_data, version, path):
    fake = fake_env(version)
    result = cli("export", bundle, "--trt", "--int8", "--calib", tiny_data / "videos", "--calib-videos", 3,
                 *PROFILE)
    assert result.exit_code == 0, result.output
    [engine] = load_bundle(bundle).engines
    assert engine.precision == "int8" and engine.extra["precision_path"] == path
    if path == "builder_flags":  # 8.x/10.x: the calibrator ran, its cache is kept in the bundle
        assert fake.calls[0]["calibration"]["batches"] >= 1
        cache = bundle / engine.extra["calibration_cache"]
        assert cache.read_bytes() == b"scales:%d" % fake.calls[0]["calibration"]["batches"]
        # a rebuild reuses the calibration cache: the features are not read again
        assert cli("export", bundle, "--trt", "--int8", "--calib", tiny_data / "videos", *PROFILE,
                   "--force").exit_code == 0
        assert fake.calls[1]["calibration"] == {"from_cache": cache.read_text()}
    else:  # 11.x: a Q/DQ graph, strongly typed
        assert fake.calls[0]["source"]["ops"].get("QuantizeLinear", 0) > 0


def test_damaged_bundle_refused_before_building(fake_env, bundle):
    fake = fake_env("10.13.0.35")
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "model.onnx").write_bytes(b"not the model")
    one_line_error(cli("export", bundle, "--trt", *PROFILE), "checksum mismatch")
    assert fake.calls == [] and json.loads((bundle / "manifest.json").read_text()) == manifest


KILL_SCRIPT = r"""
import os, signal, sys
from pathlib import Path

sys.path[:0] = [sys.argv[3]]
from tests.trt_api.fake_trt import H100, make_fake_trt

sys.modules["tensorrt"] = make_fake_trt("10.13.0.35")
from hamnet_deploy.export import tensorrt_build as tb
from hamnet_deploy.export.options import ExportOptions, TrtOptions
from hamnet_deploy.export.pipeline import update_bundle

tb.cuda_devices = lambda: [dict(H100)]
kill_at, count = int(sys.argv[2]), [0]

def counted(name, real):
    def call(*args, **kwargs):
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call

for name in ("replace", "rename", "unlink", "rmdir"):
    setattr(os, name, counted(name, getattr(os, name)))
opts = TrtOptions(fp16=True, min_t=1, opt_t=16, max_t=64, max_batch=2, workspace_mb=64)
update_bundle(Path(sys.argv[1]), ExportOptions(trt=opts, force=True))
print("steps", count[0])
"""


def test_a_kill_at_any_step_of_the_update_leaves_a_loadable_bundle(fake_env, bundle, tmp_path):
    """Rebuild (with --force) the engine of a bundle, killed (SIGKILL) at each of the
    update's file-system steps in turn: the bundle loads every time, with every checksum,
    and is either the old one or the new one."""
    fake_env("10.13.0.35")
    assert cli("export", bundle, "--trt", "--fp16", *PROFILE).exit_code == 0
    old = load_bundle(bundle).manifest.engines
    env = {**os.environ, "HAMNET_CACHE": str(tmp_path / "cache")}

    def run(kill_at: int, folder: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(folder), str(kill_at), str(ROOT)],
                              capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)

    full = run(0, Path(shutil.copytree(bundle, tmp_path / "full")))
    assert full.returncode == 0, full.stderr
    steps = int(full.stdout.split()[-1])
    assert steps >= 5
    outcomes = set()
    for kill_at in range(1, steps + 1):
        folder = Path(shutil.copytree(bundle, tmp_path / f"kill-{kill_at}"))
        out = run(kill_at, folder)
        assert out.returncode == -signal.SIGKILL, (kill_at, out.stderr)
        loaded = load_bundle(folder, verify=True)  # loads, every listed file matches its checksum
        engines = loaded.manifest.engines
        assert len(engines) == 1
        outcomes.add("old" if engines == old else "new")
        listed = {name for _, name, _ in loaded.manifest.files()}
        assert listed <= {p.name for p in folder.iterdir()}
    assert outcomes == {"old", "new"}  # killed both before and after the commit point
    digest = hashlib.sha256((tmp_path / "full" / "manifest.json").read_bytes()).hexdigest()
    assert digest != hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
