"""The HAM-Net trainer: seeded, device auto, AMP on CUDA, DDP under torchrun,
atomic per-epoch checkpoints, periodic evaluation through the NumPy runtime.

`train` is the loop; `train_epoch` is the train step (one pass over the samples) and
`training.evaluate.evaluate_model` the validate step. Progress and results go to a
`report` callback (`runtime.events`): the trainer prints nothing itself.

Determinism: model init uses `seed`; each epoch reseeds torch (dropout) with
(seed, epoch), the sampler shuffles with seed + epoch and snippet sampling is keyed by
(seed, epoch, video). So a run resumed from epoch N's checkpoint on CPU ends with the
same weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from hamnet_deploy.runtime.errors import BundleError, ConfigError, DataError
from hamnet_deploy.runtime.events import Reporter, emitter
from hamnet_deploy.runtime.fileio import atomic_write, read_json, write_json_atomic
from hamnet_deploy.runtime.locks import hold
from hamnet_deploy.runtime.scoring import EvalSummary
from hamnet_deploy.training import distributed as ddp
from hamnet_deploy.training.batches import TrainSamples, collate, epoch_seed
from hamnet_deploy.training.checkpoint import (
    CHECKPOINTS,
    LATEST,
    best_of,
    load_checkpoint,
    mark_best,
    save_checkpoint,
)
from hamnet_deploy.training.config import TrainConfig
from hamnet_deploy.training.dataset import WtalDataset
from hamnet_deploy.training.device import amp_dtype, select_device
from hamnet_deploy.training.evaluate import evaluate_model, postprocess_config
from hamnet_deploy.training.health import Health, diagnose
from hamnet_deploy.training.losses import HamNetLoss
from hamnet_deploy.training.model import HamNet
from hamnet_deploy.training.resident import ResidentBatches

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainOutcome:
    """What a finished (or resumed-and-finished) run reports."""

    run_dir: Path
    epochs: int
    last_loss: dict[str, float] = field(default_factory=dict)
    last_eval: EvalSummary | None = None
    seconds: float = 0.0
    best: tuple[int, float] | None = None  # (epoch, average mAP) of the best evaluated epoch
    health: Health | None = None  # did it learn anything (None: no epoch ran)


def fit_config_to_data(cfg: TrainConfig, data: WtalDataset) -> TrainConfig:
    """The dataset decides D and C: set model/data feature_dim and num_classes from it."""
    d, c = data.feature_dim, data.num_classes
    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, feature_dim=d, num_classes=c),
        data=dataclasses.replace(cfg.data, feature_dim=d),
    )


def make_loader(cfg: TrainConfig, train_set: WtalDataset, world: int = 1, rank: int = 0,
                pin: bool = False) -> tuple[TrainSamples, DistributedSampler, DataLoader]:
    """The training batches, as the released code makes them: every epoch a new random
    order of the training videos (`sampler.set_epoch`), cut into batches of
    `data.batch_size` with the last one smaller (split across `world` processes)."""
    samples = TrainSamples(train_set.features, train_set.labels, cfg.data.num_snippets, cfg.data.sampling, cfg.seed,
                           cfg.data.short_videos, cfg.data.bins)
    sampler = DistributedSampler(samples, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=False)
    loader = DataLoader(samples, batch_size=cfg.data.batch_size // world, sampler=sampler, collate_fn=collate,
                        num_workers=cfg.data.num_workers, pin_memory=pin, persistent_workers=False)
    return samples, sampler, loader


def _make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)


def _trim_metrics(path: Path, last_epoch: int) -> None:
    """On resume, drop log lines of epochs after the checkpoint (they will be redone)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a line cut by a kill
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch <= last_epoch:
            keep.append(line)
    with atomic_write(path, "w") as fh:
        fh.write("".join(x + "\n" for x in keep))


def _append_metrics(path: Path, record: dict[str, Any]) -> None:
    try:
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
    except OSError as exc:
        raise DataError(f"cannot append to {path}: {exc.strerror}; free space or check the folder, then "
                        f"continue with hamnet train --resume {path.parent}") from None


