"""Checkpoints of a training run, written so that a kill at any moment never leaves a
half-written one: each epoch's checkpoint is a folder built under a temporary name and
renamed into place, then the run's `latest.json` pointer is replaced atomically.

Run folder layout::

    RUN/config.json               resolved training config
    RUN/latest.json               {"epoch": N, "path": "checkpoints/epoch-000N"}
    RUN/metrics.jsonl             one JSON line per evaluation
    RUN/checkpoints/epoch-000N/   model.safetensors, optimizer.pt, state.json

Weights are safetensors (no pickle); the optimizer state is a torch file read back
with `weights_only=True`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from runtime.errors import BundleError
from runtime.fileio import write_json_atomic

LATEST = "latest.json"
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
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch-{epoch:04d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".epoch-{epoch:04d}-", dir=root))
    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "epoch": epoch}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json_atomic(run_dir / LATEST, {"epoch": epoch, "path": f"{CHECKPOINTS}/{final.name}"})
    for old in sorted(root.glob("epoch-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".epoch-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (its latest checkpoint) or an epoch folder -> the epoch folder."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: checkpoint not found; pass a run folder from `hamnet train` or its checkpoints/epoch-N folder")
    if (path / LATEST).is_file():
        try:
            pointer = json.loads((path / LATEST).read_text())
            target = path / pointer["path"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{path / LATEST}: unreadable checkpoint pointer; resume from a checkpoints/epoch-N folder") from exc
        if ".." in Path(pointer["path"]).parts:
            raise BundleError(f"{path / LATEST}: pointer leaves the run folder; refusing it")
        path = target
    if not (path / "model.safetensors").is_file() or not (path / "state.json").is_file():
        raise BundleError(f"{path}: not a checkpoint (needs model.safetensors and state.json); pass a run folder from `hamnet train`")
    return path


def load_checkpoint(path: str | Path, with_optimizer: bool = False) -> Checkpoint:
    """Load a checkpoint without pickle (safetensors; optimizer with weights_only=True)."""
    folder = resolve_checkpoint(path)
    try:
        state = json.loads((folder / "state.json").read_text())
        classes, epoch = state["classes"], int(state["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{folder / 'state.json'}: corrupt checkpoint state; use another checkpoint") from exc
    if not isinstance(classes, list):
        raise BundleError(f"{folder / 'state.json'}: 'classes' must be a list; use another checkpoint")
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
    return Checkpoint(folder, epoch, weights, opt, state)


@dataclass
class LoadedModel:
    """A checkpoint turned back into a ready model (eval mode) with its settings."""

    model: torch.nn.Module
    config: Any  # training.config.TrainConfig
    classes: list[str]
    postprocess: Any  # runtime.postprocess.PostprocessConfig
    checkpoint: Checkpoint


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the HAM-Net of a checkpoint (run folder or epoch folder), in eval mode."""
    from runtime.postprocess import PostprocessConfig
    from training.config import from_dict
    from training.model import HamNet

    ckpt = load_checkpoint(path)
    cfg = from_dict(ckpt.config, where=str(ckpt.path / "state.json"))
    if cfg.model.num_classes != len(ckpt.classes):
        raise BundleError(f"{ckpt.path}: config says {cfg.model.num_classes} classes but the checkpoint lists "
                          f"{len(ckpt.classes)}; the checkpoint is inconsistent, use another one")
    model = HamNet.from_config(cfg.model)
    try:
        model.load_state_dict(ckpt.model_state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BundleError(f"{ckpt.path}: weights do not fit the configured model ({first}); use the matching config") from exc
    model.to(device).eval()
    post = PostprocessConfig.from_dict(ckpt.state.get("postprocess", {}))
    return LoadedModel(model, cfg, ckpt.classes, post, ckpt)
