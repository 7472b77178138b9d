"""TensorRT engine compatibility: which engine of a bundle may run on this machine.

A serialized TensorRT engine is tied to the TensorRT version and the GPU
architecture (compute capability) that built it. Two build options relax that:

- **version-compatible** (TensorRT 8.6+, `BuilderFlag.VERSION_COMPATIBLE`): the engine
  also runs on any *later* TensorRT (>= 8.6), never on an older one.
- **hardware-compatible** (TensorRT 8.6+, `HardwareCompatibilityLevel.AMPERE_PLUS`):
  built on an Ampere or newer GPU (sm_80+), it runs on any sm_80+ GPU. NVIDIA does not
  support it on Jetson (JetPack) or DRIVE, so integrated GPUs never take part.

Both are slower than a plain engine, so a plain engine that matches is preferred.
The bundle manifest records, for each engine, the TensorRT version, GPU name,
compute capability, precision and shape profile; `check_engine_compatible` compares
them with the running machine *before* TensorRT deserializes anything, so a mismatch
is a one-line message instead of a TensorRT stack trace.

Engine entries may be `runtime.manifest.EngineEntry` objects or their dicts; their
profile rules live in `runtime.profile`. What the machine has (TensorRT version, CUDA
devices) comes from `runtime.devices`. NumPy/stdlib only: no torch, no tensorrt import
(this is `runtime/`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from hamnet_deploy.runtime.errors import BundleError, ConfigError
from hamnet_deploy.runtime.manifest import EngineEntry
from hamnet_deploy.runtime.profile import Profile

PRECISIONS = ("fp32", "fp16", "int8")

INTEGRATED_CC = frozenset({"5.3", "6.2", "7.2", "8.7", "10.1", "11.0"})
"""Compute capabilities of NVIDIA's integrated (Tegra) GPUs: Jetson Nano/TX1, TX2,
Xavier, Orin and Thor (10.1 in CUDA 12.x, 11.0 from CUDA 13). Hardware-compatible
engines are not supported on them."""

DLA_MAX_DIM = 8192
"""DLA limit on every non-batch dimension of a tensor."""

REBUILD_HINT = ("rebuild it on this machine with `hamnet export ... --trt` (the bundle's ONNX "
                "file is the source) or run with --backend onnxruntime")


# --------------------------------------------------------------------------- #
#                          versions and capabilities                          #
# --------------------------------------------------------------------------- #
def parse_version(text: Any) -> tuple[int, ...]:
    """"10.3.0.26" -> (10, 3, 0, 26); "8.6.1.post1" -> (8, 6, 1); "10.0.0b6" -> (10, 0, 0).

    Reads the leading numeric components and stops at the first one that is not
    purely numeric (keeping its leading digits). Raises ValueError when there is no
    leading number at all.
    """
    parts: list[int] = []
    for piece in str(text).strip().split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    if not parts:
        raise ValueError(f"{text!r} is not a version number such as 10.3.0.26")
    return tuple(parts)


def trt_major(version: Any) -> int:
    """Major version of a TensorRT version string ("10.3.0.26" -> 10)."""
    return parse_version(version)[0]


def short_version(version: Any, parts: int = 3) -> str:
    """The first `parts` components of a version ("10.3.0.26" -> "10.3.0")."""
    return ".".join(str(p) for p in parse_version(version)[:parts])


def parse_cc(value: Any) -> tuple[int, int]:
    """Compute capability as (major, minor) from "8.7", 8.7, "sm_87", "sm90", "120", 9 or (8, 7).

    Raises ValueError for anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a compute capability such as 8.7")
    if isinstance(value, int):
        return (value, 0)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    text = str(value).strip().lower()
    match = re.fullmatch(r"(\d+)\.(\d+)", text)
    if match:
        return (int(match.group(1)), int(match.group(2)))
    match = re.fullmatch(r"(?:sm_?|compute_)?(\d{2,3})", text)
    if match:
        digits = match.group(1)
        return (int(digits[:-1]), int(digits[-1]))
    match = re.fullmatch(r"\d+", text)
    if match:
        return (int(text), 0)
    raise ValueError(f"{value!r} is not a compute capability such as 8.7 or sm_87")


def format_cc(value: Any) -> str:
    """Canonical "major.minor" form of a compute capability ("sm_87" -> "8.7")."""
    major, minor = parse_cc(value)
    return f"{major}.{minor}"


def sm_name(value: Any) -> str:
    """"8.7" -> "sm_87"."""
    major, minor = parse_cc(value)
    return f"sm_{major}{minor}"