def _has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / LATEST).exists() or any((run_dir / CHECKPOINTS).glob("epoch-*"))


def load_run_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise DataError(f"{run_dir}: not a training run (no {CONFIG_FILE}); pass the folder `hamnet train` wrote")
    raw = read_json(path, "run config", fix="start a new run")
    # Runs written before these settings existed sampled and normalised this way: resume
    # them so, not with today's (released) defaults.
    for section, key, before in (("data", "short_videos", "mask"), ("data", "bins", "disjoint"),
                                 ("loss", "label_eps", 0.0)):
        part = raw.get(section) if isinstance(raw, dict) else None
        if isinstance(part, dict):
            part.setdefault(key, before)
    return TrainConfig.from_dict(raw, where=str(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class _Step:
    """What one training step needs (built once per run)."""

    net: torch.nn.Module
    model: torch.nn.Module
    criterion: HamNetLoss
    optimizer: torch.optim.Optimizer
    device: torch.device
    dtype: torch.dtype | None
    scaler: Any
    grad_clip: float | None


def train_epoch(step: _Step, loader: Any, epoch: int, world: int, emit: Any, total: int | None = None,
                sync: bool = True) -> tuple[dict[str, float], int, int]:
    """The train step: one pass over `loader` (batches of features, labels and lengths,
    None when every video fills the batch); (mean of each loss term, videos, snippets).
    Emits `train.step` progress after every batch. `sync=False` (batches on the device)
    reads nothing back per step: the loss terms add up on the device, the progress
    carries no loss values, and a non-finite loss is reported at the end of the epoch."""
    step.net.train()
    sums: dict[str, Any] = {}
    seen, snippets, t0 = 0, 0, time.perf_counter()
    total = len(loader) if total is None else total
    for done, (feats, labels, lengths) in enumerate(loader, 1):
        feats, labels = feats.to(step.device), labels.to(step.device)
        full = lengths is None or bool((lengths == feats.shape[1]).all()) if sync else lengths is None
        mask = None
        if not full:
            lengths = lengths.to(step.device)
            mask = torch.arange(feats.shape[1], device=step.device)[None, :] < lengths[:, None]
        autocast = torch.autocast(step.device.type, dtype=step.dtype) if step.dtype else contextlib.nullcontext()
        with autocast:
            cas, att = step.net(feats, mask)
        loss, terms = step.criterion(cas.float(), att.float(), labels, mask=mask)
        if sync and not torch.isfinite(loss):
            _not_finite(epoch, loss.item())
        step.optimizer.zero_grad(set_to_none=True)
        if step.scaler is not None:
            step.scaler.scale(loss).backward()
            step.scaler.unscale_(step.optimizer)
        else:
            loss.backward()
        if step.grad_clip:
            torch.nn.utils.clip_grad_norm_(step.model.parameters(), step.grad_clip)
        if step.scaler is not None:
            step.scaler.step(step.optimizer)
            step.scaler.update()
        else:
            step.optimizer.step()
        n = len(feats)
        seen += n
        snippets += n * feats.shape[1] if full else int(lengths.sum())
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + (float(v) * n if sync else v * n)
        rate = snippets * world / max(time.perf_counter() - t0, 1e-9)
        emit("train.step", "progress", epoch=epoch, step=done, steps=total, snippets_per_s=rate,
             losses={k: v / seen for k, v in sums.items()} if sync else {})
    if not sync and sums:
        values = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in sums.values()]).tolist()
        sums = dict(zip(sums, values, strict=True))
        if not all(v == v and abs(v) != float("inf") for v in values):
            _not_finite(epoch, sums.get("total", float("nan")) / max(seen, 1))
    return {k: v / max(seen, 1) for k, v in sums.items()}, seen, snippets


def _not_finite(epoch: int, value: float) -> None:
    raise DataError(f"epoch {epoch}: the loss became {value}; lower optim.lr or check the features for "
                    "extreme values")


