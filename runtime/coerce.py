"""Settings values and their problems (the half of `runtime.settings` that knows types):
`coerce` checks a value from Python or JSON against a field's type (numbers for numbers,
true/false for booleans, lists, nested settings), `parse_text` reads the text of a
command-line override by the field's type; every problem is an `Invalid` naming the key,
worded once (`Invalid.message`)."""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import is_dataclass
from typing import Any, Literal

import numpy as np

_NO_VALUE = object()
_SHOWN = 60
"""Longest value shown in a message (a 400-digit number is cut)."""
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_NONE = frozenset({"none", "null", "~", ""})

class Invalid(Exception):
    """A bad setting (key, the value given, what is wrong). Raised by field checks and
    `Settings.check`; turned into the class's typed error with one wording."""

    def __init__(self, key: str, value: Any = _NO_VALUE, problem: str = "is invalid",
                 fix: str | None = None) -> None:
        super().__init__(key, problem)
        self.key, self.value, self.problem, self.fix = key, value, problem, fix

    def within(self, prefix: str) -> Invalid:
        """The same problem, its key seen from an enclosing setting (`prefix.key`)."""
        key = f"{prefix}.{self.key}" if prefix and self.key else prefix or self.key
        return Invalid(key, self.value, self.problem, self.fix)

    def message(self, where: str = "", fix: str = "", options: bool = False) -> str:
        """`where key=value: problem; fix`; with `options`, keys are command-line
        options: `--min-t 0: problem`."""
        head = f"{where} " if where else ""
        key = "--" + self.key.replace("_", "-") if options and self.key else self.key
        if self.value is _NO_VALUE:
            text = f"{head}{key}: {self.problem}" if key else f"{where}: {self.problem}"
        elif options:  # as typed on the command line: --calib data/x, --min-t 0
            shown = self.value if isinstance(self.value, str) and len(self.value) <= _SHOWN else show(self.value)
            text = f"{head}{key} {shown}: {self.problem}"
        else:
            text = f"{head}{key}={show(self.value)}: {self.problem}"
        fix = fix if self.fix is None else self.fix
        return f"{text}; {fix}" if fix else text


_INT_LIMIT = 2 ** 63 - 1  # what a C int64 holds: NumPy, PyTorch and ONNX take no more


def show(value: Any) -> str:
    """A value as messages show it: repr, cut to a readable length."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


Builder = Callable[[type, Any], Any]
"""How a nested settings class is built from a mapping (`runtime.settings` passes its own)."""


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def positive_finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number > 0 (numeric text too; not a bool),
    else None: durations, frame rates."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def coerce(value: Any, tp: Any, key: str, build: Builder, revalidate: Callable[[Any], None]) -> Any:
    """`value` (from Python or JSON) as type `tp`, or Invalid. Nested settings are built
    with `build(cls, mapping)`; an instance already built is checked again with
    `revalidate` (a mutable section may have changed)."""
    if isinstance(value, np.generic):
        value = value.item()
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise Invalid(key, value, "a value is required (null is not allowed)")
        problems = []
        for inner in (a for a in args if a is not type(None)):
            try:
                return coerce(value, inner, key, build, revalidate)
            except Invalid as exc:
                problems.append(exc.problem)
        raise Invalid(key, value, " or ".join(dict.fromkeys(problems)))
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise Invalid(key, value, f"choose one of {', '.join(map(str, args))}")
    if is_dataclass(tp):
        try:
            if isinstance(value, tp):
                revalidate(value)
                return value
            return build(tp, value)
        except Invalid as exc:
            raise exc.within(key) from None
    if origin in (tuple, list) or tp in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, np.ndarray)):
            raise Invalid(key, value, "expected a list")
        inner = args[0] if args else Any
        items = tuple(coerce(v, inner, f"{key}[{i}]", build, revalidate) for i, v in enumerate(value))
        return items if origin is tuple or tp is tuple else list(items)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise Invalid(key, value, "expected an object")
        if len(args) == 2 and is_dataclass(args[1]):
            return {str(k): coerce(v, args[1], f"{key}.{k}", build, revalidate) for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise Invalid(key, value, "expected true or false")
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > _INT_LIMIT:
                raise Invalid(key, value, "is too large for a whole number (at most 2**63 - 1)")
            return value
        raise Invalid(key, value, "expected a whole number")
    if tp is float:
        if is_number(value):
            try:
                out = float(value)
            except OverflowError:
                raise Invalid(key, value, "is too large for a number") from None
            if math.isfinite(out):
                return out
        raise Invalid(key, value, "expected a finite number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise Invalid(key, value, "expected a text")
    raise Invalid(key, value, f"has an unsupported type {tp!r}")  # pragma: no cover


def parse_text(text: str, tp: Any, key: str = "") -> Any:
    """Override text -> a value of type `tp` (then checked like any other value)."""
    raw = text.strip()
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in _NONE and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        problems = []
        for a in inner:
            try:
                return parse_text(raw, a, key)
            except Invalid as exc:
                problems.append(exc.problem)
        raise Invalid(key, raw, " or ".join(dict.fromkeys(problems)))
    if tp is bool:
        low = raw.lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise Invalid(key, raw, "expected true or false")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            pass
        number = _float(raw)
        if number is not None and number.is_integer():
            return int(number)
        raise Invalid(key, raw, "expected a whole number")
    if tp is float:
        number = _float(raw)
        if number is None:
            raise Invalid(key, raw, "expected a finite number")
        return number
    if origin in (tuple, list) or tp in (tuple, list):
        inner = args[0] if args else Any
        if raw.startswith("["):
            items = _json(raw, key)
            if not isinstance(items, list):
                raise Invalid(key, raw, "expected a list such as 0.1,0.5,0.9")
            return tuple(items)
        parts = [p for p in raw.split(",") if p.strip()]
        return tuple(parse_text(p, inner, key) if inner is not Any else p.strip() for p in parts)
    if origin is dict or tp is dict or is_dataclass(tp):
        return _json(raw, key)
    return raw


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _json(text: str, key: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise Invalid(key, text, "is not valid JSON") from None