def is_integrated_gpu(cc: Any, gpu_name: str = "") -> bool:
    """True for Jetson/DRIVE (Tegra) GPUs, by compute capability or name."""
    try:
        if format_cc(cc) in INTEGRATED_CC:
            return True
    except ValueError:
        pass
    return bool(re.search(r"\b(orin|xavier|tegra|thor|jetson)\b", gpu_name or "", re.IGNORECASE))


def gpu_slug(gpu_name: str) -> str:
    """File-name-safe short form of a GPU name: "NVIDIA H100 80GB HBM3" -> "h100-80gb-hbm3"."""
    text = re.sub(r"\b(nvidia|geforce)\b", " ", (gpu_name or "").lower())
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return text[:32].strip("-") or "gpu"


def engine_file_name(gpu_name: str, cc: Any, trt_version: Any, precision: str,
                     dla_core: int | None = None) -> str:
    """Engine file name from what the engine is tied to, e.g.
    `hamnet_h100-80gb-hbm3_sm90_trt10.3.0_fp16.engine` (`..._dla0.engine` for DLA core 0).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    major, minor = parse_cc(cc)
    dla = "" if dla_core is None else f"_dla{int(dla_core)}"
    return (f"hamnet_{gpu_slug(gpu_name)}_sm{major}{minor}_trt{short_version(trt_version)}"
            f"_{precision}{dla}.engine")


# --------------------------------------------------------------------------- #
#                                  profiles                                   #
# --------------------------------------------------------------------------- #
def as_entry(entry: Any) -> EngineEntry:
    """An EngineEntry from an entry object or its manifest dict (BundleError when invalid)."""
    if isinstance(entry, EngineEntry):
        return entry
    if isinstance(entry, Mapping):
        return EngineEntry.from_dict(entry, where=f"engine {entry.get('file', '?')}")
    raise BundleError(f"engine entry {entry!r} is not a manifest object; re-export the bundle")


def profile_of(entry: Any) -> Profile:
    """The shape profile of an engine entry (DLA engines: batch fixed at max_batch)."""
    return as_entry(entry).profile


def profile_allows(entry: Any, batch: int, T: int) -> bool:
    """True when an input [batch, T, D] lies inside the engine's profile (`Profile.accepts`)."""
    return profile_of(entry).accepts(batch, T)


def check_profile(entry: Any, batch: int, T: int) -> None:
    """Raise ShapeOutsideProfile (telling the caller to chunk) unless `profile_allows`."""
    e = as_entry(entry)
    e.profile.require(batch, T, e.file)


