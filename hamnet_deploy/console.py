"""Shared console and the error contract of every command: a HamnetError becomes one
red line on stderr and exit code 2 (so do stray file-system errors and running out of
memory, as a safety net); Ctrl-C becomes a short note and exit code 130, SIGTERM the
same clean-up and exit code 143."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from hamnet_deploy.runtime.errors import HamnetError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])
EXTRAS = {"torch": "train", "onnxslim": "train", "safetensors": "train", "onnx": "int8", "tensorrt": "trt",
          "tritonclient": "triton", "matplotlib": "plot", "pandas": "pandas"}
"""Optional module -> the extra of pyproject.toml that installs it."""


def printable(text: Any) -> str:
    """User text as it can always be printed: the bytes of a file name that is not
    UTF-8 (surrogate escapes) shown as `\\xff`, never an encoding error."""
    text = str(text)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate from JSON text
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def safe_streams() -> None:
    """stdout/stderr that write what their encoding cannot hold as escapes (an ASCII
    terminal, `PYTHONIOENCODING=ascii`) instead of failing with UnicodeEncodeError."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):  # a replaced or closed stream
            pass


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `message` as an error and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same clean-up runs
    (temp files and staging folders removed); the command then exits 143."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def catch_sigterm() -> None:
    """Turn SIGTERM into `Terminated` in this (main) thread, unless it is ignored."""
    import signal

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _on_sigterm)


def stop_code(exc: BaseException) -> int:
    """The exit code of a stop: 143 for SIGTERM, 130 for Ctrl-C."""
    return 143 if isinstance(exc, Terminated) else 130


def stop_word(exc: BaseException) -> str:
    return "terminated" if isinstance(exc, Terminated) else "interrupted"


def handle_errors(func: F) -> F:
    """Decorator for command functions: typed errors exit 2 without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet = console.quiet  # -q / --json quiet the console for one command only
        try:
            return func(*args, **kwargs)
        except HamnetError as exc:
            raise fail(str(exc)) from None
        except OSError as exc:  # safety net: a file error no module turned into a typed one
            where = f"{exc.filename}: " if exc.filename else ""
            raise fail(f"{where}{exc.strerror or exc}; check the path, its permissions and the free "
                       "space") from None
        except ModuleNotFoundError as exc:  # safety net: an optional dependency a code path needs
            name = (exc.name or "?").split(".")[0]
            extra = EXTRAS.get(name)
            how = f"pip install 'hamnet-deploy[{extra}]'" if extra else f"pip install {name}"
            raise fail(f"this needs the Python package {name!r}, which is not installed: {how}") from None
        except MemoryError:
            raise fail("out of memory; use shorter feature files or a smaller --batch-size/--max-t") from None
        except KeyboardInterrupt as exc:
            err_console.print(f"[yellow]{stop_word(exc)}[/]; nothing half-written was left behind")
            raise typer.Exit(stop_code(exc)) from None
        finally:
            console.quiet = quiet

    return wrapper  # type: ignore[return-value]


def import_torch() -> None:
    """Import PyTorch with Ctrl-C held back: a SIGINT that lands inside torch's native
    start-up aborts the process (a C++ `terminate`), so it is delivered right after the
    import instead, where it becomes the usual quiet interrupt (exit 130)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        import torch  # noqa: F401
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        import torch  # noqa: F401
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def backend_names() -> list[str]:
    """The `--backend` values of the backend table, for option help and checks."""
    from hamnet_deploy.runtime.backends import registry

    return registry.names()
