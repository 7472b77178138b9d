"""The deployment bundle (SPEC §6): a folder with the ONNX model, optional INT8 and
TensorRT variants and a `manifest.json` that says what they are.

Layout::

    BUNDLE/manifest.json        `runtime.manifest.Manifest`
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

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hamnet_deploy.runtime.errors import BundleError
from hamnet_deploy.runtime.fileio import read_json, sha256_file
from hamnet_deploy.runtime.manifest import (
    MANIFEST,
    ONNX,
    EngineEntry,
    Manifest,
    ModelFile,
    safe_relative_name,
)


# --------------------------------------------------------------------------- #
#                                   reader                                    #
# --------------------------------------------------------------------------- #
def _field(name: str, convert: Callable[[Any], Any] = lambda v: v, doc: str = "") -> Any:
    """A read-only attribute of the bundle taken from its manifest."""
    return property(lambda self: convert(getattr(self.manifest, name)), doc=doc or f"The manifest's {name}.")


@dataclass(frozen=True)
class Bundle:
    """A validated bundle folder. Get one with :func:`load_bundle`."""

    path: Path
    manifest: Manifest

    classes = _field("classes", list, "Class names, in the model's output order.")
    num_classes = _field("num_classes")
    feature_dim = _field("feature_dim", doc="D, the width of a feature row.")
    snippet_seconds = _field("snippet_seconds")
    receptive_radius = _field("receptive_radius", doc="Snippets of context each output sees on each side.")
    postprocess = _field("postprocess", doc="The post-processing settings the model was exported with.")
    engines = _field("engines", list, "TensorRT engine entries.")

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

    def accuracy_verified(self, kind: str) -> tuple[bool, str]:
        """Whether the accuracy guard (`hamnet export --verify`) measured this very `kind`
        model (same sha256) within its --max-drop of PyTorch's average mAP; and why."""
        record = self.manifest.source.get("verify")
        record = record if isinstance(record, dict) else {}
        mine, ref, tol = record.get(kind), record.get("pytorch"), record.get("max_drop")
        if not (isinstance(mine, dict) and isinstance(ref, dict) and isinstance(tol, (int, float))):
            return False, f"no accuracy check of its {kind} model (hamnet export RUN --int8-cpu --verify DATA)"
        if not self.has(kind) or mine.get("sha256") != self.model(kind).sha256:
            return False, (f"its {kind} model is not the one --verify measured (re-run hamnet export RUN "
                           "--int8-cpu --verify DATA)")
        try:
            ours, theirs = 100.0 * float(mine["average_mAP"]), 100.0 * float(ref["average_mAP"])
            tol = float(tol)
        except (KeyError, TypeError, ValueError, OverflowError):
            return False, f"the accuracy check of its {kind} model is incomplete"
        drop = theirs - ours
        if not (math.isfinite(drop) and math.isfinite(tol)) or drop > tol:
            return False, (f"--verify measured an average mAP drop of {drop:.2f} points for its {kind} model "
                           f"(more than --max-drop {tol:g})")
        return True, (f"--verify kept its average mAP within {tol:g} points of PyTorch ({ours:.2f} vs "
                      f"{theirs:.2f}, on {record.get('videos', '?')} {record.get('subset', 'test')} videos)")

    def check_self_contained(self, kind: str) -> None:
        """BundleError when the `kind` ONNX model keeps tensors in external data files: the
        checksums cover only the files the manifest lists, so every weight must be in them.
        (An external tensor's entry always has the key `location`, as protobuf writes it:
        field 1, 8 bytes; weights are never scanned by anything that runs them.)"""
        path = self.model_path(kind)
        if b"\x0a\x08location" in path.read_bytes():
            raise BundleError(f"{path}: keeps weights in external data files, which a bundle does not checksum; "
                              "re-export the bundle (hamnet export RUN writes one self-contained model.onnx)")

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
    data = read_json(path, "manifest", BundleError, "re-export the bundle",
                     missing="no manifest; not a model bundle (make one with hamnet export)")
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
