"""`hamnet train`: train HAM-Net on a dataset (or the embedded synthetic one)."""

from __future__ import annotations

from pathlib import Path

import typer

from hamnet_deploy.console import (
    console,
    err_console,
    handle_errors,
    import_torch,
    stop_code,
    stop_word,
)
from hamnet_deploy.display import p
from hamnet_deploy.reporting import json_line, make_reporter
from hamnet_deploy.runtime.errors import ConfigError


@handle_errors
def train_command(
    data: Path = typer.Option(None, "--data", "-d", help="Dataset folder (per-video layout or W-TALC layout). "
                              "Default: the embedded synthetic dataset, generated once into the cache."),
    recipe: str = typer.Option("thumos14", "--recipe", "-r", help="Recipe name (thumos14, activitynet12) or JSON file."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder for checkpoints and logs [default: runs/<recipe>]."),
    epochs: int = typer.Option(None, "--epochs", help="Override the recipe's epoch count."),
    ablation: str = typer.Option(None, "--ablation", help="Paper Table 1 row: exp1 ... exp11 (exp11 = full HAM-Net)."),
    device: str = typer.Option(None, "--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps."),
    seed: int = typer.Option(None, "--seed", help="Random seed."),
    eval_every: int = typer.Option(None, "--eval-every", help="Evaluate on the test split every N epochs (0: at the end)."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Any setting, e.g. --set loss.alpha=0.5 --set optim.lr=1e-4."),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this folder from its last checkpoint."),
    synth_dim: int = typer.Option(2048, "--synth-dim", help="Feature dimension of the embedded synthetic dataset."),
    synth_videos: int = typer.Option(412, "--synth-videos", help="Videos in the embedded synthetic dataset."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars, per-epoch lines or tables."),
    as_json: bool = typer.Option(False, "--json", help="Log one JSON line per event on stdout (epochs, evaluations, "
                                 "the result), nothing else."),
) -> None:
    """Train HAM-Net from video-level labels; checkpoints and metrics go to the run folder."""
    report = make_reporter(console, quiet, as_json)
    import_torch()
    from hamnet_deploy.training.data import load_dataset, refuse_recorded_pickle
    from hamnet_deploy.training.recipes import load_recipe
    from hamnet_deploy.training.trainer import load_run_config, train

    named = data is not None  # only a dataset named on this command line may run pickle (W-TALC layout)
    if resume is not None:
        cfg = load_run_config(resume)
        run_dir = resume
        if data is None and cfg.data.path:
            data = Path(cfg.data.path)
    else:
        cfg = load_recipe(recipe)
        run_dir = out or Path(cfg.output_dir)
    if overrides:
        cfg = cfg.with_overrides(list(overrides))
    for key, value in (("epochs", epochs), ("ablation", ablation), ("device", device), ("seed", seed),
                       ("eval_every", eval_every)):
        if value is not None:  # errors name the option the user typed, not --set
            try:
                cfg = cfg.with_overrides([f"{key}={value}"])
            except ConfigError as exc:
                raise ConfigError(str(exc).replace(f"--set {key}=", f"--{key.replace('_', '-')} ", 1)) from None
    if data is None:
        from hamnet_deploy.training.embedded import embedded_dataset

        console.print(f"[bold]data:[/] embedded synthetic dataset ({synth_videos} videos, D = {synth_dim})")
        data = embedded_dataset(dim=synth_dim, videos=synth_videos, seed=0)
    cfg = cfg.with_overrides([f"data.path={Path(data).resolve()}", f"output_dir={run_dir}"])
    if not named and resume is not None:
        refuse_recorded_pickle(Path(data), resume)
    with console.status(f"loading {p(data)}"):
        dataset = load_dataset(data)
    console.print(f"[bold]data:[/] {p(dataset.source or data)}: {len(dataset)} videos, {dataset.num_classes} classes, "
                  f"D = {dataset.feature_dim}")
    console.print(f"[bold]run:[/] {p(run_dir)}  recipe {p(cfg.recipe)}, {cfg.epochs} epochs"
                  + (f", ablation {cfg.ablation}" if cfg.ablation else "") + (" (resuming)" if resume else ""))
    try:
        with report:
            outcome = train(cfg, dataset, run_dir, resume=resume is not None, report=report)
    except KeyboardInterrupt as exc:
        err_console.print(f"[yellow]{stop_word(exc)}[/]; the last finished epoch is saved: hamnet train --resume "
                          f"{p(run_dir)}")
        raise typer.Exit(stop_code(exc)) from None
    except RuntimeError as exc:  # PyTorch's allocators raise RuntimeError (torch.OutOfMemoryError on CUDA)
        if not _out_of_memory(exc):
            raise
        raise ConfigError(f"not enough memory for the model and batch these settings make (model.attention_dim="
                          f"{cfg.model.attention_dim}, model.feature_dim={cfg.model.feature_dim}, data.batch_size="
                          f"{cfg.data.batch_size}, data.num_snippets={cfg.data.num_snippets}); lower them with "
                          "--set") from None
    if as_json:
        json_line({"event": "train.done", "run": str(run_dir), "epochs": outcome.epochs,
                   "seconds": round(outcome.seconds, 3), "last_loss": outcome.last_loss})
    console.print(f"[green]done[/] in {outcome.seconds:.1f} s: {outcome.epochs} epochs, checkpoint in {p(run_dir)}")
    console.print(f"next: hamnet export {p(run_dir)}", highlight=False, soft_wrap=True)


def _out_of_memory(exc: RuntimeError) -> bool:
    text = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in text or "out of memory" in text


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
