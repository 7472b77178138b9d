"""Write a model bundle atomically (SPEC §6; format in `runtime.bundle`).

A `BundleStage` is a temporary folder beside the target (`.NAME.tmp-XXXX`). Every
file of the bundle is written there; `commit` writes `manifest.json` last and
renames the folder into place. An existing bundle is refused unless `force`, and is
then replaced by renaming it aside, renaming the new one in and deleting the old
one, so a reader sees either the old bundle or the new one, never a mix. A folder
that exists but is not a bundle is never deleted. A failure or Ctrl-C removes the
temporary folder.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from hamnet_deploy.runtime.errors import BundleError
from hamnet_deploy.runtime.fileio import (
    publish_folder,
    sha256_file,
    signals_deferred,
    stage_folder,
    write_json_atomic,
)
from hamnet_deploy.runtime.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    EngineEntry,
    Manifest,
    ModelFile,
    TensorSpec,
    safe_relative_name,
)


def check_target(target: str | os.PathLike, force: bool = False) -> Path:
    """Refuse an existing bundle without `force`, and anything at `target` that is not
    a bundle (or an empty folder) even with it. Returns the target as a Path."""
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return target
    if target.is_symlink() or not target.is_dir():
        raise BundleError(f"{target}: exists and is not a folder; choose another --out")
    entries = list(target.iterdir())
    if not entries:
        return target
    if not (target / MANIFEST).is_file():
        raise BundleError(f"{target}: folder exists and is not a model bundle (no {MANIFEST}); choose "
                          "another --out (it is never deleted)")
    if not force:
        raise BundleError(f"{target}: a bundle already exists; pass --force to replace it or choose "
                          "another --out")
    check_replaceable(target)
    return target


def check_replaceable(target: Path) -> None:
    """Refuse to replace a folder that is not wholly a hamnet bundle: its manifest must be
    one (format marker, valid entries) and every file in it must be the bundle's own
    (listed, or a calibration cache an engine entry names); anything else is the user's."""
    from hamnet_deploy.runtime.bundle import read_manifest

    try:
        manifest = read_manifest(target / MANIFEST)
    except BundleError as exc:
        raise BundleError(f"{target}: its {MANIFEST} is not a hamnet bundle's ({str(exc).split(': ', 1)[-1]}); "
                          "--force replaces only a bundle: choose another --out (the folder is never "
                          "deleted)") from None
    owned = {MANIFEST} | {name for _, name, _ in manifest.files()}
    owned |= {str(e.extra["calibration_cache"]) for e in manifest.engines if e.extra.get("calibration_cache")}
    foreign = sorted(p.relative_to(target).as_posix() for p in target.rglob("*")
                     if (p.is_file() or p.is_symlink()) and p.relative_to(target).as_posix() not in owned
                     and not p.relative_to(target).parts[0].startswith(".hamnet-update-"))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise BundleError(f"{target}: holds files the bundle does not list ({shown}); --force replaces only a "
                          "bundle's own files: move them out or choose another --out")


class Staging:
    """What both ways of writing a bundle share: a staging folder (`path`, inside the
    `with` block), what was staged in it (`snapshot`) and undoing a failed step
    (`remove_new`). `BundleStage` writes a new bundle, `export.bundle_update.BundleUpdate`
    adds to one; the export steps write into either."""

    _path: Path | None = None

    @property
    def path(self) -> Path:
        """The staging folder (exists inside the `with` block)."""
        if self._path is None:
            raise BundleError(f"{type(self).__name__} is used as a context manager: `with "
                              f"{type(self).__name__}(...) as stage:`")
        return self._path

    def snapshot(self) -> set[str]:
        """Relative names of the files staged so far."""
        return {p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()}

    def remove_new(self, before: set[str]) -> list[str]:
        """Delete files staged after `snapshot()` returned `before` (e.g. what a failed
        engine build left); returns their names."""
        gone = sorted(self.snapshot() - before)
        for name in gone:
            (self.path / name).unlink(missing_ok=True)
        return gone


