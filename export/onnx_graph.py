"""The ONNX graph of a bundle, read and checked with `onnx` alone (no PyTorch): its
inputs and outputs, opset, dynamic axes and `hamnet.*` metadata. The exporter
(`export.onnx_export`) and the steps that work from a bundle's model.onnx use it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from hamnet_deploy.runtime.errors import BundleError
from hamnet_deploy.runtime.manifest import TensorSpec

INPUT = "features"
OUTPUTS = ("cas", "attention")
METADATA_PREFIX = "hamnet."

_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
           onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8",
           onnx.TensorProto.INT64: "int64", onnx.TensorProto.BOOL: "bool"}


def _dims(value_info: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return tuple(dims)


def graph_io(proto: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of a model as TensorSpecs (symbolic dims as names)."""
    init = {i.name for i in proto.graph.initializer}

    def spec(v: onnx.ValueInfoProto) -> TensorSpec:
        return TensorSpec(v.name, _DTYPES.get(v.type.tensor_type.elem_type, str(v.type.tensor_type.elem_type)),
                          _dims(v))

    return ([spec(v) for v in proto.graph.input if v.name not in init],
            [spec(v) for v in proto.graph.output])


def model_opset(proto: onnx.ModelProto) -> int:
    """The default-domain opset a model imports."""
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def check_dynamic(proto: onnx.ModelProto, feature_dim: int, num_classes: int) -> None:
    """Check names, dtypes and shapes: batch and T symbolic, D, C+1 and 1 fixed.

    An exporter or simplifier that specialised a dynamic axis to the example shape is
    caught here (and the parity run at several T would catch it too).
    """
    inputs, outputs = graph_io(proto)
    want = {INPUT: feature_dim, "cas": num_classes + 1, "attention": 1}
    got = {t.name: t for t in inputs + outputs}
    if [t.name for t in inputs] != [INPUT] or [t.name for t in outputs] != list(OUTPUTS):
        raise BundleError(f"exported graph has inputs {[t.name for t in inputs]} and outputs "
                          f"{[t.name for t in outputs]}; expected {[INPUT]} and {list(OUTPUTS)}")
    for name, last in want.items():
        spec = got[name]
        if spec.dtype != "float32" or len(spec.shape) != 3:
            raise BundleError(f"exported {name!r} is {spec.dtype} {list(spec.shape)}; expected float32 "
                              "(batch, T, n)")
        b, t, n = spec.shape
        if not isinstance(b, str) or not isinstance(t, str):
            raise BundleError(f"exported {name!r} has shape {list(spec.shape)}: the batch and T axes were "
                              "fixed during export (they must stay dynamic); this is an exporter bug, "
                              "try another --opset")
        if n != last:
            raise BundleError(f"exported {name!r} has last dimension {n}, expected {last}")


def set_metadata(proto: onnx.ModelProto, metadata: Mapping[str, Any]) -> None:
    """Replace the `hamnet.*` metadata_props with `metadata` (values JSON-encoded unless str)."""
    keep = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del proto.metadata_props[:]
    for key, value in keep:
        proto.metadata_props.add(key=key, value=value)
    for key, value in metadata.items():
        text = value if isinstance(value, str) else json.dumps(value)
        proto.metadata_props.add(key=METADATA_PREFIX + key, value=text)


def read_metadata(path_or_proto: str | os.PathLike | onnx.ModelProto) -> dict[str, Any]:
    """The `hamnet.*` metadata of an ONNX file, decoded (without the prefix)."""
    proto = path_or_proto if isinstance(path_or_proto, onnx.ModelProto) else onnx.load(
        str(path_or_proto), load_external_data=False)
    out: dict[str, Any] = {}
    for p in proto.metadata_props:
        if p.key.startswith(METADATA_PREFIX):
            try:
                out[p.key[len(METADATA_PREFIX):]] = json.loads(p.value)
            except ValueError:
                out[p.key[len(METADATA_PREFIX):]] = p.value
    return out


CONV2D_AXIS = "hamnet_conv2d_axis"


