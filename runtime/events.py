"""How the layers below the command line tell what they do: plain callbacks with events,
never a console. The CLI turns events into rich progress bars and tables (or JSON
lines); the Python API and tests record them or ignore them.

    def report(event: Event) -> None: ...
    train(cfg, data, run_dir, report=report)

An event has a dotted `name` (`train.step`, `export.stage`, ...), a `kind` (`progress`:
a step of a long job; `stage`: a stage started or finished; `result`: something to show,
its object in `data`; `note` / `warning`: a line to show), a one-line `message` and
machine-readable `data`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("progress", "stage", "result", "note", "warning")


@dataclass(frozen=True)
class Event:
    name: str
    kind: str = "note"
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


Reporter = Callable[[Event], None]


def silent(event: Event) -> None:
    """The reporter that shows nothing."""


def emitter(report: Reporter | None) -> Callable[..., None]:
    """`emit(name, kind, message="", **data)` sending to `report` (nothing when None)."""
    sink = report or silent

    def emit(name: str, kind: str = "note", message: str = "", **data: Any) -> None:
        sink(Event(name, kind, message, data))

    return emit


class Recorder:
    """A reporter that keeps every event (for tests and the Python API)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e.name == name]
