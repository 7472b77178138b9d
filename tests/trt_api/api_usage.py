"""Every TensorRT name the project's TensorRT code uses, found by reading that code.

The modules in FILES are parsed; an attribute of `trt` (the module), of a variable named
in RECEIVERS (whose TensorRT class it holds), or of a `getattr` / `hasattr` / `_call`
on one of them with a constant name, is a use: `IBuilderConfig.set_flag` called with
one positional argument, `Runtime.DLA_core` set, `BuilderFlag.FP16` read, ... A new
receiver variable in those modules must be added to RECEIVERS or the test that lists
unknown receivers fails, so nothing the code touches escapes the conformance check.

REQUIRED_IN says in which TensorRT majors a name must exist (default: all checked);
where a name exists, its signature must accept the call the code makes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FILES = ("export/tensorrt_build.py", "export/trt_config.py", "export/trt_calibrator.py",
         "runtime/backends/tensorrt.py")

RECEIVERS = {
    "trt": "",
    "builder": "Builder",
    "config": "IBuilderConfig",
    "network": "INetworkDefinition",
    "parser": "OnnxParser",
    "trt_profile": "IOptimizationProfile",
    "calib_profile": "IOptimizationProfile",
    "inp": "ITensor",
    "out": "ITensor",
    "cache": "ITimingCache",
    "err": "ParserError",
    "runtime": "Runtime",
    "engine": "ICudaEngine",
    "self.engine": "ICudaEngine",
    "context": "IExecutionContext",
    "self.context": "IExecutionContext",
    "enum": "NetworkDefinitionCreationFlag",
    "base": "IInt8EntropyCalibrator2",
}
"""Variable name in FILES -> the TensorRT class of the object it holds ("" = the module)."""

NOT_TENSORRT = {
    "self", "np", "os", "log", "logging", "tempfile", "contextlib", "cuda", "cuda_memory", "trt_import",
    "io", "state", "st", "x", "host", "p", "opts", "options", "profile", "props", "torch", "onnx", "model",
    "onnx_path", "bundle_dir", "calib_cache", "timing_path", "calibrator", "path", "where", "items", "cc",
    "a", "array", "chunks", "stream", "sizes", "self._cache", "self._cuda", "self.engine_path", "self.entry",
    "self.profile", "self.outputs", "self.inputs", "self._dtypes", "self._index", "self._ptrs", "gpu",
    "entry", "source", "data", "feats", "names", "dims", "shape", "raw", "exc", "plan", "mins", "maxs",
    "found",
}
"""Variables in FILES that hold no TensorRT object (checked: every receiver is in one set)."""

EXTRA = (
    ("Builder.__init__", "call", 1, ()),  # trt_import.start(trt, trt.Builder, logger, ...)
    ("Runtime.__init__", "call", 1, ()),  # trt_import.start(trt, trt.Runtime, logger, ...)
    ("IInt8EntropyCalibrator2.get_batch_size", "override", 0, ()),  # called by TensorRT
    ("IInt8EntropyCalibrator2.get_batch", "override", 1, ()),
    ("IInt8EntropyCalibrator2.read_calibration_cache", "override", 0, ()),
    ("IInt8EntropyCalibrator2.write_calibration_cache", "override", 1, ()),
)
"""Uses the reader cannot see: constructors called through `trt_import.start`, and the
calibrator methods TensorRT calls on the project's subclass."""

ALL = frozenset({8, 10, 11})
_BUILDER_FLAG_PRECISION = frozenset({8, 10})  # 11.x removed builder-flag precision and calibrators
_BINDINGS_API = frozenset({8})  # 8.0-8.4's API; still in 8.6, removed in 10.x
REQUIRED_IN = {
    "BuilderFlag.FP16": _BUILDER_FLAG_PRECISION,
    "BuilderFlag.INT8": _BUILDER_FLAG_PRECISION,
    "IInt8EntropyCalibrator2": _BUILDER_FLAG_PRECISION,
    "IInt8EntropyCalibrator2.__init__": _BUILDER_FLAG_PRECISION,
    "IInt8EntropyCalibrator2.get_batch_size": _BUILDER_FLAG_PRECISION,
    "IInt8EntropyCalibrator2.get_batch": _BUILDER_FLAG_PRECISION,
    "IInt8EntropyCalibrator2.read_calibration_cache": _BUILDER_FLAG_PRECISION,
    "IInt8EntropyCalibrator2.write_calibration_cache": _BUILDER_FLAG_PRECISION,
    "IBuilderConfig.int8_calibrator": _BUILDER_FLAG_PRECISION,
    "IBuilderConfig.set_calibration_profile": _BUILDER_FLAG_PRECISION,
    "Builder.platform_has_fast_fp16": _BUILDER_FLAG_PRECISION,
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": _BUILDER_FLAG_PRECISION,  # gone in 11.x
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED": frozenset({10, 11}),  # new in 10.x
    "IBuilderConfig.max_workspace_size": _BINDINGS_API,  # before 8.4; set_memory_pool_limit after
    "ICudaEngine.num_bindings": _BINDINGS_API,
    "ICudaEngine.get_binding_name": _BINDINGS_API,
    "ICudaEngine.get_binding_index": _BINDINGS_API,
    "ICudaEngine.binding_is_input": _BINDINGS_API,
    "ICudaEngine.get_binding_dtype": _BINDINGS_API,
    "ICudaEngine.get_binding_shape": _BINDINGS_API,
    "ICudaEngine.get_profile_shape": _BINDINGS_API,
    "IExecutionContext.set_binding_shape": _BINDINGS_API,
    "IExecutionContext.get_binding_shape": _BINDINGS_API,
    "IExecutionContext.execute_async_v2": _BINDINGS_API,
    "ParserError.node_name": frozenset({10, 11}),  # 8.6's parser errors have node() only
    "ParserError.node_operator": frozenset({10, 11}),
}