# --------------------------------------------------------------------------- #
#                                compatibility                                #
# --------------------------------------------------------------------------- #
def _same_version(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    k = min(len(a), len(b))
    return a[:k] == b[:k]


def _version_at_least(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    n = max(len(a), len(b))
    return a + (0,) * (n - len(a)) >= b + (0,) * (n - len(b))


def _display_versions(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[str, str]:
    """Shortest prefixes (at least major.minor) that tell two versions apart."""
    n = 2
    if _same_version(a, b):
        return ".".join(map(str, a[:n])), ".".join(map(str, b[:n]))
    while n < max(len(a), len(b)) and a[:n] == b[:n]:
        n += 1
    return ".".join(map(str, a[:n])), ".".join(map(str, b[:n]))


def engine_compatibility(entry: Any, trt_version: str, gpu_name: str,
                         compute_capability: Any) -> tuple[bool, str]:
    """(ok, reason) for running `entry` on this machine; see `check_engine_compatible`."""
    entry = as_entry(entry)
    name = entry.file
    try:
        built_v = parse_version(entry.tensorrt_version)
        built_cc = parse_cc(entry.compute_capability)
    except ValueError as exc:
        raise BundleError(f"engine {name}: the manifest entry lacks a valid TensorRT version or compute "
                          f"capability ({exc}); re-export the bundle") from None
    here_v = parse_version(trt_version)
    here_cc = parse_cc(compute_capability)
    built_gpu = entry.gpu_name or "?"
    version_compatible = bool(entry.extra.get("version_compatible", False))
    hardware_compatible = bool(entry.extra.get("hardware_compatible", False))

    reasons = []
    if not _same_version(built_v, here_v):
        if not version_compatible:
            reasons.append("an engine runs only on the TensorRT version that built it unless it was "
                           "built version-compatible")
        elif built_v < (8, 6):
            reasons.append("version compatibility needs an engine built with TensorRT 8.6 or newer")
        elif not _version_at_least(here_v, built_v):
            reasons.append("a version-compatible engine runs on the same or a later TensorRT, not an "
                           "older one")
    if built_cc != here_cc:
        if entry.dla_core is not None:
            reasons.append("a DLA engine runs only on the SoC that built it")
        elif not hardware_compatible:
            reasons.append("an engine runs only on the GPU architecture that built it unless it was "
                           "built hardware-compatible")
        elif built_cc < (8, 0) or here_cc < (8, 0):
            reasons.append("hardware-compatible engines need Ampere or newer (sm_80+) on both sides")
        elif is_integrated_gpu(built_cc, built_gpu) or is_integrated_gpu(here_cc, gpu_name):
            reasons.append("hardware compatibility is not supported on Jetson/DRIVE GPUs")
    if not reasons:
        return True, ""
    shown_built, shown_here = _display_versions(built_v, here_v)
    message = (f"engine {name} was built for TensorRT {shown_built} on {sm_name(built_cc)} ({built_gpu}); "
               f"this machine has TensorRT {shown_here} on {sm_name(here_cc)} ({gpu_name or '?'}) and "
               f"{'; '.join(reasons)}: {REBUILD_HINT}")
    return False, message


def check_engine_compatible(entry: Any, trt_version: str, gpu_name: str,
                            compute_capability: Any) -> None:
    """Raise BundleError unless the engine of `entry` can run with this TensorRT and GPU.

    Same TensorRT version (compared on the components both sides record) and same
    compute capability: accepted. Otherwise accepted only when the engine was built
    version-compatible (built with 8.6+, running on the same or a later TensorRT)
    and/or hardware-compatible (sm_80+ on both sides, neither an integrated Jetson/DRIVE
    GPU). DLA engines need the same compute capability.
    """
    ok, message = engine_compatibility(entry, trt_version, gpu_name, compute_capability)
    if not ok:
        raise BundleError(message)


def is_native_match(entry: Any, trt_version: str, compute_capability: Any) -> bool:
    """True when the engine was built by this exact TensorRT version for this architecture."""
    entry = as_entry(entry)
    try:
        return (_same_version(parse_version(entry.tensorrt_version), parse_version(trt_version))
                and parse_cc(entry.compute_capability) == parse_cc(compute_capability))
    except ValueError:
        return False


PRECISION_PREFERENCE = ("fp16", "int8", "fp32")
"""The one order in which engines are preferred when no precision is asked for (the
runtime's choice and the Triton repository's): FP16 is the fast path with negligible
accuracy loss; an INT8 engine exists only when the user calibrated one; FP32 is the
slow reference."""


def precision_rank(precision: str) -> int:
    """Position of `precision` in PRECISION_PREFERENCE (unknown ones last)."""
    return PRECISION_PREFERENCE.index(precision) if precision in PRECISION_PREFERENCE else len(PRECISION_PREFERENCE)


def choose_engine(entries: Iterable[Any], trt_version: str, gpu_name: str, cc: Any,
                  precision: str | None = None, dla: bool | None = None) -> Any | None:
    """The best engine entry that can run here, or None.

    Keeps the entries that pass `check_engine_compatible`, of `precision` when given.
    `dla`: None = GPU engines, falling back to DLA engines when there is no GPU one;
    True = DLA engines only; False = GPU engines only. Among the rest it prefers an
    exact (not version/hardware-compatible, hence faster) match, then FP16 over INT8
    over FP32, then the widest T profile. Returns the entry object as given.
    """
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    candidates = []
    for order, raw in enumerate(entries):
        entry = as_entry(raw)
        if precision is not None and entry.precision != precision:
            continue
        ok, _ = engine_compatibility(entry, trt_version, gpu_name, cc)
        if ok:
            candidates.append((order, raw, entry))
    if not candidates:
        return None
    is_dla = [c for c in candidates if c[2].dla_core is not None]
    is_gpu = [c for c in candidates if c[2].dla_core is None]
    if dla is True:
        candidates = is_dla
    elif dla is False:
        candidates = is_gpu
    else:
        candidates = is_gpu or is_dla
    if not candidates:
        return None

    def rank(item: tuple[int, Any, EngineEntry]) -> tuple:
        order, _, entry = item
        p = entry.profile
        return (0 if is_native_match(entry, trt_version, cc) else 1, precision_rank(entry.precision),
                -(p.max_t - p.min_t), -p.max_batch, order)

    return min(candidates, key=rank)[1]
