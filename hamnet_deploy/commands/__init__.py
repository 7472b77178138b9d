"""One module per command; each exposes `register(app)`. Command modules import heavy
dependencies (torch, onnx) inside the command body so `hamnet --help` stays fast and
`hamnet detect` works without PyTorch."""

from __future__ import annotations

import importlib

import typer

# Order here is the order in `hamnet --help`.
COMMANDS = ["demo", "synth", "train", "export", "detect", "eval", "bench", "doctor"]


def register_all(app: typer.Typer) -> None:
    for name in COMMANDS:
        importlib.import_module(f"hamnet_deploy.commands.{name}").register(app)
