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
