"""Atomic writes: a reader never sees a half-written file or folder, and a failed write
leaves the previous one untouched.

- Files: `atomic_write` (temp file beside the target, fsync, rename). A target that is a
  device or a pipe (/dev/stdout, /dev/null) is written into directly rather than
  replaced; a folder is refused.
- Folders (bundles, checkpoints, cache entries, Triton models): `staging(target)` builds
  one beside the target and `publish_folder` renames it into place.
- `sha256_file`, the one checksum.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from hamnet_deploy.runtime.errors import ConfigError, DataError, HamnetError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; on success fsync and rename it over `path` (which
    keeps its permissions)."""
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
    tmp: str | None = None
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with signals_deferred():  # a Ctrl-C lands once `tmp` is known, so it is removed
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
                handle = os.fdopen(fd, mode)
            # the file keeps the mode it had (mkstemp makes 0600); a new one gets what open() would
            with contextlib.suppress(OSError):
                os.fchmod(handle.fileno(), stat.S_IMODE(mode_now) if mode_now is not None else _default_mode(0o666))
        except OSError as exc:
            raise DataError(f"cannot write {target}: {exc.strerror}; choose a writable location") from exc
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        _remove_quietly(tmp)
        raise DataError(f"cannot write {target}: {exc.strerror}; free space or choose another location") from exc
    except BaseException:
        if tmp is not None:
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


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8), atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


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


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (the one checksum of bundles, engines
    and cache keys)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of bytes already in memory (an engine about to be deserialized or written)."""
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- #
#                          folders: stage, then publish                        #
# --------------------------------------------------------------------------- #
def stage_folder(target: str | os.PathLike) -> Path:
    """A new empty folder beside `target` (`.NAME.tmp-XXXX`) to build it in; DataError
    when the parent cannot be written."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(target)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    except OSError as exc:
        why = ("a part of its path is a file, not a folder" if isinstance(exc, (FileExistsError, NotADirectoryError))
               else exc.strerror)
        raise DataError(f"cannot create {target}: {why}; choose a writable location") from exc


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (one of another user counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's process
        return True
    return True


def remove_stale(target: str | os.PathLike) -> list[str]:
    """Delete the staging (`.NAME.tmp-PID-*`) and aside (`.NAME.old-PID-*`) folders of
    `target` whose process is gone (a kill -9 or a power cut left them); a live
    process's are kept. Returns the names removed."""
    target = Path(target)
    gone = []
    with contextlib.suppress(OSError):
        for entry in target.parent.iterdir():
            for kind in ("tmp", "old"):
                prefix = f".{target.name}.{kind}-"
                pid = entry.name[len(prefix):].split("-", 1)[0] if entry.name.startswith(prefix) else ""
                if pid.isdigit() and entry.is_dir() and not entry.is_symlink() and not _alive(int(pid)):
                    shutil.rmtree(entry, ignore_errors=True)
                    gone.append(entry.name)
    return gone


def publish_folder(staged: str | os.PathLike, target: str | os.PathLike, *, replace: bool = False) -> bool:
    """Move the finished folder `staged` onto `target` atomically; True when it was moved.

    The folder gets the permissions a plain mkdir/open would give (temp folders are
    private). Without `replace` an existing `target` wins (another process published
    first) and `staged` is removed. With `replace` the old folder is renamed aside, the
    new one renamed in, then the old one deleted: a reader sees the old folder or the
    new one, never neither (SIGINT/SIGTERM are held back from the renames until the old one is deleted).
    """
    staged, target = Path(staged), Path(target)
    publish_permissions(staged)
    _fsync_dir(staged)
    if target.exists() and not replace:
        shutil.rmtree(staged, ignore_errors=True)
        return False
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
        os.rmdir(old)
    with signals_deferred():  # the old folder is gone too before a Ctrl-C lands: nothing is left aside
        if old is not None:
            os.replace(target, old)
        try:
            os.replace(staged, target)
        except OSError as exc:
            if old is not None:
                os.replace(old, target)
            raise DataError(f"cannot move the new folder into {target}: {exc.strerror}") from exc
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return True


@contextlib.contextmanager
def staging(target: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """`with staging(target) as tmp:` build the folder in `tmp`; it is published onto
    `target` when the block ends normally (`publish_folder`) and removed otherwise."""
    staged = None
    try:
        with signals_deferred():  # a Ctrl-C lands once `staged` is known, so it is cleaned up
            staged = stage_folder(target)
        yield staged
    except BaseException:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        raise
    try:
        publish_folder(staged, target, replace=replace)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


_HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for a few system calls (main thread, POSIX); they are
    delivered when the outermost such block ends.

    Two layers: the signals are blocked in the kernel (none arrives during the block),
    and their Python handlers are swapped for ones that only take note, because a
    signal that arrived just before the block may still be pending inside the
    interpreter, which would otherwise raise KeyboardInterrupt at any line in it."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    handlers = {}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(_HELD))
    try:
        for sig in _HELD:
            handlers[sig] = signal.signal(sig, lambda signum, frame: noted.append(signum))
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # restore, not unblock: nested blocks keep holding
        for signum in dict.fromkeys(noted):
            _deliver(signum, handlers.get(signum))


def _deliver(signum: int, handler: object) -> None:
    """Act on a signal noted during `signals_deferred` as its own handler would have."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)  # the default action (terminate), now that it is unblocked


def _check_not_an_input(output: str | os.PathLike | None, option: str,
                       inputs: Iterable[str | os.PathLike | None]) -> None:
    """ConfigError when `output` is one of the command's `inputs` (the same file, through
    any link): no command writes over what it reads. A folder input stands for the
    files a reader takes from it by name (its annotations.json and manifest.json)."""
    if output is None or not Path(output).exists():
        return
    out = Path(output)
    for given in inputs:
        if given is None:
            continue
        path = Path(given)
        candidates = [path / "annotations.json", path / "manifest.json"] if path.is_dir() else [path]
        for candidate in candidates:
            try:
                same = candidate.exists() and os.path.samefile(out, candidate)
            except OSError:
                same = False
            if same:
                raise ConfigError(f"{option} {out}: is one of this command's inputs ({candidate}); write the "
                                  "output to another file")


def check_output(output: str | os.PathLike | None, option: str, inputs: Iterable[str | os.PathLike | None],
                 force: bool, extra: Iterable[Path] = ()) -> None:
    """The one rule for a command's output file `output` (given as `option`): never
    one of its `inputs`, never a folder, and an existing file (or one of the `extra`
    files it will write, e.g. plots) is replaced only with `--force`."""
    if output is None:
        return
    out = Path(output)
    _check_not_an_input(out, option, inputs)
    if out.is_dir() and not extra:
        raise ConfigError(f"{option} {out}: it is a folder; give a file name")
    taken = [p for p in extra if p.exists()] if extra else ([out] if out.exists() else [])
    if taken and not force:
        shown = ", ".join(p.name for p in taken[:3]) + (f" and {len(taken) - 3} more" if len(taken) > 3 else "")
        what = f"{shown} already exist{'s' if len(taken) == 1 else ''}" if extra else "already exists"
        raise ConfigError(f"{option} {out}: {what}; pass --force to replace it (atomically), or choose another "
                          "name")


def _default_mode(base: int) -> int:
    """`base` (0o666 files, 0o777 folders) less the process umask: what open()/mkdir give."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def publish_permissions(folder: str | os.PathLike) -> None:
    """Give a staged folder and its files the modes a plain mkdir/open would (umask
    applied): temp folders and atomic writes create them private (0700/0600)."""
    folder = Path(folder)
    for path in [folder, *folder.rglob("*")]:
        with contextlib.suppress(OSError):
            os.chmod(path, _default_mode(0o777 if path.is_dir() else 0o666))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- #
#                           reading the user's files                          #
# --------------------------------------------------------------------------- #
def read_text(path: str | os.PathLike, what: str, error: type[HamnetError] = DataError,
              missing: str | None = None, fix: str = "check the file") -> str:
    """The text (UTF-8, a byte-order mark skipped) of the user's file `path`, which is a
    `what` ("annotation file"); `error` naming it when it is missing (`missing`: the
    message's text), not a regular file (a FIFO would block) or unreadable (`fix`)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{path}: {missing or what + ' not found; check the path'}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror}); check the path") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise error(f"{path}: {what} expected, but this is {kind}; give the file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror}); {fix}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff") and _is_utf16(raw):
            raise error(f"{path}: {what} is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as "
                        "UTF-8") from None
        raise error(f"{path}: {what} is not UTF-8 text (byte {exc.start}); {fix}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror}); {fix}") from None


def _is_utf16(raw: bytes) -> bool:
    """Text saved as UTF-16 (not binary that starts with those two bytes): it decodes,
    and begins with an ASCII character, as JSON and our CSV headers do."""
    try:
        text = raw.decode("utf-16").lstrip("\ufeff \t\r\n")
    except UnicodeDecodeError:
        return False
    return text[:1].isascii()


def read_json(path: str | os.PathLike, what: str, error: type[HamnetError] = DataError,
              fix: str = "fix or regenerate the file", missing: str | None = None,
              hook: Any = None) -> Any:
    """`read_text`, parsed as JSON (`hook`: json's object_pairs_hook); `error` for text
    that is not JSON or nests too deeply."""
    text = read_text(path, what, error, missing, fix)
    try:
        return json.loads(text, object_pairs_hook=hook)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); {fix}") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise error(f"{path}: not valid JSON ({exc}); {fix}") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply to read; {fix}") from None
