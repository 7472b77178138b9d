"""Build TensorRT engines from the bundle's ONNX file (`hamnet export --trt`).

`build_engines(onnx_path, bundle_dir, options) -> list[dict]` builds one engine on this
machine's GPU and returns its manifest entry (a list, so a later version can build
several). What it does, in order:

1. `import tensorrt` and find the GPU (cuda-python, the CUDA driver, then
   torch.cuda); either missing -> BackendUnavailable (the ONNX bundle is still fine).
2. Precision path by TensorRT major version (`export.trt_precision.precision_path`):
   8.x/10.x parse the FP32 graph and set `BuilderFlag.FP16` / `BuilderFlag.INT8` with
   an entropy calibrator; 11.x (flags and calibrators removed) parse an FP16 graph or a
   Q/DQ graph instead and build a strongly typed network.
3. Network: `EXPLICIT_BATCH` on 8.x (ignored/absent later), `STRONGLY_TYPED` on the
   graph path; parse with `OnnxParser.parse_from_file`; every parser error is
   reported node by node (index, name, operator where 10.x gives them) in one
   BundleError.
4. Profile of `features` [batch, T, D]: min (1, min_t, D), opt (max_batch, opt_t, D),
   max (max_batch, max_t, D). The opt batch is max_batch, as `TrtOptions` documents:
   the runtime fills batches with chunks of long videos, so full batches are the
   common case worth tuning for; smaller batches still run. DLA engines are static:
   T = opt_t (min = opt = max, enforced by `TrtOptions.validate`) and batch =
   max_batch (the runner pads smaller batches with zero rows).
5. Workspace cap: `set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)` (8.4+), else
   `max_workspace_size`. Important on Jetson, whose GPU shares the CPU's memory.
6. Timing cache: loaded from `options.timing_cache` (default: a per GPU/TensorRT file
   in the cache folder, `runtime.cache`: `$HAMNET_CACHE` or the user cache folder) with
   `create_timing_cache` + `set_timing_cache(cache, ignore_mismatch=False)`;
   an unusable cache is replaced by a fresh one; written back atomically after the
   build, so the next build of any bundle on this machine is much faster.
7. Optional DLA (`dla_core`): default device DLA, that core, GPU fallback for layers
   the DLA cannot run; FP16 or INT8 only; every non-batch dimension <= 8192.
8. Optional `version_compatible` / `hardware_compatible` (TensorRT 8.6+;
   hardware-compatible needs sm_80+ and no Jetson): recorded in the entry for the
   runtime check.
9. `builder.build_serialized_network` (never `build_engine`), written atomically as
   `hamnet_<gpu>_sm<cc>_trt<x.y.z>_<precision>[_dla<n>].engine`.

The manifest entry: file, sha256, precision, tensorrt_version, gpu_name,
compute_capability ("8.7"), profile {min_t, opt_t, max_t, min_batch, max_batch},
dla_core, version_compatible, hardware_compatible, timing_cache (file name only: no
home path leaks into shipped bundles), plus input_dim, output_channels (C + 1),
precision_path and calibration_cache (INT8 on 8.x/10.x).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from hamnet_deploy.export.calibration import calibration_features
from hamnet_deploy.export.options import TrtOptions
from hamnet_deploy.export.trt_calibrator import calibration_batches, make_entropy_calibrator
from hamnet_deploy.export.trt_config import (
    configure_compat,
    configure_dla,
    format_parser_errors,
    load_timing_cache,
    network_flags,
    save_timing_cache,
    set_workspace,
)
from hamnet_deploy.export.trt_precision import (
    BUILDER_FLAGS,
    GRAPH,
    convert_onnx_fp16,
    precision_path,
    quantize_onnx_qdq,
)
from hamnet_deploy.runtime import trt_import
from hamnet_deploy.runtime.cache import cache_dir
from hamnet_deploy.runtime.devices import cuda_devices
from hamnet_deploy.runtime.errors import BackendUnavailable, BundleError, ConfigError
from hamnet_deploy.runtime.fileio import sha256_bytes, sha256_file, write_bytes_atomic
from hamnet_deploy.runtime.trt_compat import (
    DLA_MAX_DIM,
    engine_file_name,
    format_cc,
    gpu_slug,
    parse_cc,
    parse_version,
    short_version,
)

__all__ = ["build_engines", "default_timing_cache", "format_parser_errors", "gpu_info", "import_tensorrt",
           "network_flags", "set_workspace"]

log = logging.getLogger(__name__)

BUILD_FALLBACK = "the ONNX model of the bundle is unchanged and runs with ONNX Runtime"
NO_GPU = ("no CUDA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES): TensorRT builds an engine "
          f"on the GPU that will run it; {BUILD_FALLBACK}")


# --------------------------------------------------------------------------- #
#                               environment                                   #
# --------------------------------------------------------------------------- #
def import_tensorrt() -> Any:
    """`import tensorrt` for the builder (`runtime.trt_import.import_tensorrt`)."""
    return trt_import.import_tensorrt(BUILD_FALLBACK)


def gpu_info(device: int = 0) -> dict[str, Any]:
    """{name, compute_capability, memory_bytes} of CUDA device `device`.

    cuda-python or the CUDA driver (`runtime.trt_compat.cuda_devices`), then torch.cuda
    when PyTorch is installed (export/ may use it). BackendUnavailable when none.
    """
    devices = cuda_devices()
    if not devices:
        devices = _torch_devices()
    if not devices:
        raise BackendUnavailable(NO_GPU)
    return devices[min(int(device), len(devices) - 1)]


def _torch_devices() -> list[dict[str, Any]]:
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        found = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            found.append({"index": i, "name": str(props.name),
                          "compute_capability": f"{props.major}.{props.minor}",
                          "memory_bytes": int(props.total_memory), "source": "torch"})
        return found
    except Exception:
        return []


def default_timing_cache(gpu_name: str, cc: Any, trt_version: str) -> Path:
    """Per GPU and TensorRT version timing-cache file in the cache folder (`runtime.cache`)."""
    major, minor = parse_cc(cc)
    return cache_dir() / f"trt_timing_{gpu_slug(gpu_name)}_sm{major}{minor}_trt{short_version(trt_version)}.cache"


# --------------------------------------------------------------------------- #
#                                 the build                                   #
# --------------------------------------------------------------------------- #
def build_engines(onnx_path: str | os.PathLike, bundle_dir: str | os.PathLike, options: TrtOptions) -> list[dict]:
    """Build the TensorRT engine described by `options` from `onnx_path` into `bundle_dir`;
    return its manifest entry in a list.

    Raises BackendUnavailable (no TensorRT / no GPU / no DLA), ConfigError (bad
    options), DataError (calibration data), BundleError (parser or build failure).
    """
    if not isinstance(options, TrtOptions):
        raise ConfigError(f"TensorRT options must be export.options.TrtOptions, got {type(options).__name__}")
    options.validate()  # a caller may have changed a field since it was built
    trt = import_tensorrt()
    gpu = gpu_info()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise BundleError(f"{onnx_path}: ONNX file not found; export the model first (hamnet export)")
    bundle_dir = Path(bundle_dir)
    return [_build_one(trt, onnx_path, bundle_dir, options, gpu)]


def _build_one(trt: Any, onnx_path: Path, bundle_dir: Path, opts: TrtOptions,
               gpu: dict[str, Any]) -> dict[str, Any]:
    version = str(trt.__version__)
    major = parse_version(version)[0]
    path_kind = precision_path(major)
    cc = format_cc(gpu["compute_capability"])
    dla_core = opts.dla_core
    precision = opts.precision
    static = dla_core is not None
    profile = opts.profile
    calib_shape = (opts.max_batch, opts.opt_t)
    onnx_sha = sha256_file(onnx_path)
    calib_cache: Path | None = None
    if opts.int8 and path_kind == BUILDER_FLAGS:  # TrtOptions made sure calibration data is given
        v = parse_version(version)
        calib_cache = bundle_dir / f"hamnet_int8_{onnx_sha[:12]}_trt{v[0]}.{v[1] if len(v) > 1 else 0}.calib"

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt_import.start(trt, trt.Builder, logger, BUILD_FALLBACK)
    timing_path = Path(opts.timing_cache) if opts.timing_cache else default_timing_cache(gpu["name"], cc, version)
    with tempfile.TemporaryDirectory(prefix="hamnet-trt-") as tmp:
        source = onnx_path
        input_dim_hint: int | None = None

        def batches() -> list:
            feats = calibration_features(opts.calib_data, opts.calib_videos, feature_dim=input_dim_hint)
            return calibration_batches(feats, calib_shape[1], calib_shape[0])

        if path_kind == GRAPH and opts.int8:
            input_dim_hint = _onnx_input_dim(onnx_path)
            source = quantize_onnx_qdq(onnx_path, Path(tmp) / "model.qdq.onnx", batches)
            if opts.fp16:
                log.info("TensorRT %s: INT8 Q/DQ graph; layers left unquantized run in FP32", version)
        elif path_kind == GRAPH and opts.fp16:
            source = convert_onnx_fp16(onnx_path, Path(tmp) / "model.fp16.onnx")

        network = builder.create_network(network_flags(trt, major, strongly_typed=path_kind == GRAPH))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(source)):
            raise BundleError(format_parser_errors(parser, onnx_path, version))
        input_name, input_dim, out_channels = _check_network(network, onnx_path)
        input_dim_hint = input_dim
        if static and max(input_dim, out_channels) > DLA_MAX_DIM:
            raise ConfigError(f"--dla: tensors of {max(input_dim, out_channels)} channels exceed the DLA "
                              f"limit of {DLA_MAX_DIM}; build a GPU engine instead")

        config = builder.create_builder_config()
        set_workspace(trt, config, opts.workspace_mb)
        trt_profile = builder.create_optimization_profile()
        trt_profile.set_shape(input_name, *profile.shapes(input_dim))
        config.add_optimization_profile(trt_profile)

        calibrator = None
        if path_kind == BUILDER_FLAGS:
            if opts.fp16 or (opts.int8 and static):  # DLA INT8 falls back to FP16, not FP32
                if not getattr(builder, "platform_has_fast_fp16", True):
                    log.warning("this GPU has no fast FP16; the FP16 engine may not be faster than FP32")
                config.set_flag(trt.BuilderFlag.FP16)
            if opts.int8:
                config.set_flag(trt.BuilderFlag.INT8)
                # Without a calibration cache TensorRT will ask for data: load it now, so a
                # dataset problem is a DataError here rather than inside a TensorRT callback.
                cached = calib_cache is not None and calib_cache.is_file() and calib_cache.stat().st_size
                calib_source = batches if cached else batches()
                calibrator = make_entropy_calibrator(trt, calib_source, calib_cache, input_name)
                config.int8_calibrator = calibrator
                if hasattr(config, "set_calibration_profile"):
                    calib_profile = builder.create_optimization_profile()
                    cshape = (calib_shape[0], calib_shape[1], input_dim)
                    calib_profile.set_shape(input_name, cshape, cshape, cshape)
                    config.set_calibration_profile(calib_profile)
        if static:
            configure_dla(trt, builder, config, dla_core)
        configure_compat(trt, config, opts, gpu, cc)
        timing = load_timing_cache(config, timing_path)

        plan = builder.build_serialized_network(network, config)
        if calibrator is not None:
            calibrator.free()
            if calibrator.error is not None:
                raise calibrator.error
        if plan is None:
            raise BundleError(f"{onnx_path}: TensorRT {version} could not build the {precision} engine (see "
                              "the TensorRT log above); on Jetson lower --workspace-mb and --max-t, or run "
                              "with --backend onnxruntime")
        if timing is not None:
            try:
                save_timing_cache(config, timing_path)
            except Exception as exc:  # a cache is an optimisation: never fail the build for it
                log.warning("could not save the timing cache %s: %s", timing_path, exc)
        data = bytes(plan)

    name = engine_file_name(gpu["name"], cc, version, precision, dla_core)
    write_bytes_atomic(bundle_dir / name, data)
    entry: dict[str, Any] = {
        "file": name,
        "sha256": sha256_bytes(data),
        "precision": precision,
        "tensorrt_version": version,
        "gpu_name": str(gpu["name"]),
        "compute_capability": cc,
        "profile": {**profile.to_dict(), "min_batch": profile.smallest_batch},
        "dla_core": dla_core,
        "version_compatible": opts.version_compatible,
        "hardware_compatible": opts.hardware_compatible,
        "timing_cache": timing_path.name if timing is not None else None,
        "input_dim": input_dim,
        "output_channels": out_channels,
        "precision_path": path_kind,
        "source_onnx_sha256": onnx_sha,
    }
    if calib_cache is not None:
        entry["calibration_cache"] = calib_cache.name if calib_cache.is_file() else None
    return entry


def _check_network(network: Any, onnx_path: Path) -> tuple[str, int, int]:
    """Name and D of the single [batch, T, D] input; C + 1 of the `cas` output."""
    if network.num_inputs != 1:
        raise BundleError(f"{onnx_path}: the graph has {network.num_inputs} inputs, expected one "
                          "(features [batch, T, D]); re-export the model")
    inp = network.get_input(0)
    shape = tuple(int(d) for d in inp.shape)
    if len(shape) != 3 or shape[2] <= 0:
        raise BundleError(f"{onnx_path}: input {inp.name!r} has shape {shape}, expected [batch, T, D] with a "
                          "fixed D; re-export the model")
    channels = 0
    for i in range(network.num_outputs):
        out = network.get_output(i)
        dims = tuple(int(d) for d in out.shape)
        if out.name == "cas" and len(dims) == 3:
            channels = dims[2]
    if network.num_outputs != 2:
        raise BundleError(f"{onnx_path}: the graph has {network.num_outputs} outputs, expected cas and "
                          "attention; re-export the model")
    return inp.name, shape[2], channels


def _onnx_input_dim(onnx_path: Path) -> int | None:
    try:
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        return int(dims[2].dim_value) or None
    except Exception:
        return None
