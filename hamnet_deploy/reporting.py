"""Events of the layers below (`runtime.events`) drawn on the terminal: progress bars for
long jobs, a spinner per stage, tables for results (`RichReporter`), or written as JSON
lines (`--json`: `JsonReporter`). `output_mode` picks one for a command and quiets the
console for `-q`/`--json`."""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hamnet_deploy import display
from hamnet_deploy.runtime.events import Event


class RichReporter:
    """Shows events on `console`; `progress=False` (no terminal, `-q`) keeps only the
    results and notes."""

    def __init__(self, console: Console, progress: bool = True, brief: bool = False) -> None:
        self.console = console
        self.progress = progress and console.is_terminal
        self.brief = brief  # -q: no per-epoch lines or result tables, only notes and warnings
        self._bar: Progress | None = None
        self._task: Any = None
        self._status: Any = None
        self._started: dict[str, float] = {}

    def __call__(self, event: Event) -> None:
        if self.brief and event.kind in ("progress", "result"):
            return
        handler = getattr(self, "_" + event.name.replace(".", "_"), None)
        if handler is not None:
            handler(event)
        elif event.kind == "stage":
            self._stage(event)
        elif event.kind in ("note", "warning", "result") and event.message:
            self._line(event)

    def close(self) -> None:
        """Stop a live bar or spinner (also on errors)."""
        if self._status is not None:
            self._status.stop()
            self._status = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> RichReporter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ generic
    @property
    def out(self) -> Console:
        return self._bar.console if self._bar is not None else self.console

    def _line(self, event: Event) -> None:
        style = {"warning": "[yellow]warning:[/] ", "note": ""}.get(event.kind, "")
        self.out.print(style + display.p(event.message), highlight=False, soft_wrap=True)

    def _stage(self, event: Event) -> None:
        state = event.data.get("state")
        if state == "start":
            self._started[event.name] = time.perf_counter()
            if self._status is None and self.console.is_terminal:
                self._status = self.console.status(display.p(event.message))
                self._status.start()
            elif self._status is not None:
                self._status.update(display.p(event.message))
        elif state == "done":
            if self._status is not None:
                self._status.stop()
                self._status = None
            if event.message:
                self.out.print(f"[green]ok[/] {display.p(event.message)}", highlight=False, soft_wrap=True)

    # ------------------------------------------------------------------ training
    def _train_epoch_start(self, event: Event) -> None:
        d = event.data
        if self._bar is None:
            self._bar = Progress(TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[losses]}"),
                                 TextColumn("[cyan]{task.fields[rate]} snip/s"), TimeElapsedColumn(),
                                 console=self.console, disable=not self.progress, transient=False)
            self._bar.start()
            self._task = self._bar.add_task("train", total=d["steps"], epoch=d["epoch"], epochs=d["epochs"],
                                            losses="", rate="-")
        else:
            self._bar.reset(self._task, total=d["steps"], epoch=d["epoch"], epochs=d["epochs"], losses="",
                            rate="-")

    def _train_step(self, event: Event) -> None:
        if self._bar is None:
            return
        d = event.data
        self._bar.update(self._task, completed=d["step"], rate=f"{d['snippets_per_s']:,.0f}",
                         losses=" ".join(f"{k} {v:.3f}" for k, v in d["losses"].items()))

    def _train_epoch(self, event: Event) -> None:
        if not self.progress:  # without a bar: one readable line per epoch
            d = event.data
            r = d["record"]
            losses = " ".join(f"{k} {v:.3f}" for k, v in r["loss"].items())
            self.console.print(f"epoch {d['epoch']}/{d['epochs']}: {losses}, {r['snippets_per_s']:,.0f} snippets/s, "
                               f"{r['seconds']:.1f} s", highlight=False, soft_wrap=True)

    def _train_eval(self, event: Event) -> None:
        self.out.print(f"[bold]epoch {event.data['epoch']}[/] test split:")
        display.print_summary(event.data["summary"], self.out)

    def _train_health(self, event: Event) -> None:
        health = event.data["health"]
        self.out.print("[yellow]warning:[/] the model learned nothing:")
        for sign in health["signs"]:
            self.out.print(f"  - {display.p(sign)}", highlight=False, soft_wrap=True)
        self.out.print("likely causes:")
        for cause in health["causes"]:
            self.out.print(f"  - {display.p(cause)}", highlight=False, soft_wrap=True)

    # ------------------------------------------------------------------ export
    def _export_parity(self, event: Event) -> None:
        report = event.data["report"]
        self.out.print(display.parity_table(report))
        if event.message:
            self.out.print(f"[green]{display.p(event.message)}[/]" if report.ok or not report.enforced
                           else display.p(event.message), highlight=False, soft_wrap=True)

    def _export_verify(self, event: Event) -> None:
        self.out.print(display.accuracy_table(event.data["scores"], event.message))

    def _export_bundle(self, event: Event) -> None:
        self.out.print(display.files_table(event.data["bundle"]))


def _plain(value: Any) -> Any:
    """A JSON-safe form of an event's data: `to_dict()`, dataclasses, paths, arrays."""
    import dataclasses
    from pathlib import PurePath

    import numpy as np

    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def json_line(record: dict[str, Any]) -> None:
    """One JSON object on its own line on stdout (the `--json` log)."""
    import json
    import sys

    plain = json.loads(json.dumps(record, default=_plain))  # NaN/Infinity become null below
    sys.stdout.write(json.dumps(_finite(plain), allow_nan=False) + "\n")
    sys.stdout.flush()


class JsonReporter:
    """`--json`: every event as one JSON line on stdout (`{"event", "kind", "message",
    ...data}`); progress events of training only once per epoch."""

    def __call__(self, event: Event) -> None:
        if event.name == "train.step":
            return
        json_line({"event": event.name, "kind": event.kind, "message": event.message, **dict(event.data)})

    def close(self) -> None:
        """Nothing to stop (the same life cycle as RichReporter)."""

    def __enter__(self) -> JsonReporter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_reporter(console: Console, quiet: bool = False, as_json: bool = False) -> Any:
    """The reporter of a long command, and its output mode: `-q` keeps the command's own
    lines (what runs, what was written, warnings) and drops progress bars, per-epoch
    lines and result tables; `--json` makes stdout JSON lines only (the console is
    quieted; `handle_errors` restores it when the command ends)."""
    if as_json:
        console.quiet = True
        return JsonReporter()
    return RichReporter(console, progress=not quiet, brief=quiet)
