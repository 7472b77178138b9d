"""`hamnet doctor`: what is installed, which backends of the backend table work here, and
what `--backend auto` will use for a model (the same plan `select_runner` follows)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from hamnet_deploy.console import console, handle_errors
from hamnet_deploy.display import p


def auto_choice(model: Path | None, env: object) -> tuple[str, str]:
    """(backend, why) that `--backend auto` starts for `model` here; without a model, what
    it would start for a bundle without engines, and when TensorRT would win instead."""
    from hamnet_deploy.runtime.backends import registry
    from hamnet_deploy.runtime.backends.select import is_checkpoint, plan
    from hamnet_deploy.runtime.bundle import load_bundle

    if model is not None and is_checkpoint(model):
        takers = [b for b in registry.for_model("checkpoint") if b.why_not(env) is None]
        return (takers[0].name, "the model is a training checkpoint") if takers else ("nothing", "no backend "
                                                                                     "here runs checkpoints")
    if model is not None:
        for route in plan(load_bundle(model), "auto", env):
            if route.why_not is None:
                return route.backend.name, f"{route.label} for {model}"
        return "nothing", f"no backend can run {model} here"
    usable = [(b, d) for b, d in registry.auto_routes() if b.why_not(env, d) is None]
    plain = next(((b, d) for b, d in usable if b.model != "engine" and b.auto_if is None), None)
    if plain is None:
        return "nothing", "install onnxruntime"
    first = usable[0]
    if first[0].model == "engine":
        return plain[0].name, (f"{plain[0].name} ({plain[1]}); {first[0].name} instead when the bundle has an "
                               "engine built on this GPU and TensorRT (pass --model to check one)")
    return plain[0].name, f"{plain[0].name} ({plain[1]})"


def driver_line(report: object) -> str:
    """The CUDA driver as doctor prints it."""
    driver = report.cuda_driver
    if driver is None:
        return "none (no NVIDIA driver found: GPU backends cannot run here)"
    return f"supports CUDA up to {driver} (CUDA {driver.split('.')[0]}.x runtimes run on it)"


def tensorrt_line(report: object) -> str:
    """The installed TensorRT and whether its CUDA runtime runs on the driver."""
    built = f"built for CUDA {report.tensorrt_cuda}" if report.tensorrt_cuda else "its CUDA version is not recorded"
    verdict = {True: "runs on this driver", False: "cannot run on this driver (see the warning below)",
               None: "unknown whether it runs on this driver" if report.cuda_driver else "no driver to run on"}
    return f"{report.tensorrt}, {built}: {verdict[report.tensorrt_runs]}"


@handle_errors
def doctor_command(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    no_torch: bool = typer.Option(False, "--no-torch", help="Do not import PyTorch to ask it about CUDA."),
    model: Path = typer.Option(None, "--model", "-m", help="A bundle (or run folder): say which backend "
                               "--backend auto starts for it (default: $HAMNET_MODEL, else ./bundle if there)."),
) -> None:
    """Show installed packages, ONNX Runtime providers, TensorRT, CUDA devices and usable backends."""
    from hamnet_deploy.runtime.backends.select import default_model_path, resolve_model
    from hamnet_deploy.runtime.environment import Environment, probe

    if model is not None:
        model = resolve_model(model)
    elif default_model_path().exists():
        model = default_model_path()
    env = Environment.current()
    report = probe(env, details=not no_torch)
    report.auto, report.auto_reason = auto_choice(model, env)
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=1))
        return
    console.print(f"[bold]Python[/] {report.python} on {report.platform}")
    pk = Table(title="packages", title_justify="left")
    pk.add_column("package")
    pk.add_column("version")
    for name, version in report.packages.items():
        pk.add_row(name, version or "[dim]not installed[/]")
    console.print(pk)
    console.print("[bold]ONNX Runtime providers:[/] " + (", ".join(report.ort_providers) or "none"))
    if report.cuda:
        for d in report.cuda:
            console.print(f"[bold]CUDA device {d['index']}:[/] {p(d['name'])} (sm {d['compute_capability']}, "
                          f"{d.get('memory_bytes', 0) / 2**30:.1f} GiB)")
    else:
        console.print("[bold]CUDA devices:[/] none visible")
    console.print(f"[bold]CUDA driver:[/] {driver_line(report)}", highlight=False, soft_wrap=True)
    if report.tensorrt:
        console.print(f"[bold]TensorRT:[/] {tensorrt_line(report)}", highlight=False, soft_wrap=True)
    bt = Table(title="backends (--backend)", title_justify="left")
    for col in ("backend", "devices", "works", "why"):
        bt.add_column(col)
    for b in report.backends:
        bt.add_row(b.name, ", ".join(b.devices), "[green]yes[/]" if b.works else "[red]no[/]", p(b.why))
    console.print(bt)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {p(w)}")
    console.print(f"[bold]hamnet detect --backend auto[/] will use: {report.auto} ({p(report.auto_reason)})",
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)