def train(cfg: TrainConfig, data: WtalDataset, run_dir: str | Path, resume: bool = False,
          report: Reporter | None = None) -> TrainOutcome:
    """Train `cfg` on `data` (train split: cfg.data.train_subset; evaluation on
    cfg.data.test_subset) writing checkpoints and metrics to `run_dir`. Events
    (`runtime.events`): `train.note`, `train.epoch.start`, `train.step` (progress),
    `train.epoch` (the metrics record), `train.eval` (the EvalSummary). One training
    process per run folder (`runtime.locks.hold`; under torchrun, rank 0 holds it)."""
    main = int(os.environ.get("RANK", "0")) == 0
    with hold(run_dir, "hamnet train", "choose another --out") if main else contextlib.nullcontext():
        return _train(cfg, data, run_dir, resume, report)


def _train(cfg: TrainConfig, data: WtalDataset, run_dir: str | Path, resume: bool,
           report: Reporter | None) -> TrainOutcome:
    started = time.perf_counter()
    cfg = fit_config_to_data(cfg, data).resolved()
    run_dir = Path(run_dir)
    device = select_device(cfg.device)
    info = ddp.init_from_env(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    main = info.is_main
    emit = emitter(report if main else None)
    if cfg.data.batch_size % info.world_size:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is not divisible by the {info.world_size} "
                          "processes; choose a batch size that is a multiple of the process count")

    train_set = data.select(cfg.data.train_subset)
    try:
        test_set = data.select(cfg.data.test_subset)
    except DataError:
        test_set = None
        emit("train.note", "warning", f"no '{cfg.data.test_subset}' videos: training without evaluation")

    torch.manual_seed(cfg.seed)
    model = HamNet.from_config(cfg.model).to(device)
    optimizer = _make_optimizer(cfg, model)
    start_epoch = 1
    if resume and not _has_checkpoint(run_dir):
        # Stopped before its first checkpoint: nothing to continue from, start at epoch 1.
        resume = False
        emit("train.note", "warning", f"{run_dir} has no checkpoint yet: starting from epoch 1")
        if main:
            _trim_metrics(run_dir / METRICS_FILE, 0)
    elif not resume and main and (run_dir / LATEST).exists():
        raise ConfigError(f"{run_dir} already holds a training run; continue it with --resume {run_dir} "
                          "or choose another --out")
    if resume:
        start_epoch = _resume(run_dir, data, model, optimizer, main)
    elif main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create the run folder {run_dir}: {exc.strerror}; choose a writable "
                            "--out") from None
    if main:
        write_json_atomic(run_dir / CONFIG_FILE, cfg.to_dict())

    net: torch.nn.Module = model
    if info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    dtype = amp_dtype(device, cfg.amp)
    step = _Step(net, model, HamNetLoss(cfg.loss), optimizer, device, dtype,
                 torch.amp.GradScaler("cuda") if dtype == torch.float16 else None, cfg.optim.grad_clip)
    resident = None
    if cfg.data.loader == "device":
        resident = ResidentBatches(train_set.features, train_set.labels, cfg.data, cfg.seed, device, info.world_size,
                                   info.rank)
    else:
        samples, sampler, loader = make_loader(cfg, train_set, info.world_size, info.rank, device.type == "cuda")
    post = postprocess_config(cfg)
    state = {"classes": list(data.classes), "config": cfg.to_dict(), "postprocess": post.to_dict(),
             "feature_dim": cfg.model.feature_dim, "num_classes": cfg.model.num_classes}

    outcome = TrainOutcome(run_dir, start_epoch - 1)
    best = best_of(run_dir) if resume and main else None  # (epoch, average mAP)
    for epoch in range(start_epoch, cfg.epochs + 1):
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        if resident is None:
            sampler.set_epoch(epoch)
            samples.epoch = epoch
            batches, steps = loader, len(loader)
        else:
            batches, steps = resident.epoch(epoch), len(resident)
        emit("train.epoch.start", "stage", epoch=epoch, epochs=cfg.epochs, steps=steps)
        t0 = time.perf_counter()
        losses, _, snippets = train_epoch(step, batches, epoch, info.world_size, emit, steps, sync=resident is None)
        epoch_loss = ddp.all_reduce_mean(losses, info)
        elapsed = time.perf_counter() - t0
        outcome.last_loss, outcome.epochs = epoch_loss, epoch
        record: dict[str, Any] = {"epoch": epoch, "loss": epoch_loss, "seconds": round(elapsed, 3),
                                  "snippets_per_s": round(snippets * info.world_size / max(elapsed, 1e-9), 1)}
        if main:
            save_checkpoint(run_dir, epoch, model, optimizer, state)
            due = epoch == cfg.epochs or (cfg.eval_every and epoch % cfg.eval_every == 0)
            if due and test_set is not None:
                summary = evaluate_model(model, test_set, post, cfg.recipe)
                outcome.last_eval = summary
                record["eval"] = summary.to_dict()
                emit("train.eval", "result", f"epoch {epoch} test split", epoch=epoch, summary=summary)
                if summary.average == summary.average and (best is None or summary.average > best[1]):
                    best = (epoch, summary.average)
                    mark_best(run_dir, epoch, summary.average)
                    record["best"] = True
            if epoch == cfg.epochs:
                outcome.health = _health(run_dir, record, cfg, train_set, test_set)
                record["health"] = outcome.health.to_dict()
            _append_metrics(run_dir / METRICS_FILE, record)
            emit("train.epoch", "result", epoch=epoch, epochs=cfg.epochs, record=record)
            if outcome.health is not None and outcome.health.dead:
                emit("train.health", "warning", "the model learned nothing: " + "; ".join(outcome.health.signs),
                     health=outcome.health.to_dict())
        ddp.barrier(info)
    ddp.shutdown(info)
    outcome.seconds = time.perf_counter() - started
    outcome.best = best
    return outcome


