"""One process at a time per output folder: `hold(target, what)` takes an exclusive,
non-blocking lock on the hidden file `.NAME.lock` beside `target` (a run folder, a
bundle) for the whole command, and a second process is refused with a message naming
the holder (pid, host, command, start time). The lock is the kernel's (`flock`), so it
ends with the process however it ends (SIGKILL included); the small lock file is kept,
because deleting it would let a third process lock a different file."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from hamnet_deploy.runtime.errors import ConfigError, DataError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, the command runs unlocked
    fcntl = None  # type: ignore[assignment]


def lock_path(target: str | os.PathLike) -> Path:
    """`.NAME.lock` beside `target` (never inside: a bundle holds only the files it lists)."""
    target = Path(os.path.abspath(target))
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def hold(target: str | os.PathLike, what: str, fix: str = "choose another --out") -> Iterator[None]:
    """Hold `target` (a folder, existing or not) for this process while the block runs;
    ConfigError naming the holder when another process holds it."""
    target = Path(target)
    lock = lock_path(target)
    if fcntl is None:  # pragma: no cover
        yield
        return
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise DataError(f"cannot create the lock file {lock}: {exc.strerror}; {fix}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{target} is in use by {_holder(fd)}; wait for it to finish, or {fix}") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": what,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return (f"process {int(info['pid'])} on {info['host']} ({info['command']}, since {info['started']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
