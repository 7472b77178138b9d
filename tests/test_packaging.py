"""The package as installed: one top-level `hamnet_deploy` (the layers inside it), the
layer rules of pyproject.toml (import-linter), and no stray top-level `runtime`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_layer_contracts_hold():
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install .` (no dependencies) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-compile", "--quiet", "--target", str(target), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return target


def _python(code: str, site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


def test_install_has_one_top_level_package(installed):
    top = {p.name for p in installed.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin"}
    assert top == {"hamnet_deploy"}
    pkg = installed / "hamnet_deploy"
    for part in ("runtime/backends/base.py", "training/synth/config.py", "training/recipes/thumos14.json",
                 "export/formats.py", "commands/detect.py"):
        assert (pkg / part).is_file(), part
    entry_points = next(installed.glob("hamnet_deploy-*.dist-info")) / "entry_points.txt"
    assert "hamnet_deploy.training.torch_runner:BACKEND" in entry_points.read_text()


def test_installed_layers_import_by_their_full_name_only(installed, tmp_path):
    ok = _python("import hamnet_deploy.runtime.bundle as b, hamnet_deploy as h; print(h.__version__, b.__file__)",
                 installed, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert str(installed) in ok.stdout
    for name in ("runtime", "training", "export"):
        bad = _python(f"import {name}", installed, tmp_path)
        assert bad.returncode != 0 and "ModuleNotFoundError" in bad.stderr, (name, bad.stdout)
    # from the checkout too, the top-level folders refuse to be imported under the old names
    bad = _python("import runtime", installed, ROOT)
    assert bad.returncode != 0 and "import hamnet_deploy.runtime" in bad.stderr
    cli = subprocess.run([sys.executable, "-m", "hamnet_deploy.cli", "--help"], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)}, timeout=120)
    assert cli.returncode == 0 and "detect" in cli.stdout, cli.stderr
