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
    """Files are written with --out; --json is the machine-readable log flag (in eval, the
    hidden old name of --out); the batch size is --batch-size."""
    import typer

    from hamnet_deploy.cli import app

    group = typer.main.get_command(app)
    for command, cmd in group.commands.items():
        names = {n for p in cmd.params for n in p.opts}
        assert "--batch" not in names or "--batch-size" in names, command
        for param in cmd.params:
            if "--json" in param.opts and command != "eval":
                assert param.is_flag, command
    assert any("--out" in group for group in _options()["eval"])
    for command in ("train", "export", "detect", "bench"):
        names = {n for group in _options()[command] for n in group}
        assert {"--json", "--quiet", "-q"} <= names, command


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


def test_json_log_and_quiet_in_every_long_command(tiny_data, tmp_path, monkeypatch):
    """`--json`: stdout is JSON lines only, ending with the command's result; `-q`: no
    per-epoch lines or tables, the command's own lines stay. The console is itself again
    after."""
    monkeypatch.chdir(tmp_path)
    small = ["--epochs", 1, "--set", "model.attention_dim=8", "--set", "data.num_snippets=8", "--set",
             "data.batch_size=4"]
    runs = {
        "train": ["train", "--data", tiny_data, "--out", "run", *small],
        "export": ["export", "run", "--out", "bundle", "--skip-parity-long"],
        "detect": ["detect", tiny_data / "videos", "--model", "bundle"],
        "bench": ["bench", "--model", "bundle", "--t", 8, "--repeats", 1],
    }
    last = {"train": "train.done", "export": "export.done", "detect": "detect.done", "bench": "bench.case"}
    for name, args in runs.items():
        result = cli(*args, "--json")
        assert result.exit_code == 0, result.output
        records = [json.loads(line) for line in result.stdout.splitlines()]  # every line is JSON
        assert records and records[-1]["event"] == last[name], result.stdout
    assert json.loads(cli(*runs["detect"], "--json").stdout)["videos"] == len(list((tiny_data / "videos").iterdir()))
    quiet = cli("train", "--data", tiny_data, "--out", "run-q", *small, "-q")
    assert quiet.exit_code == 0 and "run:" in quiet.stdout and "epoch 1/1" not in quiet.stdout, quiet.stdout
    assert "tIoU" not in quiet.stdout  # no evaluation table (warnings stay)
    brief = cli(*runs["detect"], "-q").stdout
    assert "backend" in brief and "top class" not in brief and "detections, T =" not in brief
    loud = cli(*runs["detect"])
    assert "backend" in loud.stdout  # -q and --json did not leave the console quiet


def test_annotations_take_a_dataset_folder_of_either_layout(built_bundle, tmp_path):
    """`-a` in detect and eval: the per-video dataset folder, its annotation JSON, the W-TALC
    dataset folder or its annotation folder all give the same ground truth and the same mAP."""
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset

    data = tmp_path / "data"
    generate_dataset(data, SynthConfig(videos=8, dim=16, num_classes=3, seed=5), wtalc=True, workers=1)
    wtalc = data / "wtalc"
    annotation_folder = next(p for p in wtalc.iterdir() if p.is_dir() and p.name.endswith("Annotations"))
    results = tmp_path / "r.json"
    assert cli("detect", data / "videos", "--model", built_bundle, "--out", results).exit_code == 0
    maps, clipped = [], []
    for i, gt in enumerate((data, data / "annotations.json", wtalc, annotation_folder)):
        report = tmp_path / f"e{i}.json"
        result = cli("eval", results, "-a", gt, "--out", report)
        assert result.exit_code == 0, (gt, result.output)
        maps.append(json.loads(report.read_text())["average_mAP"])
        assert cli("detect", data / "videos", "--model", built_bundle, "-a", gt, "--out", tmp_path / f"d{i}.json"
                   ).exit_code == 0
        clipped.append(json.loads((tmp_path / f"d{i}.json").read_text()))  # durations clip detections
    assert len(set(maps)) == 1
    assert all(c == clipped[0] for c in clipped)
