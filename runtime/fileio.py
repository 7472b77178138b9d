"""Atomic file writes: a reader never sees a half-written file, and a failed write
leaves the previous file untouched. A target that is a device or a pipe (/dev/stdout,
/dev/null) is written into directly rather than replaced; a folder is refused."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from hamnet_deploy.runtime.errors import DataError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; on success fsync and rename it over `path`."""
    target = Path(path)
    try:
        mode_now = os.stat(target).st_mode
    except OSError:
        mode_now = None
    if mode_now is not None and stat.S_ISDIR(mode_now):
        raise DataError(f"cannot write {target}: it is a folder; give a file name")
    if mode_now is not None and not stat.S_ISREG(mode_now):
        # A device or pipe (/dev/stdout, /dev/null, a FIFO): write into it; renaming a temp
        # file over it would replace the device node itself.
        with _direct_write(target, mode) as handle:
            yield handle
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise DataError(f"cannot write {target}: {exc.strerror}; choose a writable location") from exc
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        _remove_quietly(tmp)
        raise DataError(f"cannot write {target}: {exc.strerror}; free space or choose another location") from exc
    except BaseException:
        _remove_quietly(tmp)
        raise


@contextlib.contextmanager
def _direct_write(target: Path, mode: str) -> Iterator[IO[Any]]:
    try:
        handle = open(target, mode)
    except OSError as exc:
        raise DataError(f"cannot write {target}: {exc.strerror}; choose a writable location") from exc
    try:
        with handle:
            yield handle
            handle.flush()
    except OSError as exc:
        raise DataError(f"cannot write {target}: {exc.strerror}; free space or choose another location") from exc


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=1)
        handle.write("\n")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
