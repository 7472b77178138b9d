"""`hamnet bench`: latency and throughput of every backend this machine can run, per T,
with the model's FLOPs and the achieved rate."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hamnet_deploy.console import backend_names, console, handle_errors
from hamnet_deploy.display import p
from hamnet_deploy.reporting import json_line
from hamnet_deploy.runtime.errors import ConfigError, HamnetError


def _parse_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--{what} {text!r}: give whole numbers separated by commas, e.g. 64,339,2615") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--{what} {text!r}: every value must be >= 1")
    return values


@handle_errors
def bench_command(
    model: Path = typer.Option(None, "--model", "-m", help="Bundle folder (default: $HAMNET_MODEL, else ./bundle)."),
    t_values: str = typer.Option("64,339,2615", "--t", help="Video lengths in snippets, comma-separated."),
    batch: int = typer.Option(1, "--batch-size", "--batch", help="Videos per call (--batch: its old name)."),
    repeats: int = typer.Option(20, "--repeats", help="Timed runs per case (median reported)."),
    backends: str = typer.Option("all", "--backends", help="all (every backend of the table that runs the "
                                 "model here) or a comma-separated list of: " + ", ".join(backend_names())),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or N (a GPU index)."),
    threads: int = typer.Option(None, "--threads", help="CPU threads (default: all usable cores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the table."),
    as_json: bool = typer.Option(False, "--json", help="One JSON line per timed case on stdout, nothing else."),
) -> None:
    """Time each available backend at several T: latency, snippets/s, GFLOP/s."""
    from hamnet_deploy.runtime.backends import registry
    from hamnet_deploy.runtime.backends.select import is_checkpoint, resolve_model, select_runner
    from hamnet_deploy.runtime.benchmark import flops_per_snippet, time_runner
    from hamnet_deploy.runtime.bundle import load_bundle
    from hamnet_deploy.runtime.devices import parse_device

    parse_device(device)  # a bad --device is one error, not one skip per backend
    if as_json:
        console.quiet = True
    ts = _parse_ints(t_values, "t")
    if batch < 1 or repeats < 1:
        raise ConfigError("--batch-size and --repeats must be >= 1")
    path = resolve_model(model)
    kinds = {"checkpoint"} if is_checkpoint(path) else {"engine", "onnx", "onnx_int8"}
    runs_it = [b.name for b in registry.backends() if b.model in kinds]
    wanted = runs_it if backends == "all" else [b.strip() for b in backends.split(",") if b.strip()]
    unknown = [b for b in wanted if b not in registry.names()]
    if unknown:
        raise ConfigError(f"--backends: unknown {', '.join(unknown)}; choose from {', '.join(registry.names())}")
    if is_checkpoint(path):
        dim, classes, attention = _checkpoint_shape(path)
    else:
        bundle = load_bundle(path)
        dim, classes = bundle.feature_dim, bundle.num_classes
        attention = int(bundle.manifest.config.get("model", {}).get("attention_dim", 512))
    flops = flops_per_snippet(dim, classes, attention)
    if not quiet:
        console.print(f"[bold]model[/] {p(path)}: D = {dim}, {classes} classes, "
                  f"{flops / 1e6:.1f} MFLOP per snippet; batch {batch}, median of {repeats}", highlight=False)
    table = Table(title="inference speed", title_justify="left")
    for col in ("backend", "T", "median ms", "p90 ms", "snippets/s", "GFLOP/s"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    skipped: list[str] = []
    for name in wanted:
        try:
            selection = select_runner(path, name, device, threads=threads, verify=False)
        except HamnetError as exc:
            skipped.append(f"{name}: {exc}")
            continue
        with selection.runner as runner:
            label = selection.describe()
            max_t = getattr(runner, "max_t", None)
            for t in ts:
                if max_t and t > max_t:
                    skipped.append(f"{name} at T = {t}: above the engine profile's max T {max_t}")
                    continue
                timing = time_runner(runner, name, batch, t, dim, repeats)
                if as_json:
                    json_line({"event": "bench.case", "backend": name, "runner": label, "t": t, "batch_size": batch,
                               "median_ms": timing.median_ms, "p90_ms": timing.p90_ms,
                               "snippets_per_s": timing.snippets_per_s, "gflops": timing.gflops(flops)})
                table.add_row(p(label), str(t), f"{timing.median_ms:.2f}", f"{timing.p90_ms:.2f}",
                              f"{timing.snippets_per_s:,.0f}", f"{timing.gflops(flops):.1f}")
            table.add_section()
    if not table.row_count:
        raise ConfigError(f"no backend could run {path} with --device {device}: " + "; ".join(skipped))
    console.print(table)
    for line in skipped if not quiet else ():
        console.print(f"[dim]skipped {p(line)}[/]", highlight=False)


def _checkpoint_shape(run: Path) -> tuple[int, int, int]:
    """(D, C, attention width) of a checkpoint, from its recorded config."""
    from hamnet_deploy.training.checkpoint import load_checkpoint
    from hamnet_deploy.training.config import TrainConfig

    m = TrainConfig.from_dict(load_checkpoint(run).config).model
    return m.feature_dim, m.num_classes, m.attention_dim


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)
