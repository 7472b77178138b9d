"""One CLI: short flags mean one thing everywhere, `--out` is every command's file
output, one batch-size name, and `--device` takes cpu, cuda, cuda:N and N everywhere."""

from __future__ import annotations

import json

import pytest

from tests.helpers import cli, one_line_error


def _options() -> dict[str, list[tuple[str, ...]]]:
    """Command -> the option name tuples of its parameters."""
    import typer

    from hamnet_deploy.cli import app

    group = typer.main.get_command(app)
    return {name: [tuple(p.opts) for p in cmd.params] for name, cmd in group.commands.items()}


def test_short_flags_mean_one_thing_in_every_command():
    meaning: dict[str, set[str]] = {}
    for opts in _options().values():
        for names in opts:
            longs = [n for n in names if n.startswith("--")]
            for short in (n for n in names if len(n) == 2 and n.startswith("-")):
                meaning.setdefault(short, set()).add(longs[0] if longs else short)
    assert {k: v for k, v in meaning.items() if len(v) > 1} == {}


def test_one_name_for_outputs_and_batch_size():
    for command, opts in _options().items():
        names = {n for group in opts for n in group}
        assert "--batch" not in names or "--batch-size" in names, command
        assert "--json" not in names or command in ("doctor", "eval"), command  # eval: hidden old name of --out
    assert any("--out" in group for group in _options()["eval"])


def test_eval_out_and_its_old_name(built_bundle, tiny_data, tmp_path):
    results = tmp_path / "r.json"
    assert cli("detect", tiny_data / "videos", "--model", built_bundle, "--out", results).exit_code == 0
    for option in ("--out", "--json"):
        report = tmp_path / f"e{option}.json"
        assert cli("eval", results, "-a", tiny_data, option, report).exit_code == 0
        assert "average_mAP" in json.loads(report.read_text())
    one_line_error(cli("eval", results, "-a", tiny_data, "--out", tmp_path / "a.json", "--json", tmp_path / "b.json"),
                   "--json is the old name of --out")


def test_parse_device():
    from hamnet_deploy.runtime.devices import parse_device
    from hamnet_deploy.runtime.errors import ConfigError

    assert [parse_device(x) for x in ("auto", "cpu", "cuda", "cuda:3", "2", "CUDA:0")] == [
        ("auto", None), ("cpu", None), ("cuda", None), ("cuda", 3), ("cuda", 2), ("cuda", 0)]
    with pytest.raises(ConfigError, match="TensorRT is a backend, not a device"):
        parse_device("tensorrt")
    with pytest.raises(ConfigError, match="cuda:N or N"):
        parse_device("cuda:x")


def test_the_gpu_index_reaches_onnx_runtime():
    from hamnet_deploy.runtime.backends.onnxruntime import OrtTensorRTOptions, provider_list

    cuda, trt, cpu = "CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"
    assert provider_list("cuda", [cuda, cpu], "features", 16, gpu=1) == [(cuda, {"device_id": "1"}), cpu]
    assert provider_list("cuda", [cuda, cpu], "features", 16) == [cuda, cpu]
    chosen = provider_list("tensorrt", [trt, cuda, cpu], "features", 16, OrtTensorRTOptions(), "1.18.0", gpu=2)
    assert chosen[0][0] == trt and chosen[0][1]["device_id"] == "2" and chosen[1] == (cuda, {"device_id": "2"})


@pytest.mark.parametrize("device", ["cuda:0", "0", "tensorrt"])
def test_gpu_devices_without_a_gpu_fail_with_one_line(device, built_bundle, tiny_data, tmp_path):
    """No GPU here (and the CPU build of ONNX Runtime): detect, bench and train refuse
    `--device cuda:0` / `0` with one line; `tensorrt` is named a backend."""
    video = sorted((tiny_data / "videos").iterdir())[0]
    needle = "TensorRT is a backend" if device == "tensorrt" else ""
    one_line_error(cli("detect", video, "--model", built_bundle, "--device", device), needle)
    one_line_error(cli("bench", "--model", built_bundle, "--device", device, "--t", 8, "--repeats", 1), needle)
    train = cli("train", "--data", tiny_data, "--out", tmp_path / "run", "--epochs", 1, "--device", device)
    one_line_error(train, "device")
    assert not (tmp_path / "run").exists()
