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


def test_error_messages_keep_brackets(capsys):
    import typer

    from hamnet_deploy.console import handle_errors
    from hamnet_deploy.runtime.errors import DataError

    @handle_errors
    def boom():
        raise DataError("x.npy: expected [batch, T, D] in /tmp/[/odd]; fix it")

    try:
        boom()
    except typer.Exit as exc:
        assert exc.exit_code == 2
    err = capsys.readouterr().err
    assert "[batch, T, D]" in err and "[/odd]" in err