@dataclass(frozen=True)
class Use:
    """One use of a TensorRT name: read ("attr"), set ("set"), called ("call": with
    `positional` arguments and `keywords`), or a method overridden ("override")."""

    name: str
    kind: str
    positional: int = 0
    keywords: tuple[str, ...] = ()
    where: str = ""
    guarded: bool = False
    starred: bool = False  # a `*args` in the call: at least `positional` arguments


def _receiver(node: ast.AST) -> str | None:
    """The variable an expression names (`x`, `self.x`), else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return f"self.{node.attr}"
    return None


class _Reader(ast.NodeVisitor):
    def __init__(self, file: str) -> None:
        self.file = file
        self.uses: list[Use] = []
        self.unknown: set[str] = set()

    def resolve(self, node: ast.AST) -> str | None:
        """The TensorRT path an expression holds ("" = the module, "BuilderFlag", ...)."""
        name = _receiver(node)
        if name is not None and name in RECEIVERS:
            return RECEIVERS[name]
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            if base is not None:
                return f"{base}.{node.attr}".lstrip(".")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            base = self.resolve(node.args[0]) if node.args else None
            if base is not None and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                return f"{base}.{node.args[1].value}".lstrip(".")
        return None

    def add(self, node: ast.AST, name: str, kind: str, **kw: object) -> None:
        self.uses.append(Use(name, kind, where=f"{self.file}:{node.lineno}", **kw))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        base = self.resolve(node.value)
        if base is not None:
            kind = "set" if isinstance(node.ctx, ast.Store) else "attr"
            self.add(node, f"{base}.{node.attr}".lstrip("."), kind)
        else:
            name = _receiver(node.value)
            if name is not None and name not in NOT_TENSORRT:
                self.unknown.add(f"{name} ({self.file}:{node.lineno})")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr", "_call") and len(node.args) > 1:
            base = self.resolve(node.args[0])
            const = node.args[1]
            if base is not None and isinstance(const, ast.Constant) and isinstance(const.value, str):
                name = f"{base}.{const.value}".lstrip(".")
                if func.id == "_call":
                    self.add(node, name, "call", guarded=True)
                else:
                    self.add(node, name, "attr", guarded=True)
        target = self.resolve(func)
        if target is not None:
            keywords = tuple(k.arg for k in node.keywords if k.arg)
            plain = [a for a in node.args if not isinstance(a, ast.Starred)]
            positional = len(plain) - (target.endswith(".__init__"))  # Base.__init__(self, ...)
            self.add(node, target, "call", positional=positional, keywords=keywords,
                     starred=len(plain) < len(node.args))
        self.generic_visit(node)


def project_uses() -> tuple[list[Use], set[str]]:
    """(every use in FILES plus EXTRA, receivers that are in neither RECEIVERS nor NOT_TENSORRT)."""
    uses: list[Use] = []
    unknown: set[str] = set()
    for file in FILES:
        reader = _Reader(file)
        reader.visit(ast.parse((ROOT / file).read_text(), file))
        uses += reader.uses
        unknown |= reader.unknown
    uses += [Use(name, kind, n, kw, "EXTRA") for name, kind, n, kw in EXTRA]
    return uses, unknown


def required_in(name: str) -> frozenset[int]:
    return REQUIRED_IN.get(name, ALL)


# --------------------------------------------------------------------------- #
#                        pybind11 signatures, from docstrings                  #
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Param:
    name: str
    default: bool
    star: str = ""  # "*" for *args, "**" for **kwargs


def _split_params(text: str) -> Iterator[str]:
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        elif ch == "," and depth == 0:
            yield text[start:i].strip()
            start = i + 1
    if text[start:].strip():
        yield text[start:].strip()


def signatures(doc: str, name: str) -> list[list[Param]]:
    """The overloads pybind11 wrote at the top of a docstring: `name(self: T, a: int = 0) -> R`
    (or `1. name(...)` lines after "Overloaded function."); `self` dropped."""
    out = []
    for line in doc.splitlines():
        text = line.strip()
        if text[:1].isdigit() and ". " in text[:5]:
            text = text.split(". ", 1)[1]
        if not text.startswith(name + "("):
            continue
        inner = text[len(name) + 1:]
        depth, end = 1, None
        for i, ch in enumerate(inner):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                end = i
                break
        if end is None:
            continue
        params = []
        for raw in _split_params(inner[:end]):
            star = "**" if raw.startswith("**") else "*" if raw.startswith("*") else ""
            pname = raw.lstrip("*").split(":", 1)[0].split("=", 1)[0].strip()
            params.append(Param(pname, "=" in raw, star))
        if params and params[0].name == "self":
            params = params[1:]
        if params == [Param("args", False, "*"), Param("kwargs", False, "**")]:
            continue  # the generic header above an overload list
        out.append(params)
    return out


def accepts(params: list[Param], positional: int, keywords: tuple[str, ...], starred: bool = False) -> bool:
    """Whether a call with `positional` arguments (at least, when `starred`) and `keywords`
    binds to `params`."""
    plain = [p for p in params if not p.star]
    if starred:
        return any(accepts(params, n, keywords) for n in range(positional, len(plain) + 1))
    if positional > len(plain) and not any(p.star == "*" for p in params):
        return False
    rest = plain[positional:]
    names = {p.name for p in rest}
    if any(k not in names for k in keywords) and not any(p.star == "**" for p in params):
        return False
    return all(p.default or p.name in keywords for p in rest)