class BundleStage(Staging):
    """Build a bundle in a temporary folder beside `target`; `commit` moves it into place."""

    def __init__(self, target: str | os.PathLike, force: bool = False) -> None:
        self.target = check_target(target, force)
        self.force = force
        self._path: Path | None = None
        self.committed = False

    def __enter__(self) -> BundleStage:
        """Create the staging folder; a Ctrl-C at any moment leaves none behind."""
        try:
            with signals_deferred():
                self._path = stage_folder(self.target)
        except BaseException:
            self.abort()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.committed:
            self.abort()

    def abort(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)

    def file(self, name: str) -> Path:
        """Path of `name` inside the staging folder (name checked like the reader does)."""
        safe_relative_name(name, "bundle writer")
        return self.path / name

    def model_entry(self, name: str, *, opset: int, precision: str, inputs: Sequence[TensorSpec],
                    outputs: Sequence[TensorSpec], extra: Mapping[str, Any] | None = None) -> ModelFile:
        """Manifest entry of a model file already written into the stage."""
        path = self.file(name)
        if not path.is_file():
            raise BundleError(f"{path}: model file was not written")
        return ModelFile(name, sha256_file(path), int(opset), precision, tuple(inputs), tuple(outputs),
                         dict(extra or {}))

    def engine_entries(self, raw: Sequence[Mapping[str, Any]]) -> tuple[EngineEntry, ...]:
        """Validate engine entries returned by the TensorRT builder (files relative to the
        stage); a missing sha256 is computed, a wrong one refused."""
        out = []
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping):
                raise BundleError(f"engine builder returned {type(item).__name__} for engine {i}; expected a dict")
            item = dict(item)
            name = safe_relative_name(item.get("file"), f"engines[{i}]")
            path = self.file(name)
            if not path.is_file():
                raise BundleError(f"engines[{i}]: {name} was not written into the bundle folder")
            actual = sha256_file(path)
            if item.get("sha256") not in (None, actual):
                raise BundleError(f"engines[{i}]: {name} does not match the sha256 the builder reported")
            item["sha256"] = actual
            out.append(EngineEntry.from_dict(item, f"engines[{i}]"))
        return tuple(out)

    def commit(self, manifest: Manifest) -> Path:
        """Check the manifest against the staged files, write it, move the bundle into place."""
        data = manifest.to_dict()
        Manifest.from_dict(data, "new manifest")  # the reader must accept what we write
        for _, name, sha in manifest.files():
            path = self.file(name)
            if not path.is_file() or sha256_file(path) != sha:
                raise BundleError(f"{name}: staged file is missing or changed before the manifest was written")
        write_json_atomic(self.path / MANIFEST, data)
        if self.target.exists():
            check_target(self.target, self.force)
        publish_folder(self.path, self.target, replace=True)
        self.committed = True
        return self.target


def config_summary(cfg: Any) -> dict[str, Any]:
    """The training settings worth keeping with a deployed model (a TrainConfig)."""
    if cfg is None:
        return {}
    out: dict[str, Any] = {"recipe": cfg.recipe, "epochs": cfg.epochs, "seed": cfg.seed,
                           "ablation": cfg.ablation}
    out["model"] = dataclasses.asdict(cfg.model)
    out["loss"] = dataclasses.asdict(cfg.loss)
    d = cfg.data
    out["data"] = {"feature_dim": d.feature_dim, "snippet_seconds": d.snippet_seconds,
                   "num_snippets": d.num_snippets, "train_subset": d.train_subset,
                   "test_subset": d.test_subset, "path": d.path}
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def build_manifest(*, classes: Sequence[str], feature_dim: int, snippet_seconds: float,
                   receptive_radius: int, postprocess: Mapping[str, Any], models: Mapping[str, ModelFile],
                   engines: Sequence[EngineEntry] = (), config: Mapping[str, Any] | None = None,
                   source: Mapping[str, Any] | None = None) -> Manifest:
    from hamnet_deploy.runtime.version import __version__

    return Manifest(format_version=FORMAT_VERSION, classes=tuple(classes), num_classes=len(classes),
                    feature_dim=int(feature_dim),
                    snippet_seconds=float(snippet_seconds), receptive_radius=int(receptive_radius),
                    postprocess=dict(postprocess), models=dict(models), engines=tuple(engines),
                    package_version=__version__, created=now_iso(), config=dict(config or {}),
                    source=dict(source or {}))

