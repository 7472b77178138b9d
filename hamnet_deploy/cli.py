"""The `hamnet` command line: one typer app; each command lives in hamnet_deploy.commands."""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn


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
    from typer.core import TyperGroup

    try:  # typer >= 0.20 carries its own copy of click
        from typer._click.exceptions import ClickException, NoSuchOption
    except ImportError:  # pragma: no cover - older typer on the real click
        from click.exceptions import ClickException, NoSuchOption

    from hamnet_deploy import __version__
    from hamnet_deploy.commands import register_all
except KeyboardInterrupt:  # pragma: no cover - timing dependent, tested through a subprocess
    _exit_interrupted()

class _OneLineErrors(TyperGroup):
    """The `hamnet` group: a usage error (unknown option, `--batch-size abc`, a missing
    argument) is one `error:` line naming the option and pointing at `--help`, exit 2,
    like every other bad input, instead of click's usage box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        from hamnet_deploy.console import fail

        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as exc:
            if not standalone_mode:
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `hamnet`: the help itself
                exc.show()
            else:
                fail(usage_line(exc))
            sys.exit(exc.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            sys.stderr.write("aborted\n")
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


def usage_line(exc: ClickException) -> str:
    """A click error as one line with the fix: the command's --help, or `--` before a
    file name that starts with a dash."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "hamnet"
    if isinstance(exc, NoSuchOption) and not exc.option_name.startswith("--"):
        return (f"{message}; if it is a file name starting with '-', put it after '--' ({command} [OPTIONS] "
                f"-- {exc.option_name}FILE) or write it as ./{exc.option_name}FILE")
    return f"{message}; see {command} --help"


app = typer.Typer(
    cls=_OneLineErrors,
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
    from hamnet_deploy.console import Terminated, catch_sigterm, safe_streams

    catch_sigterm()
    safe_streams()
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
