"""The deployment bundle (SPEC §6): a folder with the ONNX model, optional INT8 and
TensorRT variants and a `manifest.json` that says what they are.

Layout::

    BUNDLE/manifest.json        this module's `Manifest`
    BUNDLE/model.onnx           FP32 graph: features [batch, T, D] -> cas, attention
    BUNDLE/model.int8.onnx      optional: static INT8 (QDQ) for CPUs
    BUNDLE/<engine>.engine      optional: TensorRT engines, one per GPU/precision/profile

`load_bundle` reads and validates the manifest and (by default) checks every file's
SHA-256, so a bundle that was edited, truncated or half-copied is refused with a
message that names the file. File names in the manifest must stay inside the
bundle folder. NumPy/stdlib only: the runtime reads bundles where PyTorch and the
onnx package are not installed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from hamnet_deploy.runtime.errors import BundleError, ConfigError
from hamnet_deploy.runtime.postprocess import PostprocessConfig

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
ONNX = "onnx"
ONNX_INT8 = "onnx_int8"
MODEL_KINDS = (ONNX, ONNX_INT8)
"""Model kinds a bundle may hold under `models` (TensorRT engines live in `engines`)."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_relative_name(name: Any, where: str) -> str:
    """Check a file name from a manifest: a relative POSIX path that stays inside the bundle.

    Refuses non-strings, empty names, absolute paths (POSIX or Windows, drive letters,
    UNC), backslashes, and any `..` component. Returns the name unchanged.
    """
    if not isinstance(name, str) or not name.strip():
        raise BundleError(f"{where}: file name {name!r} must be a non-empty string; re-export the bundle")
    win = PureWindowsPath(name)
    posix = PurePosixPath(name)
    if (posix.is_absolute() or win.is_absolute() or win.drive or win.root or "\\" in name
            or "\x00" in name):
        raise BundleError(f"{where}: file name {name!r} is an absolute path; bundle files must be "
                          "relative to the bundle folder; refusing this bundle")
    if any(part == ".." for part in posix.parts):
        raise BundleError(f"{where}: file name {name!r} leaves the bundle folder ('..'); "
                          "refusing this bundle")
    if name in (".", "./") or posix.name in ("", "."):
        raise BundleError(f"{where}: file name {name!r} names no file; re-export the bundle")
    return name


# --------------------------------------------------------------------------- #
#                               manifest entries                              #
# --------------------------------------------------------------------------- #
def _need(data: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise BundleError(f"{where}: missing field {key!r}; the bundle is incomplete, re-export it")
    value = data[key]
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise BundleError(f"{where}: field {key!r}={value!r} has the wrong type; re-export the bundle")
    if not isinstance(value, types):
        raise BundleError(f"{where}: field {key!r}={value!r} has the wrong type "
                          f"(expected {_type_names(types)}); re-export the bundle")
    return value


def _opt(data: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str,
         default: Any = None) -> Any:
    if data.get(key) is None:
        return default
    return _need(data, key, types, where)


def _type_names(types: type | tuple[type, ...]) -> str:
    seq = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in seq)


