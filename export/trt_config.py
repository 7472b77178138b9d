"""Version-aware pieces of a TensorRT build (8.5 to 11.x): network creation flags, the
workspace cap, ONNX parser errors, the timing cache, DLA and version/hardware
compatibility. `export.tensorrt_build` puts them together; every name used here exists
in the real bindings (checked by the conformance test)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hamnet_deploy.runtime.errors import BackendUnavailable, ConfigError
from hamnet_deploy.runtime.fileio import write_bytes_atomic
from hamnet_deploy.runtime.trt_compat import is_integrated_gpu, parse_cc

log = logging.getLogger(__name__)


def network_flags(trt: Any, major: int, strongly_typed: bool) -> int:
    """Creation flags: EXPLICIT_BATCH before 10.x (10.x ignores it, later may lack it);
    STRONGLY_TYPED for graph-typed precision (10.x+; always on in 11.x)."""
    flags = 0
    enum = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if enum is None:
        return flags
    if major < 10 and hasattr(enum, "EXPLICIT_BATCH"):
        flags |= 1 << int(enum.EXPLICIT_BATCH)
    if strongly_typed and hasattr(enum, "STRONGLY_TYPED"):
        flags |= 1 << int(enum.STRONGLY_TYPED)
    return flags


def set_workspace(trt: Any, config: Any, workspace_mb: int) -> None:
    """Cap the builder workspace: memory pools on 8.4+, `max_workspace_size` before."""
    nbytes = int(workspace_mb) << 20
    if hasattr(config, "set_memory_pool_limit") and hasattr(trt, "MemoryPoolType"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)
    else:
        config.max_workspace_size = nbytes


def format_parser_errors(parser: Any, source: Any, trt_version: str = "") -> str:
    """One line listing every ONNX parser error with its node index, name and operator."""
    items = []
    for i in range(int(parser.num_errors)):
        err = parser.get_error(i)
        desc = _call(err, "desc") or str(err)
        node = _call(err, "node")
        name = _call(err, "node_name")
        op = _call(err, "node_operator")
        where = []
        if isinstance(node, int) and node >= 0:
            where.append(f"node {node}")
        if name:
            where.append(repr(str(name)))
        if op:
            where.append(f"({op})")
        items.append(f"{' '.join(where) or 'graph'}: {str(desc).strip()}")
    version = f" {trt_version}" if trt_version else ""
    return (f"{source}: TensorRT{version} could not parse the ONNX graph ({len(items)} error"
            f"{'' if len(items) == 1 else 's'}): {'; '.join(items) or 'no details given'}; re-export with "
            "--opset 17 (TensorRT 8.5/8.6 parse opset <= 17) or run with --backend onnxruntime")


def _call(obj: Any, method: str) -> Any:
    fn = getattr(obj, method, None)
    if not callable(fn):
        return None
    try:
        return fn()
    except Exception:
        return None


def load_timing_cache(config: Any, path: Path | None) -> Any:
    """Attach a timing cache to `config`, seeded from `path` when it holds a usable one."""
    blob = b""
    if path is not None and path.is_file():
        try:
            blob = path.read_bytes()
        except OSError as exc:
            log.warning("timing cache %s unreadable (%s); starting a fresh one", path, exc)
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, False):
        return cache
    if blob:
        log.warning("timing cache %s is from another GPU or TensorRT; starting a fresh one", path)
        cache = config.create_timing_cache(b"")
        if cache is not None and config.set_timing_cache(cache, False):
            return cache
    return None


def save_timing_cache(config: Any, path: Path | None) -> bool:
    """Serialize the (updated) timing cache to `path` atomically; False when there is none."""
    if path is None:
        return False
    cache = config.get_timing_cache()
    if cache is None:
        return False
    data = cache.serialize()
    write_bytes_atomic(path, bytes(data))
    return True


def configure_dla(trt: Any, builder: Any, config: Any, dla_core: int) -> None:
    """Build for DLA core `dla_core` with GPU fallback for layers the DLA cannot run."""
    cores = int(getattr(builder, "num_DLA_cores", 0) or 0)
    if cores == 0:
        raise BackendUnavailable("this GPU has no DLA (Jetson AGX/NX Orin and Xavier have one or two); "
                                 "drop --dla to build a GPU engine")
    if not 0 <= dla_core < cores:
        raise ConfigError(f"--dla {dla_core}: this device has DLA cores 0..{cores - 1}")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(dla_core)
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def configure_compat(trt: Any, config: Any, opts: Any, gpu: dict[str, Any], cc: str) -> None:
    """Version-compatible (8.6+) and hardware-compatible (8.6+, sm_80+, not Jetson) builds."""
    if opts.version_compatible:
        flag = getattr(trt.BuilderFlag, "VERSION_COMPATIBLE", None)
        if flag is None:
            raise ConfigError("version-compatible engines need TensorRT 8.6 or newer")
        config.set_flag(flag)
    if opts.hardware_compatible:
        level = getattr(getattr(trt, "HardwareCompatibilityLevel", None), "AMPERE_PLUS", None)
        if level is None:
            raise ConfigError("hardware-compatible engines need TensorRT 8.6 or newer")
        if parse_cc(cc) < (8, 0) or is_integrated_gpu(cc, gpu["name"]) or opts.dla_core is not None:
            raise ConfigError(f"hardware-compatible engines need an Ampere or newer discrete GPU (sm_80+, not "
                              f"Jetson, no DLA); this is {gpu['name']} (sm_{cc.replace('.', '')})")
        config.hardware_compatibility_level = level
