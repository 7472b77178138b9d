"""The one settings mechanism of every layer: dataclasses whose fields declare their
types and limits, checked by one validator with one wording of errors, plus one
`key=value` override syntax (`hamnet train --set`, `hamnet detect --set`).

    @dataclass(frozen=True)
    class Example(Settings):
        where = "example setting"               # how messages name these settings
        sigma: float = option(0.3, gt=0)
        mode: Literal["soft", "hard"] = "soft"
        steps: tuple[float, ...] = option((0.1, 0.5), nonempty=True)

        def check(self) -> None:                # rules between fields
            if self.mode == "hard" and self.sigma > 1:
                raise Invalid("sigma", self.sigma, "must be <= 1 with mode hard")

`Example(sigma=-1)` raises ConfigError("example setting sigma=-1.0: must be > 0");
`Example.from_dict(json_object, where="file.json")`, `.to_dict()` and
`.with_overrides(["sigma=0.5", "steps=0.1,0.9"])` go through the same checks.
A class can name another error type (`error = BundleError`) and a fix that ends every
message (`fix = "re-export the bundle"`).

Values from Python or JSON must have the right type (numbers for numbers, true/false
for booleans); override text is parsed by the field's type: numbers, `true/false`
(`yes/no`, `on/off`, `1/0`), `null`/`none` for optional fields, lists as `a,b,c` or
JSON. NumPy and the standard library only (the runtime layer).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from hamnet_deploy.runtime.coerce import _NO_VALUE, Invalid, coerce, is_number, parse_text, show
from hamnet_deploy.runtime.errors import ConfigError, HamnetError

__all__ = ["Invalid", "Settings", "keys", "option", "show", "split_item", "suggest"]

S = TypeVar("S", bound="Settings")



def option(default: Any = MISSING, *, factory: Callable[[], Any] | Any = MISSING, ge: float | None = None,
           gt: float | None = None, le: float | None = None, lt: float | None = None, odd: bool = False,
           nonempty: bool = False, convert: Callable[[Any], Any] | None = None, extra: bool = False) -> Any:
    """A dataclass field with limits: `ge`/`gt`/`le`/`lt` bound numbers (and every
    number of a list), `odd` wants an odd whole number, `nonempty` a non-empty text
    or list, `convert(value)` a last check or normalisation (raise ValueError with the
    problem), `extra` marks the dict that keeps unknown keys of `from_dict`."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt), ("convert", convert))
            if v is not None}
    meta.update({k: True for k, v in (("odd", odd), ("nonempty", nonempty), ("extra", extra)) if v})
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Settings:
    """Mixin of every settings dataclass: validated on construction, `from_dict`,
    `to_dict`, `with_overrides`, `replace`. Subclasses set `where`, `error`, `fix` and
    may add `check()` for rules between fields."""

    where: ClassVar[str] = "setting"
    error: ClassVar[type[HamnetError]] = ConfigError
    fix: ClassVar[str] = ""
    options: ClassVar[bool] = False
    """True for command-line options: messages name `--min-t 0` rather than `min_t=0`."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self: S) -> S:
        """Check (and normalise) every field and the rules between them; returns self."""
        try:
            _validate(self)
        except Invalid as exc:
            raise type(self)._fail(exc) from None
        return self

    @classmethod
    def _fail(cls, exc: Invalid, where: str | None = None) -> HamnetError:
        return cls.error(exc.message(cls.where if where is None else where, cls.fix, cls.options))

    def check(self) -> None:
        """Rules between fields; raise `Invalid(key, value, problem)`."""

    @classmethod
    def from_dict(cls: type[S], data: Any, where: str | None = None) -> S:
        """Build from a (possibly partial) mapping: missing keys take their defaults,
        unknown keys and bad values raise the class's error naming `where`."""
        try:
            return _build(cls, data)
        except Invalid as exc:
            raise cls._fail(exc, _where(cls, where)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples as lists, nested settings as dicts)."""
        return _plain(self)

    def replace(self: S, **changes: Any) -> S:
        """A validated copy with `changes` (values as from Python)."""
        return type(self).from_dict({**self.to_dict(), **{k: _plain(v) for k, v in changes.items()}})

    def with_overrides(self: S, items: Iterable[str], where: str = "--set") -> S:
        """A validated copy with `key=value` items applied in order (`section.key` for
        nested settings); the text of each value is parsed by its field's type."""
        data = self.to_dict()
        for item in items:
            key, text = split_item(item, where)
            target, name, hint = _locate(type(self), data, key, where)
            try:
                target[name] = _plain(parse_text(text, hint, key))
            except Invalid as exc:
                raise type(self)._fail(exc, where) from None
        try:
            return _build(type(self), data)
        except Invalid as exc:
            raise type(self)._fail(exc, where) from None


def _where(cls: type, where: str | None) -> str:
    return f"{where}: {cls.where}" if where else cls.where  # type: ignore[attr-defined]


