"""`hamnet doctor`: what is installed and which inference backends will work here."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from hamnet_deploy.console import console, handle_errors


@handle_errors
def doctor_command(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    no_torch: bool = typer.Option(False, "--no-torch", help="Do not import PyTorch to ask it about CUDA."),
) -> None:
    """Show installed packages, ONNX Runtime providers, TensorRT, CUDA devices and usable backends."""
    from dataclasses import asdict

    from hamnet_deploy.runtime.environment import probe

    env = probe(check_torch=not no_torch)
    if as_json:
        typer.echo(json.dumps(asdict(env), indent=1))
        return
    console.print(f"[bold]Python[/] {env.python} on {env.platform}")
    pk = Table(title="packages", title_justify="left")
    pk.add_column("package")
    pk.add_column("version")
    for name, version in env.packages.items():
        pk.add_row(name, version or "[dim]not installed[/]")
    console.print(pk)
    console.print("[bold]ONNX Runtime providers:[/] " + (", ".join(env.ort_providers) or "none"))
    if env.cuda:
        for d in env.cuda:
            console.print(f"[bold]CUDA device {d['index']}:[/] {d['name']} (sm {d['compute_capability']}, "
                          f"{d['memory_bytes'] / 2**30:.1f} GiB)")
    else:
        console.print("[bold]CUDA devices:[/] none visible")
    bt = Table(title="backends", title_justify="left")
    bt.add_column("backend")
    bt.add_column("works")
    bt.add_column("why")
    for b in env.backends:
        bt.add_row(b.name, "[green]yes[/]" if b.works else "[red]no[/]", escape(b.why))
    console.print(bt)
    for w in env.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    best = next((b.name for b in env.backends if b.works and b.name != "torch"), None)
    console.print(f"[bold]hamnet detect --backend auto[/] will use: {best or 'nothing (install onnxruntime)'}")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)
