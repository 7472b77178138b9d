"""Finding and validating the feature files `hamnet detect` reads: `.npy` / `.npz`, one
video per file, T x D floating point, never loaded with pickle.

`find_feature_files` expands files, folders and globs; `load_features` reads one file and
checks it (a 2-D floating array, D equal to the model's, at least one snippet, finite).
Each problem is a DataError whose message names the file and the reason, so a caller can
report a bad file and go on with the rest.
"""

from __future__ import annotations

import glob
import io
import lzma
import os
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from hamnet_deploy.runtime.errors import DataError

SUFFIXES = (".npy", ".npz")
NPZ_KEY = "features"
_NPY_MAGIC = b"\x93NUMPY"
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Missing:
    """A path argument that named nothing usable, and why."""

    path: str
    reason: str


def video_id(path: str | os.PathLike) -> str:
    """The video id of a feature file: its name without the suffix (`a/v_1.npy` -> `v_1`)."""
    return Path(path).stem


def _is_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _features_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def find_feature_files(paths: Iterable[str | os.PathLike], recursive: bool = False
                       ) -> tuple[list[Path], list[Missing]]:
    """Expand files, folders (their `.npy`/`.npz` files; with `recursive` also below) and
    glob patterns (`**` matches folders) into feature files, in argument order without
    duplicates. Returns (files, paths that named nothing, each with the reason)."""
    files: list[Path] = []
    missing: list[Missing] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            files.append(p)

    for raw in paths:
        text = os.fspath(raw)
        path = Path(text)
        if path.is_dir():
            found = (sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
                     if recursive else _features_in(path))
            if not found:
                missing.append(Missing(text, "folder holds no .npy or .npz files"))
            for p in found:
                add(p)
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                missing.append(Missing(text, "not a .npy or .npz file"))
            else:
                add(path)
        elif _is_glob(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            found = [m for m in matches if m.is_file() and m.suffix.lower() in SUFFIXES]
            if not found:
                missing.append(Missing(text, "pattern matches no .npy or .npz file"))
            for p in found:
                add(p)
        elif path.exists():  # a FIFO, socket or device: reading one could block forever
            missing.append(Missing(text, "not a regular file (a pipe, socket or device); give a .npy or .npz file"))
        else:
            missing.append(Missing(text, "no such file or folder"))
    return files, missing


_ZIP_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, KeyError, struct.error,
               NotImplementedError, RuntimeError, UnicodeDecodeError, OverflowError)
"""What zipfile/numpy raise on a damaged archive (RuntimeError: encrypted members,
NotImplementedError: unknown compression methods)."""
_MAX_DEFLATE_RATIO = 1032
"""Deflate cannot expand data more than about 1032:1, which bounds what a member can hold."""


def check_npy_header(fh: IO[bytes], available: int, where: str) -> None:
    """Read a .npy header from `fh` (positioned at its start) and check it before any data
    is allocated: a valid header and a shape whose data fits in the `available` bytes of
    the file. A truncated or corrupt file whose header claims a huge array is then a
    DataError instead of a MemoryError (or a many-gigabyte allocation). Object arrays are
    left to np.load(allow_pickle=False), which refuses them without unpickling."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(fh)
        else:  # (2, 0) and (3, 0) share the layout; 3.0 only allows UTF-8 field names
            shape, _, dtype = npy_format.read_array_header_2_0(fh)
    except (ValueError, EOFError, OSError, TypeError, SyntaxError, struct.error, UnicodeDecodeError,
            tokenize.TokenError, RecursionError, MemoryError, OverflowError) as exc:  # numpy parses the header text
        raise DataError(f"{where}: truncated or corrupt .npy header ({_first_line(exc)}); re-save the features") from None
    if dtype.hasobject:
        return  # pickled data: np.load(allow_pickle=False) refuses it without unpickling
    count = 1
    for n in shape:
        count *= int(n)
    needed = count * dtype.itemsize
    left = available - fh.tell()
    if needed > left:
        raise DataError(f"{where}: truncated or corrupt: the header says shape {tuple(shape)} ({needed:,} bytes) "
                        f"but only {max(left, 0):,} bytes follow; re-save the features")


def _npz_member(archive: Any, key: str, path: Path | str) -> np.ndarray:
    """One array of an open .npz, its header checked against the member's real size first."""
    zf = archive.zip
    name = key + ".npy" if key + ".npy" in zf.namelist() else key
    info = zf.getinfo(name)
    limit = info.file_size  # what the archive says; bounded by what its bytes can hold:
    if info.compress_type == zipfile.ZIP_STORED:
        limit = min(limit, info.compress_size)
    elif info.compress_type == zipfile.ZIP_DEFLATED:  # np.savez_compressed
        limit = min(limit, info.compress_size * _MAX_DEFLATE_RATIO + 1024)
    with zf.open(name) as member:
        if member.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            raise DataError(f"{path}: .npz member {key!r} is not a NumPy array (corrupt); re-save the "
                            f"features with np.savez(path, {NPZ_KEY}=feats)")
    with zf.open(name) as member:
        check_npy_header(member, limit, f"{path}: .npz member {key!r}")
    return archive[key]


