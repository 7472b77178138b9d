import json

from typer.testing import CliRunner

from hamnet_deploy.cli import app
from hamnet_deploy.runtime.environment import probe


def test_probe_reports_cpu_backend_here():
    env = probe(check_torch=False)
    names = {b.name: b for b in env.backends}
    assert names["onnxruntime-cpu"].works
    assert "CPUExecutionProvider" in env.ort_providers
    assert env.packages["numpy"]
    # no TensorRT on the CI machine: the reason must say how to get it
    if env.tensorrt is None:
        assert not names["tensorrt"].works and "not installed" in names["tensorrt"].why


def test_doctor_cli_table_and_json():
    runner = CliRunner()
    result = runner.invoke(app, ["doctor", "--no-torch"])
    assert result.exit_code == 0, result.output
    assert "onnxruntime-cpu" in result.output and "will use" in result.output
    if probe(check_torch=False).tensorrt is None:
        assert "hamnet-deploy[trt]" in " ".join(result.output.split())
    result = runner.invoke(app, ["doctor", "--json", "--no-torch"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert {"packages", "backends", "ort_providers"} <= set(data)
