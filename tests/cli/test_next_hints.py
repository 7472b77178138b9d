"""Every `next:` hint a command prints is a command that runs: synth -> train ->
export -> detect, each started from the previous one's hint (with options that keep it
small appended), and the in-place export's hint too."""

from __future__ import annotations

import shlex

from tests.helpers import cli

SMALL_TRAIN = ["--epochs", "1", "--set", "model.attention_dim=8", "--set", "data.num_snippets=8",
               "--set", "data.batch_size=4"]


def _hint(output: str) -> list[str]:
    lines = [x for x in output.splitlines() if x.startswith("next: ")]
    assert len(lines) == 1, output
    words = shlex.split(lines[0][len("next: "):])
    assert words[0] == "hamnet", lines[0]
    return words[1:]


def test_every_next_hint_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    synth = cli("synth", "data", "--videos", 8, "--dim", 8, "--classes", 2)
    assert synth.exit_code == 0, synth.output
    train = cli(*_hint(synth.output), *SMALL_TRAIN)
    assert train.exit_code == 0, train.output
    export = cli(*_hint(train.output), "--skip-parity-long")
    assert export.exit_code == 0, export.output
    detect_args = _hint(export.output)
    assert "FEATURES" not in " ".join(detect_args)  # the training data's features are there: named
    detect = cli(*detect_args)
    assert detect.exit_code == 0, detect.output
    bundle = detect_args[detect_args.index("--model") + 1]
    update = cli("export", bundle, "--int8-cpu", "--calib", "data")
    assert update.exit_code == 0, update.output
    again = cli(*_hint(update.output))
    assert again.exit_code == 0, again.output


def test_what_the_run_knows_is_used(tmp_path, monkeypatch):
    """`hamnet eval RUN` evaluates on the run's recorded dataset, and `--int8-cpu`
    calibrates on its train split, when neither --data nor --calib is given."""
    monkeypatch.chdir(tmp_path)
    assert cli("synth", "data", "--videos", 8, "--dim", 8, "--classes", 2).exit_code == 0
    assert cli("train", "--data", "data", "--out", "run", *SMALL_TRAIN).exit_code == 0
    evaluated = cli("eval", "run")
    assert evaluated.exit_code == 0 and "(recorded by the run)" in evaluated.output, evaluated.output
    assert "mAP" in evaluated.output
    exported = cli("export", "run", "--out", "bundle", "--int8-cpu", "--skip-parity-long")
    assert exported.exit_code == 0, exported.output
    assert "calibrating INT8 on the train split of" in exported.output
    assert (tmp_path / "bundle" / "model.int8.onnx").is_file()
