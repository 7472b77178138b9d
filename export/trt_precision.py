"""Reduced precision for TensorRT engines: two paths, chosen by TensorRT's major version.

- **8.x / 10.x: builder flags.** The FP32 ONNX graph is parsed as is; `BuilderFlag.FP16`
  lets TensorRT pick FP16 kernels, `BuilderFlag.INT8` plus an `IInt8EntropyCalibrator2`
  (`export.trt_calibrator`) calibrates INT8 on real features. (10.x deprecates both in
  favour of strong typing, but they still work and are what JetPack 6 ships.)
- **11.x: the graph carries the precision.** TensorRT 11 removed the precision flags,
  `int8_calibrator` and `platform_has_fast_fp16`; networks are strongly typed. FP16:
  `convert_model_fp16` rewrites the graph to float16 with float32 inputs and outputs
  kept (Cast nodes at the edges); INT8: `quantize_onnx_qdq` inserts explicit
  QuantizeLinear/DequantizeLinear pairs with ONNX Runtime's static quantizer, which
  TensorRT consumes as explicit quantization.

FP16 graph conversion (own pass, onnx only, tested on CPU with ONNX Runtime):
- float32 initializers become float16 (saturated to +-65504);
- only ops known to be safe and useful in FP16 run in FP16 (`FP16_OPS`: convolutions,
  matmuls, element-wise arithmetic, activations, pooling, layout ops); everything
  else, and the numerically sensitive `KEEP_FP32_OPS` (Sigmoid, Softmax, Exp, Log,
  normalisations, reductions), stays float32, with Cast nodes inserted only where
  the type changes;
- layout-only ops (Transpose, Reshape, Identity, ...) follow their input's type, so
  the attention path Sigmoid -> Transpose -> `attention` stays float32 end to end;
- graph inputs and outputs stay float32 (`keep_io_types`).
In HAM-Net this puts the 3-tap and 1x1 convolutions and LeakyReLU in FP16, the
attention Sigmoid in FP32. NVIDIA's ModelOpt AutoCast does the same job with more
options; this pass avoids the dependency and is deterministic.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.errors import BackendUnavailable, BundleError, ConfigError

BUILDER_FLAGS = "builder_flags"
GRAPH = "graph"

FP16_MAX = 65504.0

KEEP_FP32_OPS = frozenset({
    "Sigmoid", "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Erf",
    "ReduceMean", "ReduceSum", "ReduceProd", "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare",
    "LayerNormalization", "InstanceNormalization", "BatchNormalization", "GroupNormalization",
    "Range", "CumSum", "TopK",
})
"""Ops kept in float32 by default: saturating or accumulating ones whose FP16 error
shows (sigmoid/softmax near their tails, exponentials, reductions, normalisations)."""

FP16_OPS = frozenset({
    "Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Neg", "Abs",
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "HardSigmoid", "HardSwish", "Tanh", "Clip",
    "Max", "Min", "AveragePool", "MaxPool", "GlobalAveragePool", "GlobalMaxPool", "Pad",
    "Concat", "Split", "Slice", "Gather", "Where", "Expand", "Tile",
})
"""Ops run in FP16 by the graph conversion (unless listed in `keep_fp32_ops`)."""

LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten",
                        "Dropout"})
"""Data-movement ops: they run in whatever type their input already has (no casts)."""


def precision_path(trt_major: int) -> str:
    """"builder_flags" for TensorRT 8.x-10.x, "graph" for 11.x and later."""
    major = int(trt_major)
    if major < 8:
        raise ConfigError(f"TensorRT {major}.x is not supported: install TensorRT 8.5 or newer "
                          "(JetPack 5.1+), or run with --backend onnxruntime")
    return BUILDER_FLAGS if major <= 10 else GRAPH


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable("the onnx package is needed to prepare the graph for TensorRT 11: "
                                 "pip install 'hamnet-deploy[train]'") from None
    return onnx


# --------------------------------------------------------------------------- #
#                          FP16 graph conversion                              #
# --------------------------------------------------------------------------- #
def convert_model_fp16(model: Any, keep_fp32_ops: Iterable[str] = KEEP_FP32_OPS,
                       keep_fp32_nodes: Iterable[str] = ()) -> Any:
    """A float16 copy of an ONNX ModelProto whose inputs and outputs stay float32.

    See the module docstring for which ops convert. `keep_fp32_nodes`: node names to
    keep in float32 too (e.g. a layer that overflows). The result passes
    `onnx.checker.check_model`.
    """
    onnx = _require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    keep_ops, keep_nodes = set(keep_fp32_ops), set(keep_fp32_nodes)
    src = onnx.ModelProto()
    src.CopyFrom(model)
    if src.graph.node and any(n.op_type in ("If", "Loop", "Scan") for n in src.graph.node):
        raise BundleError("FP16 graph conversion does not handle control-flow subgraphs (If/Loop/Scan); "
                          "export the model without them")
    inferred = onnx.shape_inference.infer_shapes(src)
    types: dict[str, int] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    graph = src.graph
    for init in graph.initializer:
        types[init.name] = init.data_type

    used: set[str] = {n.name for n in graph.node} | set(types)
    for node in graph.node:
        used.update(node.input)
        used.update(node.output)

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        return name

    avail16: dict[str, str] = {}  # original value name -> name of its float16 version
    avail32: dict[str, str] = {}  # original value name -> name of its float32 version
    for vi in graph.input:
        if types.get(vi.name) == FLOAT:
            avail32[vi.name] = vi.name
    new_inits = []
    graph_inputs = {vi.name for vi in graph.input}
    for init in graph.initializer:
        if init.data_type == FLOAT and init.name not in graph_inputs:
            arr = numpy_helper.to_array(init)
            half = np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)
            new_inits.append(numpy_helper.from_array(half, init.name))
            avail16[init.name] = init.name
        else:
            new_inits.append(init)
    nodes: list[Any] = []

    def need(name: str, want: int) -> str:
        if not name:
            return name
        table, other = (avail16, avail32) if want == HALF else (avail32, avail16)
        if name in table:
            return table[name]
        if name not in other:
            return name  # not a float tensor: use as is
        suffix = "fp16" if want == HALF else "fp32"
        out = fresh(f"{name}_{suffix}")
        nodes.append(helper.make_node("Cast", [other[name]], [out], to=want,
                                      name=fresh(f"Cast_{name}_{suffix}")))
        table[name] = out
        return out

    def is_float(name: str) -> bool:
        return name in avail16 or name in avail32 or types.get(name) == FLOAT

    for node in graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        float_ins = [i for i in node.input if i and is_float(i)]
        if node.op_type in LAYOUT_OPS and node.name not in keep_nodes:
            first = float_ins[0] if float_ins else None
            mode = FLOAT if first is not None and first in avail32 and first not in avail16 else HALF
        elif node.domain not in ("", "ai.onnx"):
            mode = FLOAT
        elif node.name in keep_nodes or node.op_type in keep_ops:
            mode = FLOAT
        elif node.op_type in FP16_OPS:
            mode = HALF
        elif node.op_type == "Constant":
            mode = _convert_constant(new, numpy_helper)
        elif node.op_type == "Cast":
            mode = HALF
            for attr in new.attribute:
                if attr.name == "to" and attr.i == FLOAT:
                    attr.i = HALF
        else:
            mode = FLOAT  # unknown op: leave it in float32
        del new.input[:]
        new.input.extend(need(i, mode) if i in float_ins else i for i in node.input)
        nodes.append(new)
        for out in node.output:
            if node.op_type == "Cast":
                if types.get(out) == FLOAT:
                    avail16[out] = out
            elif types.get(out) == FLOAT or (out not in types and float_ins):
                (avail16 if mode == HALF else avail32)[out] = out

    # Graph outputs keep float32: rename an FP16 producer's output and cast back.
    renames: dict[str, str] = {}
    for out in graph.output:
        if out.name in avail16 and out.name not in avail32 and avail16[out.name] == out.name:
            renames[out.name] = fresh(f"{out.name}_fp16")
    if renames:
        for node in nodes:
            for seq in (node.input, node.output):
                for k, name in enumerate(seq):
                    if name in renames:
                        seq[k] = renames[name]
        for old, new_name in renames.items():
            nodes.append(helper.make_node("Cast", [new_name], [old], to=FLOAT, name=fresh(f"Cast_{old}_out")))

    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    del graph.value_info[:]
    for out in graph.output:
        if out.type.tensor_type.elem_type == HALF:
            out.type.tensor_type.elem_type = FLOAT
    onnx.checker.check_model(src)
    return src


def _convert_constant(node: Any, numpy_helper: Any) -> int:
    """Turn a float32 Constant's value to float16 in place; the mode its output takes."""
    from onnx import TensorProto

    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(attr.t)
            half = np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)
            attr.t.CopyFrom(numpy_helper.from_array(half, attr.t.name))
            return TensorProto.FLOAT16
    return TensorProto.FLOAT