def _check_sha(value: str, where: str) -> str:
    if not _SHA256.match(value):
        raise BundleError(f"{where}: sha256 {value!r} is not 64 lowercase hex digits; re-export the bundle")
    return value


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type, shape (ints or symbolic names)."""

    name: str
    dtype: str = "float32"
    shape: tuple[int | str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> TensorSpec:
        if not isinstance(data, Mapping):
            raise BundleError(f"{where}: expected an object with name, dtype, shape; re-export the bundle")
        shape = _need(data, "shape", list, where)
        if not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in shape):
            raise BundleError(f"{where}: shape {shape!r} must hold integers or names; re-export the bundle")
        return cls(_need(data, "name", str, where), _need(data, "dtype", str, where), tuple(shape))


@dataclass(frozen=True)
class ModelFile:
    """An ONNX model of the bundle (`models[kind]`)."""

    file: str
    sha256: str
    opset: int
    precision: str = "fp32"
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    """Other recorded facts (quantization settings, parity against FP32, ...)."""

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "opset": self.opset,
                "precision": self.precision, "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs], **self.extra}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ModelFile:
        if not isinstance(data, Mapping):
            raise BundleError(f"{where}: expected an object; re-export the bundle")
        name = safe_relative_name(_need(data, "file", str, where), where)
        sha = _check_sha(_need(data, "sha256", str, where), where)
        opset = _need(data, "opset", int, where)
        inputs = tuple(TensorSpec.from_dict(t, f"{where}.inputs") for t in _need(data, "inputs", list, where))
        outputs = tuple(TensorSpec.from_dict(t, f"{where}.outputs") for t in _need(data, "outputs", list, where))
        precision = _opt(data, "precision", str, where, "fp32")
        known = {"file", "sha256", "opset", "precision", "inputs", "outputs"}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(name, sha, opset, precision, inputs, outputs, extra)


@dataclass(frozen=True)
class EngineProfile:
    """TensorRT optimisation profile of an engine: T range and batch range."""

    min_t: int
    opt_t: int
    max_t: int
    max_batch: int
    min_batch: int | None = None
    """Smallest batch of the profile; None = 1 (DLA engines: fixed at max_batch)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"min_t": self.min_t, "opt_t": self.opt_t, "max_t": self.max_t,
                               "max_batch": self.max_batch}
        if self.min_batch is not None:
            out["min_batch"] = self.min_batch
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> EngineProfile:
        if not isinstance(data, Mapping):
            raise BundleError(f"{where}: expected an object with min_t, opt_t, max_t, max_batch; "
                              "re-export the bundle")
        vals = {k: _need(data, k, int, where) for k in ("min_t", "opt_t", "max_t", "max_batch")}
        min_batch = _opt(data, "min_batch", int, where)
        if (not (1 <= vals["min_t"] <= vals["opt_t"] <= vals["max_t"]) or vals["max_batch"] < 1
                or (min_batch is not None and not 1 <= min_batch <= vals["max_batch"])):
            raise BundleError(f"{where}: profile {dict(data)} needs 1 <= min_t <= opt_t <= max_t and "
                              "1 <= min_batch <= max_batch; re-export the bundle")
        known = {"min_t", "opt_t", "max_t", "max_batch", "min_batch"}
        return cls(**vals, min_batch=min_batch, extra={k: v for k, v in data.items() if k not in known})

    def accepts(self, batch: int, t: int) -> bool:
        """True when a [batch, t, D] input lies inside the profile (a smaller batch than
        min_batch counts: a runner pads it)."""
        return 1 <= batch <= self.max_batch and self.min_t <= t <= self.max_t


