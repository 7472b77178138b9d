"""The bundle manifest (SPEC §6): what `manifest.json` holds, as settings dataclasses
checked by `runtime.settings` (every problem a BundleError naming the field, ending in
"re-export the bundle"). `runtime.bundle` reads bundles; `export.bundle_writer` writes
them.

File names in the manifest must stay inside the bundle folder (`safe_relative_name`).
Unknown keys of a model or engine entry are kept (`extra`), so a manifest written by a
later minor version still loads; a later `format_version` is refused with "upgrade".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from hamnet_deploy.runtime.annotations import class_name_problem
from hamnet_deploy.runtime.errors import BundleError
from hamnet_deploy.runtime.postprocess import PostprocessConfig
from hamnet_deploy.runtime.profile import Profile
from hamnet_deploy.runtime.settings import Invalid, Settings, option

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
ONNX = "onnx"
ONNX_INT8 = "onnx_int8"
MODEL_KINDS = (ONNX, ONNX_INT8)
"""Model kinds a bundle may hold under `models` (TensorRT engines live in `engines`)."""
REEXPORT = "re-export the bundle"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def file_name_problem(name: Any) -> str | None:
    """Why `name` cannot be a bundle file name (absolute, leaves the folder, empty), or None."""
    if not isinstance(name, str) or not name.strip():
        return f"file name {name!r} must be a non-empty string"
    win, posix = PureWindowsPath(name), PurePosixPath(name)
    if posix.is_absolute() or win.is_absolute() or win.drive or win.root or "\\" in name or "\x00" in name:
        return f"file name {name!r} is an absolute path; bundle files must be relative to the bundle folder"
    if any(part == ".." for part in posix.parts):
        return f"file name {name!r} leaves the bundle folder ('..')"
    if name in (".", "./") or posix.name in ("", "."):
        return f"file name {name!r} names no file"
    try:
        parts = [len(part.encode("utf-8")) for part in posix.parts]
    except UnicodeEncodeError:
        return f"file name {name[:40]!r} is not valid text"
    if max(parts) > 255 or sum(parts) > 1024:  # what file systems hold (NAME_MAX, a sane PATH_MAX share)
        return f"file name {name[:40]!r}... is too long (over 255 bytes a part or 1024 in all)"
    return None


def safe_relative_name(name: Any, where: str) -> str:
    """`name` unchanged when it is a relative POSIX path inside the bundle, else BundleError."""
    problem = file_name_problem(name)
    if problem is not None:
        raise BundleError(f"{where}: {problem}; refusing this bundle")
    return name


def _file(name: str) -> str:
    problem = file_name_problem(name)
    if problem is not None:
        raise Invalid("", name, problem, fix="refusing this bundle")
    return name


def _sha(value: str) -> str:
    if not _SHA256.match(value):
        raise ValueError("must be 64 lowercase hex digits")
    return value


def _format_version(version: int) -> int:
    if version not in SUPPORTED_FORMAT_VERSIONS:
        newer = version > max(SUPPORTED_FORMAT_VERSIONS)
        raise Invalid("", version, f"bundle format version {version} is not supported (this hamnet-deploy "
                                   f"reads {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})",
                      fix="upgrade hamnet-deploy" if newer else "re-export the model with this version")
    return version


def _class_names(classes: tuple[str, ...]) -> tuple[str, ...]:
    problem = class_name_problem(list(classes))
    if problem:
        raise ValueError(problem)
    return classes


class _Part(Settings):
    """Every manifest object: BundleError, named as a manifest field."""

    where = "bundle manifest"
    error = BundleError
    fix = REEXPORT


@dataclass(frozen=True)
class TensorSpec(_Part):
    """One graph input or output: name, element type, shape (ints or symbolic names)."""

    name: str
    dtype: str = "float32"
    shape: tuple[int | str, ...] = ()


@dataclass(frozen=True)
class ModelFile(_Part):
    """An ONNX model of the bundle (`models[kind]`)."""

    file: str = option(convert=_file)
    sha256: str = option(convert=_sha)
    opset: int = option(ge=1)
    precision: str = "fp32"
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    extra: dict[str, Any] = option(factory=dict, extra=True)
    """Other recorded facts (quantization settings, parity against FP32, ...)."""


@dataclass(frozen=True)
class EngineEntry(_Part):
    """One TensorRT engine: tied to the TensorRT version and GPU that built it."""

    file: str = option(convert=_file)
    sha256: str = option(convert=_sha)
    precision: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str | int | float = option(convert=str)
    profile: Profile
    dla_core: int | None = option(None, ge=0)
    extra: dict[str, Any] = option(factory=dict, extra=True)
    """Other facts the engine builder recorded (input_dim, precision_path, ...)."""

    def check(self) -> None:
        if self.dla_core is not None and self.profile.min_batch is None:  # static DLA engine: fixed batch
            object.__setattr__(self, "profile", self.profile.replace(min_batch=self.profile.max_batch))


@dataclass(frozen=True)
class Manifest(_Part):
    """Everything a runtime needs besides the model files (SPEC §6)."""

    format_version: int = option(convert=_format_version)
    classes: tuple[str, ...] = option(nonempty=True, convert=_class_names)
    num_classes: int
    feature_dim: int = option(ge=1, le=1 << 20)
    snippet_seconds: float = option(gt=0.0)
    receptive_radius: int = option(ge=0, le=1 << 20)
    postprocess: PostprocessConfig
    models: dict[str, ModelFile]
    engines: tuple[EngineEntry, ...] = ()
    package_version: str = ""
    created: str = ""
    config: dict[str, Any] = option(factory=dict)
    """Summary of the training recipe/config the model came from."""
    source: dict[str, Any] = option(factory=dict)
    """Where the model came from: checkpoint path, epoch, the accuracy guard's result."""

    @classmethod
    def from_dict(cls, data: Any, where: str | None = MANIFEST) -> Manifest:
        """Validate a parsed manifest; a newer format version is named before anything else."""
        if isinstance(data, dict) and isinstance(data.get("format_version"), int):
            try:
                _format_version(data["format_version"])
            except Invalid as exc:
                raise cls._fail(Invalid("format_version", exc.value, exc.problem, exc.fix),
                                f"{where}: {cls.where}" if where else cls.where) from None
        return super().from_dict(data, where)

    def check(self) -> None:
        if self.num_classes != len(self.classes):
            raise Invalid("num_classes", self.num_classes, f"does not match the {len(self.classes)} class names")
        unknown = sorted(set(self.models) - set(MODEL_KINDS))
        if unknown:
            raise Invalid("models", problem=f"unknown model kind(s) {', '.join(map(repr, unknown))} (known: "
                                            f"{', '.join(MODEL_KINDS)})", fix="upgrade hamnet-deploy or re-export")
        if ONNX not in self.models:
            raise Invalid("models", problem=f"no {ONNX!r} entry")
        names = [name for _, name, _ in self.files()]
        if len(set(names)) != len(names):
            raise Invalid("models", problem="two entries name the same file")
        if MANIFEST in names:
            raise Invalid("models", problem=f"an entry names {MANIFEST}")

    def files(self) -> list[tuple[str, str, str]]:
        """(label, file, sha256) of every file the manifest lists."""
        out = [(f"models.{k}", m.file, m.sha256) for k, m in self.models.items()]
        out += [(f"engines[{i}]", e.file, e.sha256) for i, e in enumerate(self.engines)]
        return out
