"""One process at a time per output folder: `hold(target, what)` takes an exclusive,
non-blocking lock on the hidden file `.NAME.lock` beside `target` (a run folder, a
bundle) for the whole command, and a second process is refused with a message naming
the holder (pid, host, command, start time). The lock is the kernel's (`flock`), so it
ends with the process however it ends. The holder deletes the file before it lets go;
one left by a killed process is simply locked again by the next command (a process
that locked a file just deleted notices the change of inode and tries again)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

from hamnet_deploy.runtime.errors import ConfigError

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
    ConfigError naming the holder when another process holds it. Where no lock file can
    be made (the parent is missing or read-only) the block runs unlocked: its own first
    write then fails with the precise message."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    target = Path(target)
    lock = lock_path(target)
    fd = _acquire(lock, target, fix)
    if fd is None:
        yield
        return
    try:
        info = {"pid": os.getpid(), "host": platform.node(), "command": what,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still holding it: a waiter that opened it sees the inode change
        os.close(fd)


def _acquire(lock: Path, target: Path, fix: str) -> int | None:
    """An open, locked descriptor of `lock`; None when no lock file can be made."""
    for _ in range(100):
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise ConfigError(f"{target} is in use by {holder}; wait for it to finish, or {fix}") from None
        except OSError:  # a file system without locks: run unlocked
            os.close(fd)
            return None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except OSError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder deleted it as we locked it: lock the new one
    return None


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"process {int(info['pid'])} on {info['host']} ({info['command']}, since {info['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
