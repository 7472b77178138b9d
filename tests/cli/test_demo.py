"""`hamnet demo` end to end with small dimensions: every stage runs, the bundle and the
results exist, and detect's mAP equals the checkpoint's."""

from typer.testing import CliRunner

from hamnet_deploy.cli import app
from hamnet_deploy.runtime.bundle import load_bundle


def test_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--dim", "16", "--videos", "16", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    for stage in ("1/6 synth", "2/6 train", "3/6 eval", "4/6 export", "5/6 detect", "6/6 eval"):
        assert stage in result.output
    assert "same as the PyTorch checkpoint" in result.output
    assert "reduced dimension" in result.output
    bundle = load_bundle(out / "bundle")
    assert bundle.has("onnx") and bundle.has("onnx_int8")
    assert (out / "results.json").is_file()
    again = CliRunner().invoke(app, ["demo", "--out", str(out), "--dim", "16", "--videos", "16", "--epochs", "1"])
    assert again.exit_code == 2 and "--force" in again.output
