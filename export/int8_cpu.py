"""Static INT8 quantization of the exported graph for CPUs (`hamnet export --int8-cpu`).

ONNX Runtime's static quantizer in QDQ format: weights INT8 per output channel,
activations UINT8 per tensor (the U8S8 scheme ONNX Runtime runs fastest on x86 and
runs on ARM64), calibrated with min/max on real features of the dataset's train
split. The 3-tap convolutions are first rewritten as one MatMul each over the
unfolded time-major input (`onnx_graph.convs_as_matmuls`: ONNX Runtime's INT8 MatMul
beats its INT8 convolution on these shapes), then the model is prepared with
`quant_pre_process` (shape inference and graph optimisation). The last 1x1
convolution of each branch (the class logits and the attention logit) and the sigmoid
stay in float: they cost almost nothing (C+1 and 1 output channels against D) and
carry the scores the localisation thresholds.

The result is the bundle's `onnx_int8` model (`model.int8.onnx`); its outputs are
compared with the FP32 model and reported, not required to match tightly: judge INT8
by the task metric (`hamnet export --verify DATA`).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.errors import BackendUnavailable, BundleError, DataError

MAX_CALIB_SNIPPETS = 1024
"""Calibration videos longer than this are cut to a window of this many snippets
(min/max statistics do not need whole long videos; keeps calibration memory small)."""


def require_quantization() -> Any:
    """`onnxruntime.quantization` (which needs onnx), or BackendUnavailable with the install hint."""
    try:
        from onnxruntime import quantization
    except ImportError:
        raise BackendUnavailable("ONNX Runtime's quantization needs the onnx package: pip install "
                                 "'hamnet-deploy[int8]' (or onnx) to use --int8-cpu") from None
    return quantization


@dataclass
class Int8Result:
    """What `quantize_int8_cpu` wrote and how."""

    path: Path
    calib_videos: int
    calib_snippets: int
    float_nodes: list[str]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)


def make_reader(features: Sequence[np.ndarray], input_name: str = "features") -> Any:
    """A CalibrationDataReader yielding one [1, T, D] video at a time (rewindable)."""
    quantization = require_quantization()

    class FeatureReader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self._items = [np.ascontiguousarray(f[None], dtype=np.float32) for f in features]
            self._pos = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._pos >= len(self._items):
                return None
            self._pos += 1
            return {input_name: self._items[self._pos - 1]}

        def rewind(self) -> None:
            self._pos = 0

        def __len__(self) -> int:
            return len(self._items)

    return FeatureReader()


def float_nodes(model_path: str | os.PathLike) -> list[str]:
    """Nodes kept in float: 1x1 convolutions (the branches' last layers) and Sigmoid."""
    import onnx

    proto = onnx.load(str(model_path))
    shapes = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    keep = []
    for node in proto.graph.node:
        if node.op_type == "Sigmoid":
            keep.append(node.name)
        elif node.op_type == "Conv" and len(node.input) > 1:
            w = shapes.get(node.input[1])
            if w is not None and len(w) >= 3 and all(k == 1 for k in w[2:]):
                keep.append(node.name)
    return keep


def _copy_metadata(src: Any, dst: str | os.PathLike, extra: dict[str, str]) -> None:
    """Give the quantized model the FP32 model's metadata (class names, D, ...; `src` is
    its loaded ModelProto) plus `extra`."""
    import onnx

    meta = {p.key: p.value for p in src.metadata_props}
    meta.update(extra)
    proto = onnx.load(str(dst))
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(dst))


def quantize_int8_cpu(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                      features: Sequence[np.ndarray], *, keep_last_float: bool = True,
                      per_channel: bool = True, activation_uint8: bool = True) -> Int8Result:
    """Write the static INT8 (QDQ) version of `fp32_path` to `out_path`, calibrated on `features`."""
    quantization = require_quantization()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not features:
        raise DataError("no calibration features: pass --calib DATA with at least one video")
    started = time.perf_counter()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=out_path.parent) as tmp:
        pre, unfolded = Path(tmp) / "pre.onnx", Path(tmp) / "unfolded.onnx"
        try:
            import onnx

            from hamnet_deploy.export.onnx_graph import convs_as_matmuls

            proto = onnx.load(str(fp32_path))
            rewritten = convs_as_matmuls(proto)
            onnx.save(proto, str(unfolded))
            quant_pre_process(str(unfolded), str(pre), skip_symbolic_shape=False)
        except Exception as exc:  # shape inference / optimiser errors of many types
            raise BundleError(f"{fp32_path}: INT8 pre-processing failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); export without --int8-cpu") from exc
        excluded = float_nodes(pre) if keep_last_float else []
        settings = {
            "format": "QDQ", "per_channel": per_channel,
            "activations": "uint8" if activation_uint8 else "int8", "weights": "int8",
            "calibration": "minmax", "float_nodes": excluded,
            "convolutions": f"{rewritten} as unfolded MatMul",
        }
        qtype = quantization.QuantType
        try:
            quantization.quantize_static(
                str(pre), str(Path(tmp) / "q.onnx"), make_reader(features),
                quant_format=quantization.QuantFormat.QDQ, per_channel=per_channel,
                activation_type=qtype.QUInt8 if activation_uint8 else qtype.QInt8,
                weight_type=qtype.QInt8, nodes_to_exclude=excluded,
                calibrate_method=quantization.CalibrationMethod.MinMax,
            )
        except Exception as exc:
            raise BundleError(f"{fp32_path}: INT8 quantization failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); export without --int8-cpu") from exc
        _copy_metadata(proto, Path(tmp) / "q.onnx", {"hamnet.precision": "int8"})
        os.replace(Path(tmp) / "q.onnx", out_path)
    return Int8Result(out_path, len(features), int(sum(len(f) for f in features)), excluded,
                      time.perf_counter() - started, settings)
