"""Checkpoints of a training run, written so that a kill at any moment never leaves a
half-written one: each epoch's checkpoint is a folder built under a temporary name and
renamed into place, then the run's `latest.json` pointer is replaced atomically.

Run folder layout::

    RUN/config.json               resolved training config
    RUN/latest.json               {"epoch": N, "path": "checkpoints/epoch-000N"}  (the last epoch)
    RUN/best.json                 the same for the epoch of the best average mAP, plus "average_mAP"
    RUN/metrics.jsonl             one JSON line per epoch
    RUN/checkpoints/epoch-000N/   model.safetensors, optimizer.pt, state.json

The last two epochs and the best one are kept. A run folder given to export, detect or
eval means its best checkpoint (the last where no evaluation picked one); `--resume`
continues from the last. `RUN/best.json` or `RUN/latest.json` name one of them.

Weights are safetensors (no pickle); the optimizer state is a torch file read back
with `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hamnet_deploy.runtime.errors import BundleError, ConfigError, DataError
from hamnet_deploy.runtime.fileio import signals_deferred, staging, write_json_atomic

LATEST = "latest.json"
BEST = "best.json"
CHECKPOINTS = "checkpoints"
KEEP = 2


@dataclass
class Checkpoint:
    """What a checkpoint holds once loaded."""

    path: Path
    epoch: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    state: dict[str, Any]  # classes, feature_dim, config, ...
    chosen: str = ""  # which one a run folder gave: "best checkpoint (epoch 35, ...)"

    @property
    def classes(self) -> list[str]:
        return list(self.state["classes"])

    @property
    def config(self) -> dict[str, Any]:
        return self.state["config"]


def save_checkpoint(run_dir: Path, epoch: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, state: dict[str, Any]) -> Path:
    """Write epoch `epoch`'s checkpoint and point latest.json at it; prune old ones."""
    run_dir = Path(run_dir)
    root = run_dir / CHECKPOINTS
    final = root / f"epoch-{epoch:04d}"
    try:
        # a re-run of this epoch after a resume replaces the old folder, never half-deletes it
        with staging(final, replace=True) as tmp:
            weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            save_file(weights, str(tmp / "model.safetensors"))
            if optimizer is not None:
                torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "state.json").write_text(json.dumps({**state, "epoch": epoch}, indent=1))
    except (OSError, SafetensorError) as exc:  # a full disk, a folder that became read-only, ...
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DataError(f"cannot write the checkpoint of epoch {epoch} into {root}: {why}; free space or "
                        f"check the folder, then continue with hamnet train --resume {run_dir}") from None
    write_json_atomic(run_dir / LATEST, {"epoch": epoch, "path": f"{CHECKPOINTS}/{final.name}"})
    best = _pointer_target(run_dir, BEST)
    for old_epoch in _epoch_folders(root)[:-KEEP]:
        if old_epoch not in (final, best):  # renamed aside first: a kill mid-delete leaves no half checkpoint in view
            aside = root / f".{old_epoch.name}.old-{os.getpid()}"
            with signals_deferred():  # Ctrl-C / SIGTERM land after the delete, leaving nothing aside
                try:
                    os.replace(old_epoch, aside)
                except OSError:
                    continue
                shutil.rmtree(aside, ignore_errors=True)
    for stale in root.glob(".epoch-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def mark_best(run_dir: Path, epoch: int, average_map: float) -> None:
    """Point best.json at epoch `epoch`'s checkpoint (its average mAP is the best so far)."""
    write_json_atomic(Path(run_dir) / BEST, {"epoch": epoch, "path": f"{CHECKPOINTS}/epoch-{epoch:04d}",
                                             "average_mAP": round(float(average_map), 6)})


def best_of(run_dir: Path) -> tuple[int, float] | None:
    """(epoch, average mAP) that best.json records (None: no evaluation picked a best yet)."""
    try:
        pointer = json.loads((Path(run_dir) / BEST).read_text())
        epoch, value = pointer["epoch"], pointer["average_mAP"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    number = (int, float)
    if isinstance(value, bool) or isinstance(epoch, bool) or not isinstance(value, number) or not isinstance(epoch, int):
        return None
    return epoch, float(value)


def _pointer_target(run_dir: Path, name: str) -> Path | None:
    """The epoch folder a pointer file names (None: no pointer, or an unusable one)."""
    try:
        return _read_pointer(Path(run_dir) / name)
    except BundleError:
        return None


def _read_pointer(pointer: Path) -> Path | None:
    """The epoch folder `pointer` (latest.json / best.json) names; None if there is none."""
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["path"]
        if not isinstance(name, str):
            raise TypeError("path is not a string")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise BundleError(f"{pointer}: unreadable checkpoint pointer; pass a checkpoints/epoch-N folder") from exc
    if ".." in Path(name).parts or Path(name).is_absolute():
        raise BundleError(f"{pointer}: pointer leaves the run folder; refusing it")
    return pointer.parent / name


def _epoch_folders(root: Path) -> list[Path]:
    """checkpoints/epoch-N folders by N (numerically: epoch-10000 comes after epoch-9999)."""
    found = []
    for p in root.glob("epoch-*"):
        number = p.name[len("epoch-"):]
        if p.is_dir() and number.isdigit():
            found.append((int(number), p))
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | Path, which: str = "last") -> Path:
    """A run folder, a pointer file (RUN/latest.json, RUN/best.json) or an epoch folder ->
    the epoch folder. For a run folder, `which` is "last" (resume) or "best" (the best
    evaluated epoch, else the last)."""
    return choose_checkpoint(path, which)[0]


def choose_checkpoint(path: str | Path, which: str = "last") -> tuple[Path, str]:
    """`resolve_checkpoint` plus a description of the choice, for messages:
    "best checkpoint (epoch 35, average mAP 23.1 %)", "last checkpoint (epoch 40)"."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: checkpoint not found; pass a run folder from `hamnet train` or its checkpoints/epoch-N folder")
    what = f"checkpoint {path}"
    if path.is_file() and path.name in (LATEST, BEST):
        path, which = path.parent, "best" if path.name == BEST else "last"
    newest = _epoch_folders(path / CHECKPOINTS)[-1:] if (path / CHECKPOINTS).is_dir() else []
    if (path / LATEST).is_file() or (path / BEST).is_file() or newest:  # a run folder
        best = _read_pointer(path / BEST) if which == "best" else None
        if best is not None and (best / "model.safetensors").is_file():
            record = best_of(path)
            shown = "" if record is None else f", average mAP {100 * record[1]:.1f} %"
            path, what = best, f"best checkpoint (epoch {_epoch_of(best)}{shown})"
        else:  # no latest.json: killed between the first checkpoint's rename and its pointer
            folder = _read_pointer(path / LATEST) or next(iter(newest), None)
            if folder is None:
                raise BundleError(f"{path}: no {LATEST}; pass one of its checkpoints/epoch-N folders")
            note = "; no evaluation picked a best" if which == "best" else ""
            path, what = folder, f"last checkpoint (epoch {_epoch_of(folder)}{note})"
    if not (path / "model.safetensors").is_file() or not (path / "state.json").is_file():
        raise BundleError(f"{path}: not a checkpoint (needs model.safetensors and state.json); pass a run folder from `hamnet train`")
    return path, what


def _epoch_of(folder: Path) -> str:
    number = folder.name[len("epoch-"):]
    return str(int(number)) if number.isdigit() else folder.name


def load_checkpoint(path: str | Path, with_optimizer: bool = False, which: str = "last") -> Checkpoint:
    """Load a checkpoint without pickle (safetensors; optimizer with weights_only=True);
    `which` as in `resolve_checkpoint`."""
    folder, what = choose_checkpoint(path, which)
    try:
        state = json.loads((folder / "state.json").read_text())
        classes, epoch, config = state["classes"], state["epoch"], state["config"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise BundleError(f"{folder / 'state.json'}: corrupt checkpoint state; use another checkpoint") from exc
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise BundleError(f"{folder / 'state.json'}: 'classes' must be a non-empty list of names; use another "
                          "checkpoint")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise BundleError(f"{folder / 'state.json'}: epoch {epoch!r} must be a whole number >= 0; use another "
                          "checkpoint")
    if not isinstance(config, dict):
        raise BundleError(f"{folder / 'state.json'}: 'config' must be an object of settings; use another checkpoint")
    try:
        weights = load_file(str(folder / "model.safetensors"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{folder / 'model.safetensors'}: corrupt or truncated weights ({exc}); use another checkpoint") from exc
    opt = None
    if with_optimizer and (folder / "optimizer.pt").is_file():
        try:
            opt = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt files
            raise BundleError(f"{folder / 'optimizer.pt'}: corrupt optimizer state ({type(exc).__name__}); use another checkpoint") from exc
    return Checkpoint(folder, epoch, weights, opt, state, what)


@dataclass
class LoadedModel:
    """A checkpoint turned back into a ready model (eval mode) with its settings."""

    model: torch.nn.Module
    config: Any  # training.config.TrainConfig
    classes: list[str]
    postprocess: Any  # runtime.postprocess.PostprocessConfig
    checkpoint: Checkpoint


def load_model(path: str | Path, device: str | torch.device = "cpu", which: str = "best") -> LoadedModel:
    """Rebuild the HAM-Net of a checkpoint (run folder: its best checkpoint by default, or
    an epoch folder), in eval mode."""
    from hamnet_deploy.runtime.postprocess import PostprocessConfig
    from hamnet_deploy.training.config import TrainConfig
    from hamnet_deploy.training.model import HamNet

    ckpt = load_checkpoint(path, which=which)
    cfg = TrainConfig.from_dict(ckpt.config, where=str(ckpt.path / "state.json"))
    if cfg.model.num_classes != len(ckpt.classes):
        raise BundleError(f"{ckpt.path}: config says {cfg.model.num_classes} classes but the checkpoint lists "
                          f"{len(ckpt.classes)}; the checkpoint is inconsistent, use another one")
    model = HamNet.from_config(cfg.model)
    try:
        model.load_state_dict(ckpt.model_state)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:240]  # "Error(s) in loading state_dict ...: size mismatch for ..."
        raise BundleError(f"{ckpt.path}: weights do not fit the configured model ({first}); use the matching config") from exc
    model.to(device).eval()
    try:
        post = PostprocessConfig.from_dict(ckpt.state.get("postprocess", {}))
    except ConfigError as exc:
        raise BundleError(f"{ckpt.path / 'state.json'}: {exc}; use another checkpoint") from None
    return LoadedModel(model, cfg, ckpt.classes, post, ckpt)
