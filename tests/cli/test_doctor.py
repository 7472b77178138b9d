"""`hamnet doctor`: the backend table as this machine sees it, and what `--backend auto`
will use: the same as what `select_runner("auto")` starts, across simulated machines."""

import json

import pytest
from typer.testing import CliRunner

from hamnet_deploy.cli import app
from hamnet_deploy.commands.doctor import auto_choice
from hamnet_deploy.runtime.backends import registry
from hamnet_deploy.runtime.backends.base import BaseRunner
from hamnet_deploy.runtime.backends.select import select_runner
from hamnet_deploy.runtime.environment import Environment, probe
from tests.helpers import add_fake_engine

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
H100 = {"index": 0, "name": "NVIDIA H100", "compute_capability": "9.0", "memory_bytes": 80 << 30}


def test_probe_reports_the_backend_table_here():
    report = probe(details=False)
    names = {b.name: b for b in report.backends}
    assert set(names) == set(registry.names())  # doctor's names are --backend values
    assert names["onnxruntime"].works and "CPUExecutionProvider" in report.ort_providers
    assert report.packages["numpy"]
    if report.tensorrt is None:  # no TensorRT on the CI machine: the reason says how to get it
        assert not names["tensorrt"].works and "not installed" in names["tensorrt"].why


def test_doctor_cli_table_and_json():
    runner = CliRunner()
    result = runner.invoke(app, ["doctor", "--no-torch"])
    assert result.exit_code == 0, result.output
    assert "onnxruntime-int8" in result.output and "will use" in result.output
    if probe(details=False).tensorrt is None:
        assert "hamnet-deploy[trt]" in " ".join(result.output.split())
    result = runner.invoke(app, ["doctor", "--json", "--no-torch"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert {"packages", "backends", "ort_providers", "auto"} <= set(data)
    assert {b["name"] for b in data["backends"]} == set(registry.names())


class _Fake(BaseRunner):
    """Starts anywhere: stands in for a runner whose library this machine lacks."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def activate_impl(self) -> None:
        pass


@pytest.mark.parametrize("machine, engine_cc, expected", [
    ("no GPU", None, "onnxruntime"),
    ("ORT GPU build", None, "onnxruntime"),
    ("TensorRT, matching engine", "9.0", "tensorrt"),
    ("TensorRT, engine of another GPU", "8.7", "onnxruntime"),
    ("TensorRT, no engine", None, "onnxruntime"),
])
def test_doctor_says_what_auto_starts(built_bundle, tmp_path, monkeypatch, machine, engine_cc, expected):
    env = {"no GPU": Environment((CPU,)),
           "ORT GPU build": Environment((CUDA, CPU), (H100,)),
           }.get(machine, Environment((CPU,), (H100,), "10.3.0.26"))
    bundle = add_fake_engine(built_bundle, tmp_path / "b", engine_cc) if engine_cc else built_bundle
    made = []
    for name in ("tensorrt", "onnxruntime"):  # runners that start without the GPU libraries
        row = registry.get(name)

        def create(model, device, options, env, row=row):
            runner, reason = row.create(model, device, options, env)
            made.append((row.name, device))
            return _Fake(row.name), reason

        monkeypatch.setitem(registry._BACKENDS, name, row.__class__(**{**row.__dict__, "create": create}))
    monkeypatch.setattr(Environment, "current", classmethod(lambda cls: env))
    predicted, _ = auto_choice(bundle, env)
    selection = select_runner(bundle, env=env)
    assert predicted == selection.backend == expected
    if machine == "ORT GPU build":
        assert made[-1] == ("onnxruntime", "cuda")  # auto went to ONNX Runtime's CUDA provider
    result = CliRunner().invoke(app, ["doctor", "--no-torch", "--model", str(bundle)])
    assert result.exit_code == 0, result.output
    assert f"will use: {expected} " in " ".join(result.output.split())


def test_doctor_reports_the_driver_and_tensorrt_cuda(monkeypatch):
    """TensorRT for CUDA 13 on a CUDA 12.4 driver: doctor says it cannot run and how to fix
    it, and the tensorrt backend is not usable (auto skips it with that reason)."""
    old = Environment((CPU,), (H100,), "11.4.0.106", None, "12.4", 13)
    problem = "TensorRT 11.4.0.106 is built for CUDA 13 but the NVIDIA driver supports CUDA up to 12.4"
    report = probe(old, details=False)
    assert report.cuda_driver == "12.4" and report.tensorrt_cuda == 13 and report.tensorrt_runs is False
    assert any(w.startswith(problem) and "pip install tensorrt-cu12" in w for w in report.warnings)
    assert problem in registry.get("tensorrt").why_not(old)
    ok = Environment((CPU,), (H100,), "10.13.0.35", None, "12.4", 12)
    assert probe(ok, details=False).tensorrt_runs is True and registry.get("tensorrt").why_not(ok) is None
    assert probe(Environment((CPU,), (H100,), "8.6.1", None, "12.4", None), details=False).tensorrt_runs is None

    monkeypatch.setattr(Environment, "current", classmethod(lambda cls: old))
    result = CliRunner().invoke(app, ["doctor", "--no-torch"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "CUDA driver: supports CUDA up to 12.4" in text
    assert "TensorRT: 11.4.0.106, built for CUDA 13: cannot run on this driver" in text
    assert f"warning: {problem}" in text