@dataclass(frozen=True)
class EngineEntry:
    """One TensorRT engine: tied to the TensorRT version and GPU that built it."""

    file: str
    sha256: str
    precision: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    profile: EngineProfile
    dla_core: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Other facts the engine builder recorded (kept as written)."""

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "precision": self.precision,
                "tensorrt_version": self.tensorrt_version, "gpu_name": self.gpu_name,
                "compute_capability": self.compute_capability, "profile": self.profile.to_dict(),
                "dla_core": self.dla_core, **self.extra}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> EngineEntry:
        if not isinstance(data, Mapping):
            raise BundleError(f"{where}: expected an object; re-export the bundle")
        name = safe_relative_name(_need(data, "file", str, where), where)
        sha = _check_sha(_need(data, "sha256", str, where), where)
        cc = _need(data, "compute_capability", (str, int, float), where)
        dla = _opt(data, "dla_core", int, where)
        known = {"file", "sha256", "precision", "tensorrt_version", "gpu_name", "compute_capability",
                 "profile", "dla_core"}
        return cls(name, sha, _need(data, "precision", str, where),
                   str(_need(data, "tensorrt_version", str, where)), _need(data, "gpu_name", str, where),
                   str(cc), EngineProfile.from_dict(_need(data, "profile", Mapping, where), f"{where}.profile"),
                   dla, {k: v for k, v in data.items() if k not in known})


@dataclass(frozen=True)
class Manifest:
    """Everything a runtime needs besides the model files (SPEC §6)."""

    classes: tuple[str, ...]
    feature_dim: int
    snippet_seconds: float
    receptive_radius: int
    postprocess: dict[str, Any]
    models: dict[str, ModelFile]
    engines: tuple[EngineEntry, ...] = ()
    package_version: str = ""
    created: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    """Summary of the training recipe/config the model came from."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where the model came from: checkpoint path, epoch."""
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def files(self) -> list[tuple[str, str, str]]:
        """(label, file, sha256) of every file the manifest lists."""
        out = [(f"models.{k}", m.file, m.sha256) for k, m in self.models.items()]
        out += [(f"engines[{i}]", e.file, e.sha256) for i, e in enumerate(self.engines)]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "package_version": self.package_version,
            "created": self.created,
            "classes": list(self.classes),
            "num_classes": self.num_classes,
            "feature_dim": self.feature_dim,
            "snippet_seconds": self.snippet_seconds,
            "receptive_radius": self.receptive_radius,
            "postprocess": dict(self.postprocess),
            "models": {k: m.to_dict() for k, m in self.models.items()},
            "engines": [e.to_dict() for e in self.engines],
            "config": dict(self.config),
            "source": dict(self.source),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST) -> Manifest:
        """Validate a parsed manifest; every problem is a BundleError naming the field."""
        if not isinstance(data, Mapping):
            raise BundleError(f"{where}: expected a JSON object; re-export the bundle")
        version = _need(data, "format_version", int, where)
        if version not in SUPPORTED_FORMAT_VERSIONS:
            newer = version > max(SUPPORTED_FORMAT_VERSIONS)
            raise BundleError(
                f"{where}: bundle format version {version} is not supported (this hamnet-deploy reads "
                f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); "
                + ("upgrade hamnet-deploy" if newer else "re-export the model with this version"))
        classes = _need(data, "classes", list, where)
        if not classes or not all(isinstance(c, str) and c for c in classes):
            raise BundleError(f"{where}: 'classes' must be a non-empty list of names; re-export the bundle")
        if len(set(classes)) != len(classes):
            raise BundleError(f"{where}: 'classes' has duplicate names; re-export the bundle")
        num_classes = _need(data, "num_classes", int, where)
        if num_classes != len(classes):
            raise BundleError(f"{where}: num_classes={num_classes} but {len(classes)} class names; "
                              "re-export the bundle")
        feature_dim = _need(data, "feature_dim", int, where)
        if feature_dim < 1:
            raise BundleError(f"{where}: feature_dim={feature_dim} must be >= 1; re-export the bundle")
        snippet = float(_need(data, "snippet_seconds", (int, float), where))
        if not (math.isfinite(snippet) and snippet > 0):
            raise BundleError(f"{where}: snippet_seconds={snippet} must be > 0; re-export the bundle")
        radius = _need(data, "receptive_radius", int, where)
        if radius < 0:
            raise BundleError(f"{where}: receptive_radius={radius} must be >= 0; re-export the bundle")
        post = _need(data, "postprocess", Mapping, where)
        try:
            PostprocessConfig.from_dict(post)
        except ConfigError as exc:
            raise BundleError(f"{where}: postprocess: {exc}; re-export the bundle") from None
        raw_models = _need(data, "models", Mapping, where)
        unknown = sorted(set(raw_models) - set(MODEL_KINDS))
        if unknown:
            raise BundleError(f"{where}: unknown model kind(s) {', '.join(map(repr, unknown))} (known: "
                              f"{', '.join(MODEL_KINDS)}); upgrade hamnet-deploy or re-export")
        if ONNX not in raw_models:
            raise BundleError(f"{where}: models has no {ONNX!r} entry; re-export the bundle")
        models = {k: ModelFile.from_dict(v, f"{where}: models.{k}") for k, v in raw_models.items()}
        raw_engines = _opt(data, "engines", list, where, [])
        engines = tuple(EngineEntry.from_dict(e, f"{where}: engines[{i}]") for i, e in enumerate(raw_engines))
        names = [m.file for m in models.values()] + [e.file for e in engines]
        if len(set(names)) != len(names):
            raise BundleError(f"{where}: two entries name the same file; re-export the bundle")
        if MANIFEST in names:
            raise BundleError(f"{where}: a model entry names {MANIFEST}; re-export the bundle")
        return cls(
            classes=tuple(classes), feature_dim=feature_dim, snippet_seconds=snippet,
            receptive_radius=radius, postprocess=dict(post), models=models, engines=engines,
            package_version=str(_opt(data, "package_version", str, where, "")),
            created=str(_opt(data, "created", str, where, "")),
            config=dict(_opt(data, "config", Mapping, where, {})),
            source=dict(_opt(data, "source", Mapping, where, {})),
            format_version=version,
        )


