"""`hamnet train`: train HAM-Net on a dataset (or the embedded synthetic one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


@handle_errors
def train_command(
    data: Path = typer.Option(None, "--data", "-d", help="Dataset folder (per-video layout or W-TALC layout). "
                              "Default: the embedded synthetic dataset, generated once into the cache."),
    recipe: str = typer.Option("thumos14", "--recipe", "-r", help="Recipe name (thumos14, activitynet12) or JSON file."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder for checkpoints and logs [default: runs/<recipe>, or runs/<recipe>-2, "
                             "-3, ... if taken]."),
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
    from hamnet_deploy.training.api import train

    seen: dict[str, str] = {}

    def tee(event: Any) -> None:
        if event.name == "train.run":
            seen["run"] = event.data["run"]
        report(event)

    try:
        with report:
            outcome = train(data, out=out, recipe=recipe, sets=overrides, epochs=epochs, ablation=ablation,
                            device=device, seed=seed, eval_every=eval_every, resume=resume, synth_dim=synth_dim,
                            synth_videos=synth_videos, report=tee)
    except KeyboardInterrupt as exc:
        run = seen.get("run") or resume or out
        if run is None:
            raise
        err_console.print(f"[yellow]{stop_word(exc)}[/]; the last finished epoch is saved: hamnet train --resume "
                          f"{p(run)}")
        raise typer.Exit(stop_code(exc)) from None
    run_dir = outcome.run_dir
    health = outcome.health
    if as_json:
        json_line({"event": "train.done", "run": str(run_dir), "epochs": outcome.epochs,
                   "seconds": round(outcome.seconds, 3), "last_loss": outcome.last_loss,
                   "best": None if outcome.best is None else {"epoch": outcome.best[0],
                                                              "average_mAP": round(outcome.best[1], 6)},
                   "health": None if health is None else health.to_dict()})
    best = "" if outcome.best is None else (f"; best: epoch {outcome.best[0]} "
                                             f"(average mAP {100 * outcome.best[1]:.1f} %)")
    if health is not None and health.dead:
        console.print(f"[yellow]done, but the model learned nothing[/] (causes above): {outcome.epochs} epochs in "
                      f"{outcome.seconds:.1f} s, checkpoints in {p(run_dir)}")
    else:
        console.print(f"[green]done[/] in {outcome.seconds:.1f} s: {outcome.epochs} epochs, checkpoints in "
                      f"{p(run_dir)}{best}")
    console.print(f"next: hamnet export {p(run_dir)}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