def _rewrite_convs(proto: onnx.ModelProto, rewrite) -> int:
    """Replace (in place) each Conv of `proto` whose weight is an initializer by the nodes
    `rewrite(node, weight, attrs)` returns; it returns None to keep the node. Returns how
    many convolutions were rewritten."""
    from onnx import helper

    graph = proto.graph
    weights = {w.name: w for w in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        new = None if weight is None else rewrite(
            node, weight, {a.name: helper.get_attribute_value(a) for a in node.attribute})
        if new is None:
            nodes.append(node)
            continue
        nodes += new
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def convs_as_2d(proto: onnx.ModelProto) -> int:
    """Run every 1-D convolution of `proto` as a 2-D one of height 1 (in place): x
    [B, C, T] -> Unsqueeze -> Conv with weights [O, I, 1, k] -> Squeeze -> [B, O, T].
    The same arithmetic, but ONNX Runtime's CPU execution provider has a blocked-layout
    (NCHWc) kernel for 2-D convolutions only: about 1.6x faster at D = 2048 on AVX-512
    (bench/infer_speed.py); TensorRT runs 1-D convolutions as 2-D ones anyway. Returns how
    many convolutions were rewritten."""
    from onnx import helper, numpy_helper

    two_d = {"pads": lambda v: [0, v[0], 0, v[1]], "strides": lambda v: [1, v[0]],
             "dilations": lambda v: [1, v[0]], "kernel_shape": lambda v: [1, v[0]]}

    def rewrite(node, weight, attrs):
        if len(weight.dims) != 3:
            return None
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight)[:, :, None, :], weight.name))
        attrs = {k: two_d[k](v) if k in two_d else v for k, v in attrs.items()}
        x4, y4 = f"{node.output[0]}__in4d", f"{node.output[0]}__out4d"
        return [helper.make_node("Unsqueeze", [node.input[0], CONV2D_AXIS], [x4]),
                helper.make_node("Conv", [x4, *node.input[1:]], [y4], name=node.name, **attrs),
                helper.make_node("Squeeze", [y4, CONV2D_AXIS], [node.output[0]])]

    count = _rewrite_convs(proto, rewrite)
    if count:
        proto.graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), CONV2D_AXIS))
    return count


def convs_as_matmuls(proto: onnx.ModelProto) -> int:
    """Run every 3-tap convolution of `proto` (the 2-D ones of height 1 that
    `convs_as_2d` writes: pads 1, stride 1, no groups) as one MatMul over the unfolded
    time-major input (in place): x [B, C, 1, T] -> Transpose [B, 1, T, C] -> Pad T by 1
    -> Concat of the three shifted windows [B, 1, T, 3C] -> MatMul with the weights laid
    out [3C, O] (+ bias) -> Transpose [B, O, 1, T]. The same sums in another order.
    Only for the INT8 CPU model (`export.int8_cpu`): ONNX Runtime's INT8 MatMul
    (QLinearMatMul) runs these shapes 1.2-2x faster than its QLinearConv on x86 (the
    INT8 peak table of bench/infer_speed.py), and the added transposes cost little
    (0.3 ms of 24 at T = 339, D = 2048 in ONNX Runtime's profile). Returns how many
    convolutions were rewritten."""
    from onnx import helper, numpy_helper

    added: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        added.append(numpy_helper.from_array(value, name))
        return name

    def rewrite(node, weight, attrs):
        if (len(weight.dims) != 4 or tuple(weight.dims[2:]) != (1, 3)
                or list(attrs.get("pads", [])) != [0, 1, 0, 1] or attrs.get("group", 1) != 1
                or any(v != 1 for v in [*attrs.get("strides", []), *attrs.get("dilations", [])])):
            return None
        w = numpy_helper.to_array(weight)  # [O, C, 1, 3]
        name = f"{node.output[0]}__unfolded"
        unfolded = const(f"{name}.weight", np.ascontiguousarray(w[:, :, 0, :].transpose(2, 1, 0).reshape(-1, w.shape[0])))
        axis = const(f"{name}.axis", np.array([2], np.int64))
        pads = const(f"{name}.pads", np.array([0, 0, 1, 0, 0, 0, 1, 0], np.int64))
        nodes = [helper.make_node("Transpose", [node.input[0]], [f"{name}.btc"], perm=[0, 2, 3, 1]),
                 helper.make_node("Pad", [f"{name}.btc", pads], [f"{name}.padded"])]
        windows = []
        for k, (start, stop) in enumerate(((0, -2), (1, -1), (2, 2 ** 62))):  # x[t - 1], x[t], x[t + 1]
            windows.append(f"{name}.x{k}")
            bounds = [const(f"{name}.start{k}", np.array([start], np.int64)),
                      const(f"{name}.stop{k}", np.array([stop], np.int64))]
            nodes.append(helper.make_node("Slice", [f"{name}.padded", *bounds, axis], [windows[-1]]))
        out = f"{name}.matmul"
        nodes += [helper.make_node("Concat", windows, [f"{name}.windows"], axis=3),
                  helper.make_node("MatMul", [f"{name}.windows", unfolded], [out], name=node.name)]
        if len(node.input) > 2 and node.input[2]:
            nodes.append(helper.make_node("Add", [out, node.input[2]], [f"{name}.biased"]))
            out = f"{name}.biased"
        nodes.append(helper.make_node("Transpose", [out], [node.output[0]], perm=[0, 3, 1, 2]))
        return nodes

    count = _rewrite_convs(proto, rewrite)
    if count:
        graph = proto.graph
        graph.initializer.extend(added)
        used = {name for n in graph.node for name in n.input}
        kept = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return count