def split_item(item: str, where: str = "--set") -> tuple[str, str]:
    """`"key = value"` -> ("key", "value"); ConfigError unless it is key=value."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"{where} {item!r}: use key=value, e.g. {where} nms_sigma=0.5")
    key, text = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"{where} {item!r}: the key before '=' is empty; use key=value")
    return key.strip(), text.strip()


# --------------------------------------------------------------------------- #
#                              validation                                     #
# --------------------------------------------------------------------------- #
_HINTS: dict[type, dict[str, Any]] = {}


def hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a dataclass (cached)."""
    if cls not in _HINTS:
        resolved = typing.get_type_hints(cls)
        _HINTS[cls] = {f.name: resolved[f.name] for f in fields(cls)}
    return _HINTS[cls]


def _validate(obj: Any) -> None:
    cls = type(obj)
    types_ = hints(cls)
    for f in fields(cls):
        value = getattr(obj, f.name)
        if f.metadata.get("extra"):
            value = dict(value or {})
        else:
            value = coerce(value, types_[f.name], f.name, _build, _validate)
            value = _limits(value, f, f.name)
        object.__setattr__(obj, f.name, value)
    check = getattr(obj, "check", None)
    if callable(check):
        check()


def _build(cls: type[S], data: Any) -> S:
    """An instance of `cls` from a mapping, without __init__, every problem an Invalid
    whose key is the dotted path."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise Invalid("", _NO_VALUE, f"expected a JSON object of settings, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    extra_field = next((f.name for f in known.values() if f.metadata.get("extra")), None)
    unknown = [k for k in data if k not in known or k == extra_field]
    if unknown and extra_field is None:
        raise Invalid(str(unknown[0]), _NO_VALUE, f"unknown setting{suggest(str(unknown[0]), known)}; "
                                                  f"known: {', '.join(known)}")
    obj = object.__new__(cls)
    for name, f in known.items():
        if name == extra_field:
            value = {k: data[k] for k in unknown}
        elif name in data:
            value = data[name]
        elif f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            raise Invalid(name, _NO_VALUE, "missing (required)")
        object.__setattr__(obj, name, value)
    _validate(obj)
    return obj


def _limits(value: Any, f: dataclasses.Field, key: str) -> Any:
    meta = f.metadata
    numbers = [value] if is_number(value) else [v for v in value if is_number(v)] \
        if isinstance(value, (tuple, list)) else []
    for v in numbers:
        for name, ok, word in (("ge", lambda x, b: x >= b, ">="), ("gt", lambda x, b: x > b, ">"),
                               ("le", lambda x, b: x <= b, "<="), ("lt", lambda x, b: x < b, "<")):
            if name in meta and not ok(v, meta[name]):
                raise Invalid(key, value, f"must be {word} {meta[name]:g}")
    if meta.get("odd") and (not isinstance(value, int) or value % 2 == 0):
        raise Invalid(key, value, "must be an odd number")
    if meta.get("nonempty") and value is not None and len(value) == 0:
        raise Invalid(key, value, "must not be empty")
    if "convert" in meta and value is not None:
        try:
            value = meta["convert"](value)
        except Invalid as exc:
            raise Invalid(exc.key or key, exc.value, exc.problem, exc.fix) from None
        except (ValueError, TypeError) as exc:
            raise Invalid(key, value, str(exc)) from None
    return value


def _locate(cls: type, data: dict, key: str, where: str) -> tuple[dict, str, Any]:
    """The dict holding `key` (dotted) inside `data`, the last name, and its type."""
    parts = key.split(".")
    target, owner = data, cls
    for depth, name in enumerate(parts):
        known = hints(owner)
        if name not in known or (depth < len(parts) - 1) != is_dataclass(known[name]):
            raise ConfigError(f"{where} {key}: unknown setting{_unknown_hint(cls, parts[: depth + 1])}")
        if depth == len(parts) - 1:
            return target, name, known[name]
        target, owner = target.setdefault(name, {}), known[name]
    raise AssertionError("unreachable")  # pragma: no cover


def keys(cls: type, prefix: str = "") -> list[str]:
    """Every override key of a settings class (`section.key` for nested settings)."""
    out = []
    for name, tp in hints(cls).items():
        if is_dataclass(tp):
            out += keys(tp, f"{prefix}{name}.")
        elif not next(f for f in fields(cls) if f.name == name).metadata.get("extra"):
            out.append(prefix + name)
    return out


def _unknown_hint(cls: type, parts: list[str]) -> str:
    all_keys = keys(cls)
    close = suggest(".".join(parts), all_keys)
    if close:
        return close
    if len(parts) > 1:
        owner = cls
        for name in parts[:-1]:
            owner = hints(owner).get(name, None)
            if not is_dataclass(owner):
                break
        else:
            return f"; valid {'.'.join(parts[:-1])}.* keys: {', '.join(hints(owner))}"
    top = [k for k in all_keys if "." not in k]
    sections = [n for n, tp in hints(cls).items() if is_dataclass(tp)]
    return f"; valid keys: {', '.join(top)}" + (f", or section.key in {', '.join(sections)}" if sections else "")


def suggest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a choice is close to `word`, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in fields(value):
            item = getattr(value, f.name)
            if f.metadata.get("extra"):
                out.update(_plain(item))
            else:
                out[f.name] = _plain(item)
        return out
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value