# --------------------------------------------------------------------------- #
#                                   reader                                    #
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Bundle:
    """A validated bundle folder. Get one with :func:`load_bundle`."""

    path: Path
    manifest: Manifest

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes

    @property
    def feature_dim(self) -> int:
        return self.manifest.feature_dim

    @property
    def snippet_seconds(self) -> float:
        return self.manifest.snippet_seconds

    @property
    def receptive_radius(self) -> int:
        return self.manifest.receptive_radius

    @property
    def postprocess(self) -> PostprocessConfig:
        """The post-processing settings the model was exported with."""
        return PostprocessConfig.from_dict(self.manifest.postprocess)

    @property
    def engines(self) -> list[EngineEntry]:
        return list(self.manifest.engines)

    @property
    def kinds(self) -> list[str]:
        """Model kinds present (`onnx`, `onnx_int8`)."""
        return list(self.manifest.models)

    def has(self, kind: str) -> bool:
        return kind in self.manifest.models

    def model(self, kind: str = ONNX) -> ModelFile:
        try:
            return self.manifest.models[kind]
        except KeyError:
            raise BundleError(f"{self.path}: the bundle has no {kind!r} model (it has "
                              f"{', '.join(self.manifest.models)}); re-export with the option that "
                              "adds it (e.g. hamnet export --int8-cpu)") from None

    def model_path(self, kind: str = ONNX) -> Path:
        """Path of the `kind` model file (`onnx` or `onnx_int8`)."""
        return self._resolve(self.model(kind).file)

    def engine_path(self, engine: EngineEntry) -> Path:
        return self._resolve(engine.file)

    def _resolve(self, name: str) -> Path:
        safe_relative_name(name, str(self.path / MANIFEST))
        full = self.path / name
        root = self.path.resolve()
        try:
            full.resolve().relative_to(root)
        except ValueError:
            raise BundleError(f"{self.path}: {name!r} resolves outside the bundle folder (a symbolic "
                              "link?); refusing this bundle") from None
        return full

    def verify_checksums(self, only: Iterable[str] | None = None) -> None:
        """Check that every listed file exists and matches its SHA-256.

        `only`: file names (as in the manifest) to check; default all. Raises BundleError
        naming the first file that is missing or differs.
        """
        wanted = None if only is None else set(only)
        for label, name, expected in self.manifest.files():
            if wanted is not None and name not in wanted:
                continue
            full = self._resolve(name)
            if not full.is_file():
                raise BundleError(f"{full}: listed in the manifest ({label}) but missing; the bundle is "
                                  "incomplete, re-export it with hamnet export")
            actual = sha256_file(full)
            if actual != expected:
                raise BundleError(f"{full}: checksum mismatch (sha256 {actual[:12]}... but the manifest "
                                  f"says {expected[:12]}...): the file was modified or damaged; re-export "
                                  "the bundle with hamnet export")


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Parse and validate `path` (a manifest.json file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"{path}: no manifest; not a model bundle (make one with hamnet export)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc}); re-export the bundle") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BundleError(f"{path}: manifest is not valid JSON ({exc}); re-export the bundle") from None
    except RecursionError:
        raise BundleError(f"{path}: manifest JSON is nested too deeply; re-export the bundle") from None
    return Manifest.from_dict(data, str(path))


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Open a bundle folder (or its manifest.json) and validate it.

    With `verify` (default) every file's SHA-256 is checked against the manifest, so
    a modified or truncated model is refused before it runs.
    """
    path = Path(path)
    if path.name == MANIFEST and path.is_file():
        path = path.parent
    if not path.exists():
        raise BundleError(f"{path}: bundle not found; make one with hamnet export CHECKPOINT --out {path}")
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle folder; pass the folder hamnet export wrote")
    bundle = Bundle(path, read_manifest(path / MANIFEST))
    for _, name, _ in bundle.manifest.files():
        bundle._resolve(name)
    if verify:
        bundle.verify_checksums()
    return bundle