def _read_array(path: Path | str, data: bytes | None = None) -> np.ndarray:
    """The one array of a .npy, or of a .npz (its only array, or the one named `features`);
    from `data` (the file's bytes, as Ray Data reads them) when given, `path` naming it."""
    source: Any = path if data is None else io.BytesIO(data)
    try:
        if data is None:
            with open(path, "rb") as fh:
                head = fh.read(len(_NPY_MAGIC))
                size = os.fstat(fh.fileno()).st_size
                if head == _NPY_MAGIC:
                    fh.seek(0)
                    check_npy_header(fh, size, str(path))
        else:
            head = data[:len(_NPY_MAGIC)]
            if head == _NPY_MAGIC:
                check_npy_header(io.BytesIO(data), len(data), str(path))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror}); check the file") from None
    if not head:
        raise DataError(f"{path}: empty file; re-save the features with np.save")
    is_zip = head[:2] == b"PK"
    if head != _NPY_MAGIC and not is_zip:
        if head[:1] == b"\x80":
            raise DataError(f"{path}: a pickle, refused (loading it would run pickle); save the features "
                            "with np.save(path, feats.astype(np.float32))")
        raise DataError(f"{path}: not a NumPy .npy/.npz file (truncated or corrupt); re-save the features")
    try:
        if not is_zip:
            return np.load(source, allow_pickle=False)
        with np.load(source, allow_pickle=False) as archive:
            keys = list(archive.files)
            if NPZ_KEY in keys:
                return _npz_member(archive, NPZ_KEY, path)
            if len(keys) == 1:
                return _npz_member(archive, keys[0], path)
            shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
            raise DataError(f"{path}: .npz holds {len(keys)} arrays ({shown or 'none'}) and none is named "
                            f"'{NPZ_KEY}'; save one array, or name it: np.savez(path, {NPZ_KEY}=feats)")
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: too large to load into memory; split the video into shorter feature "
                        "files") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise DataError(f"{path}: holds an object array, refused (loading it would run pickle); save "
                            "the features with np.save(path, feats.astype(np.float32))") from None
        raise DataError(f"{path}: truncated or corrupt ({_first_line(exc)}); re-save the features") from None
    except _ZIP_ERRORS as exc:
        raise DataError(f"{path}: truncated or corrupt ({_first_line(exc)}); re-save the features") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_features(arr: np.ndarray, where: str, feature_dim: int | None = None) -> np.ndarray:
    """A validated C-contiguous float32 (T, D) copy or view of `arr`; DataError otherwise."""
    if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f" or arr.ndim != 2:
        desc = f"shape {arr.shape}, dtype {arr.dtype}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise DataError(f"{where}: features must be a 2-D floating array (T x D), got {desc}; save them "
                        "with np.save(path, feats.astype(np.float32))")
    if arr.shape[0] == 0:
        raise DataError(f"{where}: no snippets (T = 0); the video needs at least one feature row")
    if feature_dim is not None and arr.shape[1] != feature_dim:
        raise DataError(f"{where}: features are {arr.shape[1]}-D but {feature_dim}-D are expected; use the "
                        "feature extractor the model was trained with (one extractor for every video)")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, caught below
        out = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        bad = int(np.count_nonzero(~finite))
        raise DataError(f"{where}: {bad} of {out.shape[0]} snippets hold NaN or infinity (first: snippet "
                        f"{int(np.argmin(finite))}); re-extract the features of this video")
    return out


def load_features(path: str | os.PathLike, feature_dim: int | None = None) -> np.ndarray:
    """Read and check one feature file: (T, D) float32, finite, D == `feature_dim` when given.

    `.npy`: the array; `.npz`: its only array or the one named `features`. Loaded with
    `allow_pickle=False`: pickles and object arrays are refused, never executed.
    """
    path = Path(path)
    return check_features(_read_array(path), str(path), feature_dim)


def load_feature_bytes(data: bytes, name: str, feature_dim: int | None = None) -> np.ndarray:
    """`load_features` of a file's bytes (`name`: the file's path or URL, for messages):
    the same checks, and never pickle."""
    return check_features(_read_array(name, bytes(data)), name, feature_dim)
