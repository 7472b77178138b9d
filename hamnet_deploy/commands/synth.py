"""`hamnet synth OUT`: write the deterministic synthetic THUMOS-like dataset
(training.synth) in the per-video layout and, with --wtalc, the W-TALC layout too."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from hamnet_deploy.console import console, handle_errors
from hamnet_deploy.display import p
from hamnet_deploy.runtime.errors import ConfigError


def _size_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def register(app: typer.Typer) -> None:
    @app.command("synth")
    @handle_errors
    def synth(
        out: Annotated[Path, typer.Argument(help="Folder to write the dataset into (must be empty or new).")],
        videos: Annotated[int | None, typer.Option(
            "--videos", help="Number of videos (default 412; with --timelines: all of them, or a "
                             "deterministic subset keeping both splits).")] = None,
        dim: Annotated[int, typer.Option(
            "--dim", help="Feature dimension D (even: first half stands for RGB, second for flow).")] = 2048,
        classes: Annotated[int | None, typer.Option(
            "--classes", help="Number of classes (default 20; not with --timelines).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same dataset.")] = 0,
        timelines: Annotated[Path | None, typer.Option(
            "--timelines", help="Annotation JSON whose real videos, instances, classes and splits to use "
                                "(e.g. thumos14-reduced.json).")] = None,
        wtalc: Annotated[bool, typer.Option("--wtalc", help="Also write the W-TALC layout into OUT/wtalc.")] = False,
        force: Annotated[bool, typer.Option(
            "--force", help="Write into a non-empty OUT (files of an earlier `hamnet synth` there are "
                            "replaced).")] = False,
    ) -> None:
        """Write the deterministic synthetic THUMOS-like dataset (features + ground truth)."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        from hamnet_deploy.training.synth import SynthConfig, dataset_stats, generate_dataset

        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out}: exists and is not a folder; choose a folder for the dataset")
        if out.is_dir() and any(out.iterdir()) and not force:
            raise ConfigError(f"{out}: folder is not empty; choose an empty or new folder, or pass --force "
                              f"to write into it")
        if timelines is not None and classes is not None:
            raise ConfigError("--classes cannot be combined with --timelines: the classes come from the "
                              "timelines file")
        if timelines is not None and not timelines.is_file():
            raise ConfigError(f"--timelines {timelines}: file not found; name an annotation JSON such as "
                              f"thumos14-reduced.json")
        settings: dict = {"dim": dim, "seed": seed}
        if timelines is not None:
            settings.update(timelines=str(timelines), videos=videos or 0)  # 0: all videos of the file
        elif videos is not None:
            settings["videos"] = videos
        if classes is not None:
            settings["num_classes"] = classes
        cfg = SynthConfig(**settings)  # every value checked, one wording (runtime.settings)

        start = time.perf_counter()
        with Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TextColumn("videos"),
                      TimeRemainingColumn(), console=console, transient=True,
                      disable=not console.is_terminal) as bar:
            task = bar.add_task("videos", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            ann = generate_dataset(out, cfg, wtalc=wtalc, progress=progress)
        seconds = time.perf_counter() - start
        st = dataset_stats(ann, cfg.snippet_seconds)
        splits = ", ".join(f"{n} {s}" for s, n in st["per_split"].items())
        gb = _size_bytes(out) / 1e9
        console.print(
            f"wrote {st['videos']} videos ({splits}), {st['snippets']:,} snippets x {dim}, "
            f"{st['instances']:,} instances, foreground {100 * st['foreground_fraction']:.1f} %, "
            f"{gb:.2f} GB in {seconds:.1f} s -> {p(out)}" + (f" (W-TALC layout in {p(out / 'wtalc')})" if wtalc else ""),
            highlight=False, soft_wrap=True)
        console.print(f"next: hamnet train --data {p(out)}", highlight=False, soft_wrap=True)
