import subprocess
import sys

from typer.testing import CliRunner

from hamnet_deploy.cli import app


def test_help_lists_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    from hamnet_deploy.commands import COMMANDS
    for name in COMMANDS:
        assert name in result.output


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert "hamnet-deploy" in result.output


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "hamnet_deploy.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
