"""The `hamnet` command line: one typer app; each command lives in hamnet_deploy.commands."""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def _exit_interrupted(note: str | None = "interrupted", code: int = 130) -> NoReturn:
    """Leave with exit code 130 after Ctrl-C. `os._exit`, because CPython marks a
    KeyboardInterrupt that passed through code run by `exec(text)` (dataclasses,
    namedtuples: common while importing) as unhandled and would end the process by
    SIGINT even though it was handled here; everything was flushed or cleaned up by now."""
    if note:
        sys.stderr.write(note + "\n")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


try:  # Ctrl-C while the command line is still loading: exit 130 quietly, not a traceback
    import typer

    from hamnet_deploy import __version__
    from hamnet_deploy.commands import register_all
except KeyboardInterrupt:  # pragma: no cover - timing dependent, tested through a subprocess
    _exit_interrupted()

app = typer.Typer(
    name="hamnet",
    help="HAM-Net temporal action localization: train, export (ONNX/TensorRT), detect, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hamnet-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """HAM-Net temporal action localization: train, export (ONNX/TensorRT), detect, evaluate."""


try:
    register_all(app)
except KeyboardInterrupt:  # pragma: no cover - see above
    _exit_interrupted()


def main() -> None:
    from hamnet_deploy.console import Terminated, catch_sigterm

    catch_sigterm()
    try:
        app()
    except Terminated:  # pragma: no cover - outside a command (typer's own code)
        _exit_interrupted("terminated", 143)
    except KeyboardInterrupt:  # pragma: no cover - typer turns most of these into exit 130 itself
        _exit_interrupted()
    except SystemExit as exc:
        if exc.code in (130, 143):  # a command stopped by Ctrl-C or SIGTERM (it printed its own note)
            _exit_interrupted(None, int(exc.code))
        raise


if __name__ == "__main__":
    main()