def _health(run_dir: Path, last: dict[str, Any], cfg: TrainConfig, train_set: WtalDataset,
            test_set: WtalDataset | None) -> Health:
    """Diagnose the run from its whole log: the earlier epochs' lines and this last one."""
    records = []
    path = run_dir / METRICS_FILE
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict):
                records.append(record)
    return diagnose([*records, last], cfg.model.num_classes, train_set.labels,
                    None if test_set is None else test_set.labels, train_set.classes, cfg.optim.lr, cfg.epochs)


def _resume(run_dir: Path, data: WtalDataset, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            main: bool) -> int:
    """Load the run's last checkpoint into `model` and `optimizer`; the epoch to start at."""
    ckpt = load_checkpoint(run_dir, with_optimizer=True)
    if ckpt.classes != data.classes:
        raise DataError(f"{run_dir}: the run was trained on {len(ckpt.classes)} classes, this dataset has "
                        f"{data.num_classes} (or in another order); resume with the same dataset")
    saved_dim = ckpt.state.get("feature_dim")
    if saved_dim is not None and saved_dim != data.feature_dim:
        raise DataError(f"{run_dir}: the run was trained on {saved_dim}-D features, this dataset has "
                        f"{data.feature_dim}-D; resume with the same dataset")
    try:
        model.load_state_dict(ckpt.model_state)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:240]  # names the first mismatching tensor
        raise BundleError(f"{ckpt.path}: weights do not fit the run's model ({first}); resume from another "
                          "checkpoint or start a new run") from None
    if ckpt.optimizer_state is not None:
        try:
            optimizer.load_state_dict(ckpt.optimizer_state)
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError, AttributeError) as exc:
            raise BundleError(f"{ckpt.path / 'optimizer.pt'}: optimizer state does not fit the model "
                              f"({type(exc).__name__}); resume from another checkpoint") from None
    if main:
        _trim_metrics(run_dir / METRICS_FILE, ckpt.epoch)
    return ckpt.epoch + 1
