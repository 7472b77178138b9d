"""Add TensorRT engines or the INT8 CPU model to an existing bundle, in place and
atomically: `hamnet export BUNDLE --trt` on the device the engine is for (a Jetson has
the bundle, TensorRT and NumPy; no PyTorch, no checkpoint). Everything is made from the
bundle's model.onnx.

How a kill at any moment leaves a valid, loadable bundle:

1. the bundle is loaded with every checksum checked: a damaged bundle is refused before
   anything is built;
2. new files are written into `BUNDLE/.hamnet-update-XXXX/` under names no listed file
   has (an engine rebuilt with --force is `NAME-2.engine` while `NAME.engine` is listed);
3. commit, with SIGINT/SIGTERM held: the new files are moved beside the manifest, then
   the new manifest (old entries, the new ones, updated checksums) replaces the old one
   in one rename, the commit point;
4. only then are the files it no longer lists (what --force replaced) deleted, and the
   temporary folder.

Before the rename the old manifest is in place and its files are untouched (a kill -9
in step 3 can leave unlisted new files beside them; the next update never reuses their
names). After it, the new manifest is, and all its files are in place. A
`.hamnet-update-*` folder a kill left behind is removed by the next update.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from hamnet_deploy.export.bundle_writer import Staging, now_iso
from hamnet_deploy.runtime.bundle import Bundle
from hamnet_deploy.runtime.errors import BundleError, ConfigError
from hamnet_deploy.runtime.fileio import (
    publish_permissions,
    sha256_file,
    signals_deferred,
    write_json_atomic,
)
from hamnet_deploy.runtime.manifest import (
    MANIFEST,
    EngineEntry,
    Manifest,
    ModelFile,
    TensorSpec,
    safe_relative_name,
)

TEMP_PREFIX = ".hamnet-update-"


class BundleUpdate(Staging):
    """The staging area of an in-place bundle update (the interface of
    `export.bundle_writer.BundleStage`, so the export steps write into either)."""

    def __init__(self, bundle: Bundle, force: bool = False) -> None:
        self.bundle = bundle
        self.force = force
        self._path: Path | None = None
        self.committed = False
        self.names: dict[str, str] = {}  # name a step asked for -> the name it gets
        self.replaced: set[str] = set()  # listed files the update replaces

    def __enter__(self) -> BundleUpdate:
        import tempfile

        root = self.bundle.path
        for stale in root.glob(TEMP_PREFIX + "*"):  # left by a killed update (ours by name)
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
        try:
            with signals_deferred():
                self._path = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root))
        except OSError as exc:
            raise BundleError(f"{root}: cannot write into the bundle folder ({exc.strerror}); check its "
                              "permissions") from exc
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.committed and self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)

    # ---------------------------------------------------------------- names
    def _listed(self) -> set[str]:
        return {name for _, name, _ in self.bundle.manifest.files()}

    def claim(self, name: str) -> str:
        """The name the new file `name` gets: `name` unless a listed file, a file in the
        bundle folder or another new file has it; then `NAME-2.ext`, `NAME-3.ext`, ..."""
        safe_relative_name(name, "bundle update")
        if name in self.names:
            return self.names[name]
        if name in self.names.values():  # already a claimed name
            return name
        taken = self._listed() | set(self.names.values())
        stem, dot, suffix = name.rpartition(".") if "." in name else (name, "", "")
        final, n = name, 1
        while final in taken or (self.bundle.path / final).exists() or final == MANIFEST:
            n += 1
            final = f"{stem}-{n}{dot}{suffix}"
        self.names[name] = final
        return final

    def file(self, name: str) -> Path:
        """Where to write the new file `name` (in the staging folder, under its claimed name)."""
        return self.path / self.claim(name)

    # ---------------------------------------------------------------- entries
    def replace_model(self, kind: str) -> None:
        """Note that the update replaces the bundle's `kind` model (refused without force)."""
        if kind in self.bundle.manifest.models:
            if not self.force:
                listed = self.bundle.manifest.models[kind].file
                raise ConfigError(f"{self.bundle.path} already has the {kind} model ({listed}); pass --force to "
                                  "replace it")
            self.replaced.add(self.bundle.manifest.models[kind].file)

    def replace_engine(self, name: str) -> None:
        """Note that the new engine `name` replaces the listed engine of that name."""
        listed = [e.file for e in self.bundle.manifest.engines if re.sub(r"-\d+(?=\.engine$)", "", e.file) == name]
        if listed and not self.force:
            raise ConfigError(f"{self.bundle.path} already has the engine {listed[0]} (this GPU, TensorRT and "
                              "precision); pass --force to rebuild it")
        self.replaced.update(listed)

    def model_entry(self, name: str, *, opset: int, precision: str, inputs: Sequence[TensorSpec],
                    outputs: Sequence[TensorSpec], extra: Mapping[str, Any] | None = None) -> ModelFile:
        """Manifest entry of the new model file `name` (already written)."""
        path = self.file(name)
        if not path.is_file():
            raise BundleError(f"{path}: model file was not written")
        return ModelFile(self.claim(name), sha256_file(path), int(opset), precision, tuple(inputs), tuple(outputs),
                         dict(extra or {}))

    def engine_entries(self, raw: Sequence[Mapping[str, Any]]) -> tuple[EngineEntry, ...]:
        """Entries of the engines the builder wrote into the staging folder, renamed to
        their claimed names (an engine of the same name is replaced only with force)."""
        out = []
        for i, item in enumerate(raw):
            item = dict(item)
            built = safe_relative_name(item.get("file"), f"engines[{i}]")
            self.replace_engine(built)
            final = self.claim(built)
            if final != built:
                os.replace(self.path / built, self.path / final)
            path = self.path / final
            if not path.is_file():
                raise BundleError(f"engines[{i}]: {built} was not written into the bundle folder")
            actual = sha256_file(path)
            if item.get("sha256") not in (None, actual):
                raise BundleError(f"engines[{i}]: {built} does not match the sha256 the builder reported")
            item.update(file=final, sha256=actual)
            out.append(EngineEntry.from_dict(item, f"engines[{i}]"))
        return tuple(out)

    # ---------------------------------------------------------------- commit
    def commit(self, models: Mapping[str, ModelFile], engines: Sequence[EngineEntry],
               source: Mapping[str, Any] | None = None) -> Manifest:
        """Move the new files in, switch the manifest (the commit point), delete what the
        update replaced. Returns the new manifest."""
        old = self.bundle.manifest
        kept = tuple(e for e in old.engines if e.file not in self.replaced)
        manifest = old.replace(models={**old.models, **models}, engines=kept + tuple(engines),
                               source={**old.source, **(source or {}), "updated": now_iso()})
        data = manifest.to_dict()
        Manifest.from_dict(data, "new manifest")  # the reader must accept what we write
        new_names = {name for _, name, _ in manifest.files()}
        for _, name, sha in manifest.files():
            if name in self._listed() and name not in self.replaced:
                continue  # untouched
            staged = self.path / name
            if not staged.is_file() or sha256_file(staged) != sha:
                raise BundleError(f"{name}: staged file is missing or changed before the manifest was written")
        publish_permissions(self.path)
        root = self.bundle.path
        staged_files = sorted(self.snapshot())
        with signals_deferred():
            for name in staged_files:
                target = root / name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.path / name, target)
            write_json_atomic(root / MANIFEST, data)  # the commit point
            self.committed = True
        for name in sorted(self._listed() - new_names):
            (root / name).unlink(missing_ok=True)
        shutil.rmtree(self.path, ignore_errors=True)
        return manifest

    def bring_in(self, pattern: str) -> list[str]:
        """Copy the bundle's files matching `pattern` (e.g. calibration caches) into the
        staging folder so a step can reuse them; they are moved back on commit."""
        copied = []
        for src in sorted(self.bundle.path.glob(pattern)):
            if src.is_file() and src.name not in self._listed():
                shutil.copy2(src, self.path / src.name)
                self.names.setdefault(src.name, src.name)
                copied.append(src.name)
        return copied
