"""Training from Python with the command line's settings: `hamnet_deploy.train(...)`.

    import hamnet_deploy
    outcome = hamnet_deploy.train("data/thumos14", out="runs/t14", epochs=50, sets=["optim.lr=1e-4"])

`hamnet train` is this function plus its printing: the same recipe, overrides, data
rules (a W-TALC dataset only a run folder records is never unpickled) and errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hamnet_deploy.runtime.errors import ConfigError
from hamnet_deploy.runtime.events import Reporter, emitter


def train(data: str | os.PathLike | None = None, *, out: str | os.PathLike | None = None, recipe: str = "thumos14",
          sets: Iterable[str] = (), epochs: int | None = None, ablation: str | None = None, device: str | None = None,
          seed: int | None = None, eval_every: int | None = None, resume: str | os.PathLike | None = None,
          synth_dim: int = 2048, synth_videos: int = 412, report: Reporter | None = None) -> Any:
    """Train HAM-Net; returns the `TrainOutcome` (run folder, epochs, last losses, seconds).

    Args mean what the `hamnet train` options of the same name mean: `data` (default:
    the embedded synthetic dataset), `out` (default: the recipe's folder), `recipe`,
    `sets` (`--set key=value` items), `epochs`, `ablation`, `device`, `seed`,
    `eval_every`, `resume` (a run folder to continue), `synth_dim`/`synth_videos` (the
    embedded dataset). `report` receives the events (`runtime.events`)."""
    from hamnet_deploy.training.data import load_dataset, refuse_recorded_pickle
    from hamnet_deploy.training.recipes import load_recipe
    from hamnet_deploy.training.trainer import load_run_config
    from hamnet_deploy.training.trainer import train as run_training

    emit = emitter(report)
    named = data is not None  # only a dataset named by the caller may run pickle (W-TALC layout)
    if resume is not None:
        resume = Path(resume)
        cfg = load_run_config(resume)
        run_dir = resume
        if data is None and cfg.data.path:
            data = Path(cfg.data.path)
    else:
        cfg = load_recipe(recipe)
        run_dir = Path(out) if out is not None else None
    sets = list(sets)
    if sets:
        cfg = cfg.with_overrides(sets)
    for key, value in (("epochs", epochs), ("ablation", ablation), ("device", device), ("seed", seed),
                       ("eval_every", eval_every)):
        if value is not None:  # errors name the option, not --set
            try:
                cfg = cfg.with_overrides([f"{key}={value}"])
            except ConfigError as exc:
                raise ConfigError(str(exc).replace(f"--set {key}=", f"--{key.replace('_', '-')} ", 1)) from None
    numbered = ""
    if run_dir is None:  # the default folder: a new run never fails because an earlier one is there
        run_dir = next_free(Path(cfg.output_dir))
        if run_dir != Path(cfg.output_dir):
            numbered = f" ({cfg.output_dir} is taken)"
    if data is None:
        from hamnet_deploy.training.embedded import embedded_dataset

        emit("train.data", "note", f"data: embedded synthetic dataset ({synth_videos} videos, D = {synth_dim})")
        data = embedded_dataset(dim=synth_dim, videos=synth_videos, seed=0)
    cfg = cfg.with_overrides([f"data.path={Path(data).resolve()}", f"output_dir={run_dir}"])
    if not named and resume is not None:
        refuse_recorded_pickle(Path(data), resume)
    emit("train.load", "stage", f"loading {data}", state="start")
    dataset = load_dataset(data)
    emit("train.load", "stage", state="done")
    emit("train.data", "note", f"data: {dataset.source or data}: {len(dataset)} videos, {dataset.num_classes} "
                               f"classes, D = {dataset.feature_dim}")
    emit("train.run", "note", f"run: {run_dir}{numbered}  recipe {cfg.recipe}, {cfg.epochs} epochs"
                              + (f", ablation {cfg.ablation}" if cfg.ablation else "")
                              + (" (resuming)" if resume else ""), run=str(run_dir))
    try:
        return run_training(cfg, dataset, run_dir, resume=resume is not None, report=report)
    except RuntimeError as exc:  # PyTorch's allocators raise RuntimeError (torch.OutOfMemoryError on CUDA)
        if not _out_of_memory(exc):
            raise
        raise ConfigError(f"not enough memory for the model and batch these settings make (model.attention_dim="
                          f"{cfg.model.attention_dim}, model.feature_dim={cfg.model.feature_dim}, data.batch_size="
                          f"{cfg.data.batch_size}, data.num_snippets={cfg.data.num_snippets}); lower them with "
                          "--set") from None


def next_free(base: Path) -> Path:
    """`base` if nothing is there, else the first free `base-2`, `base-3`, ... (as
    Ultralytics numbers its runs)."""
    if not os.path.lexists(base):
        return base
    n = 2
    while os.path.lexists(base.with_name(f"{base.name}-{n}")):
        n += 1
    return base.with_name(f"{base.name}-{n}")


def _out_of_memory(exc: RuntimeError) -> bool:
    text = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in text or "out of memory" in text
