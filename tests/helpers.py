"""Helpers the tests share: the CLI runner, the one-line-error assertion, a bundle with a
(fake) TensorRT engine."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from typer.testing import CliRunner


def cli(*args: object):
    """`hamnet ARGS` in-process (typer's CliRunner); the Result."""
    from hamnet_deploy.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, needle: str = "", code: int = 2) -> str:
    """Assert the command failed with `code`, no traceback and exactly one `error:` line
    (holding `needle`); return that line."""
    text = result.output
    assert result.exit_code == code, text
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in text, text
    errors = [x for x in text.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and needle in " ".join(errors[0].split()), text
    return errors[0]


def add_fake_engine(src: Path, dst: Path, cc: str = "9.0", trt: str = "10.3.0.26") -> Path:
    """A copy of bundle `src` whose manifest lists one (fake) FP16 engine built with
    TensorRT `trt` for compute capability `cc`, profile T 1..128, batch 4."""
    shutil.copytree(src, dst)
    data = b"not really an engine"
    (dst / "hamnet.engine").write_bytes(data)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["engines"] = [{"file": "hamnet.engine", "sha256": hashlib.sha256(data).hexdigest(),
                            "precision": "fp16", "tensorrt_version": trt, "gpu_name": "NVIDIA H100",
                            "compute_capability": cc, "dla_core": None,
                            "profile": {"min_t": 1, "opt_t": 64, "max_t": 128, "max_batch": 4}}]
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


TRAIN_ONLY = {"torch", "functorch", "torchgen", "triton", "nvidia", "onnx", "onnxslim", "safetensors",
              "matplotlib", "mpl_toolkits", "pylab"}
"""Top-level modules (and distributions) of PyTorch and the `train` extra: what a base
install (`pip install hamnet-deploy`) does not have."""


def base_install(folder: Path, keep: tuple[str, ...] = ()) -> Path:
    """A folder that, on PYTHONPATH of a `python -S` process, is this environment's
    site-packages without PyTorch and the train extra (links, nothing copied): the base
    install. `keep`: names of TRAIN_ONLY to keep (e.g. "onnx" for the int8 extra)."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    view = folder / ("base-site" + "".join(f"-{k}" for k in sorted(keep)))
    if view.is_dir():
        return view
    view.mkdir(parents=True)
    dropped = TRAIN_ONLY - set(keep)
    for entry in site.iterdir():
        top = entry.name.split("-")[0].split(".")[0].lower() if entry.name.endswith(".dist-info") else (
            entry.stem if entry.suffix == ".py" else entry.name)
        if top in dropped or entry.name.startswith("__editable__") or entry.suffix == ".pth":
            continue
        (view / entry.name).symlink_to(entry)
    return view


def run_base_cli(args: list[object], folder: Path, keep: tuple[str, ...] = (), prepend: tuple[Path, ...] = (),
                 env: dict[str, str] | None = None, timeout: float = 180):
    """`hamnet ARGS` in a subprocess that sees only the base install (`base_install`) plus
    `prepend` (e.g. TensorRT bindings); the CompletedProcess (text)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    run_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
    run_env.update(env or {})
    paths = [*map(str, prepend), str(base_install(folder, keep)), str(root)]
    run_env["PYTHONPATH"] = os.pathsep.join(paths)
    code = ("import sys; from hamnet_deploy.cli import main; sys.argv = ['hamnet'] + sys.argv[1:]; main()")
    return subprocess.run([sys.executable, "-S", "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=run_env, timeout=timeout, stdin=subprocess.DEVNULL, cwd=folder)