def convert_onnx_fp16(src: str | os.PathLike, dst: str | os.PathLike,
                      keep_fp32_ops: Iterable[str] = KEEP_FP32_OPS,
                      keep_fp32_nodes: Iterable[str] = ()) -> Path:
    """`convert_model_fp16` from file to file; returns `dst`."""
    onnx = _require_onnx()
    model = onnx.load(str(src))
    converted = convert_model_fp16(model, keep_fp32_ops, keep_fp32_nodes)
    dst = Path(dst)
    onnx.save(converted, str(dst))
    return dst


# --------------------------------------------------------------------------- #
#                      INT8: explicit Q/DQ with ONNX Runtime                   #
# --------------------------------------------------------------------------- #
def quantize_onnx_qdq(src: str | os.PathLike, dst: str | os.PathLike,
                      batches: Sequence[np.ndarray] | Callable[[], Sequence[np.ndarray]],
                      input_name: str = "features", per_channel: bool = True) -> Path:
    """Insert QuantizeLinear/DequantizeLinear pairs for TensorRT explicit quantization.

    ONNX Runtime's static quantizer in QDQ format, calibrated (entropy) on `batches`
    ([B, T, D] float32 arrays, or a callable returning them). TensorRT's rules are
    followed: symmetric INT8 (zero point 0) for activations and weights, weights per
    output channel, weights kept float with a Q/DQ pair (TensorRT quantizes them
    itself), bias left float, only convolutions quantized (LeakyReLU fuses into them,
    the Sigmoid and the graph edges stay float).
    """
    try:
        from onnxruntime import quantization as q
    except ImportError:
        raise BackendUnavailable("onnxruntime.quantization is needed for INT8 on TensorRT 11: "
                                 "pip install onnxruntime") from None
    data = list(batches() if callable(batches) else batches)
    if not data:
        raise ConfigError("INT8 calibration got no feature batches; pass --calib with a dataset whose "
                          "train split has videos")

    class _Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._pos = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._pos >= len(data):
                return None
            self._pos += 1
            return {input_name: np.ascontiguousarray(data[self._pos - 1], dtype=np.float32)}

        def rewind(self) -> None:
            self._pos = 0

    dst = Path(dst)
    prepared = dst.with_name(dst.stem + ".pre.onnx")
    try:  # shape inference + basic folding (drops the exporter's Identity-shared biases)
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(src), str(prepared))
        model_in = prepared
    except Exception:
        model_in = Path(src)
    q.quantize_static(
        str(model_in), str(dst), _Reader(),
        quant_format=q.QuantFormat.QDQ,
        op_types_to_quantize=["Conv"],
        per_channel=per_channel,
        activation_type=q.QuantType.QInt8,
        weight_type=q.QuantType.QInt8,
        calibrate_method=q.CalibrationMethod.Entropy,
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "AddQDQPairToWeight": True,
            "DedicatedQDQPair": True,
            "QuantizeBias": False,
        },
    )
    if model_in == prepared:
        prepared.unlink(missing_ok=True)
    return dst
