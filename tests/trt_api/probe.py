"""Run inside a process whose `import tensorrt` is a real bindings module
(`real_bindings.environment`): describe the names asked for, as JSON on stdout.

    python probe.py '{"names": ["Builder.create_network", ...], "enums": ["BuilderFlag", ...]}'

For each dotted name: whether it exists and what it is (class: the docstring of its
__init__; function: its docstring, whose first lines are pybind's signatures; property:
whether it can be set; enum member: its value). For each enum: every member and value.
Also what `trt.Builder(logger)` and `trt.Runtime(logger)` raise with the stand-in library.
"""

from __future__ import annotations

import inspect
import json
import sys


def describe(trt, dotted: str) -> dict:
    obj = trt
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return {"exists": False}
        obj = getattr(obj, part)
    if isinstance(obj, type):
        return {"exists": True, "kind": "class", "doc": obj.__init__.__doc__ or ""}
    if isinstance(obj, property):
        return {"exists": True, "kind": "property", "writable": obj.fset is not None}
    members = getattr(type(obj), "__members__", None)
    if isinstance(members, dict) and obj in members.values():
        return {"exists": True, "kind": "enum", "value": int(obj)}
    if callable(obj):
        return {"exists": True, "kind": "function", "doc": obj.__doc__ or "", "params": python_params(obj)}
    return {"exists": True, "kind": "value", "value": repr(obj)}


def python_params(obj) -> list | None:
    """[name, has_default, star] of a Python function (pybind11 functions have none)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    star = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return [[p.name, p.default is not inspect.Parameter.empty, star.get(p.kind, "")]
            for p in sig.parameters.values()]


def enum_members(trt, dotted: str) -> dict | None:
    obj = trt
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    members = getattr(obj, "__members__", None)
    return {k: int(v) for k, v in members.items()} if isinstance(members, dict) else None


def start_error(trt, name: str) -> str:
    try:
        getattr(trt, name)(trt.Logger(trt.Logger.WARNING))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def main() -> None:
    import tensorrt as trt

    ask = json.loads(sys.argv[1])
    out = {"version": trt.__version__, "names": {n: describe(trt, n) for n in ask["names"]},
           "enums": {e: enum_members(trt, e) for e in ask["enums"]},
           "start": {n: start_error(trt, n) for n in ("Builder", "Runtime")}}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
