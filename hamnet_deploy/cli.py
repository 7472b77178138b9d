"""The `hamnet` command line: one typer app; each command lives in hamnet_deploy.commands."""

from __future__ import annotations

import sys

try:  # Ctrl-C while the command line is still loading: exit 130 quietly, not a traceback
    import typer

    from hamnet_deploy import __version__
    from hamnet_deploy.commands import register_all
except KeyboardInterrupt:  # pragma: no cover - timing dependent, tested through a subprocess
    sys.stderr.write("interrupted\n")
    raise SystemExit(130) from None

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
    sys.stderr.write("interrupted\n")
    raise SystemExit(130) from None


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - typer turns most of these into exit 130 itself
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
