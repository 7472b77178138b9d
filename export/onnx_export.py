"""PyTorch HAM-Net -> ONNX (SPEC §6).

Graph: `features` float32 [batch, T, D] -> `cas` [batch, T, C+1] (logits, last column
background) and `attention` [batch, T, 1]; batch and T are dynamic. Only the two
branches (and the ActivityNet average pool) are exported, with the mask-free forward:
top-k pooling and everything after it stay in the NumPy runtime.

Steps: TorchScript exporter (`dynamo=False`, `dynamic_axes`; example batch 2 and
T 8 so no axis is specialised) -> onnxslim -> each 1-D convolution run as a 2-D one
of height 1 (`onnx_graph.convs_as_2d`: ONNX Runtime's fast CPU kernel) -> metadata (class names, D, snippet
seconds, receptive radius, package version) -> check that batch and T are still
symbolic -> `onnx.checker.check_model(full_check=True)` -> written atomically.
`export.parity` then runs the file against PyTorch at several T.
"""

from __future__ import annotations

import copy
import io
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from hamnet_deploy.export.onnx_graph import (  # noqa: F401  (graph_io, read_metadata: part of this API)
    INPUT,
    METADATA_PREFIX,
    OUTPUTS,
    check_dynamic,
    convs_as_2d,
    graph_io,
    model_opset,
    read_metadata,
    set_metadata,
)
from hamnet_deploy.export.options import DEFAULT_OPSET, check_opset
from hamnet_deploy.runtime.errors import BundleError
from hamnet_deploy.runtime.fileio import write_bytes_atomic
from hamnet_deploy.runtime.manifest import TensorSpec

DYNAMIC_AXES = {name: {0: "batch", 1: "T"} for name in (INPUT, *OUTPUTS)}
EXAMPLE_BATCH, EXAMPLE_T = 2, 8

@dataclass
class OnnxExport:
    """What `export_onnx` wrote."""

    path: Path
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    simplified: bool
    seconds: float
    notes: list[str] = field(default_factory=list)


class _Graph(nn.Module):
    """The exported function: features -> (cas, attention), no mask."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(features)


def model_metadata(model: nn.Module, classes: Sequence[str], snippet_seconds: float,
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metadata recorded in the ONNX file."""
    from hamnet_deploy.runtime.version import __version__

    return {
        "classes": list(classes),
        "num_classes": len(classes),
        "feature_dim": int(model.feature_dim),
        "snippet_seconds": float(snippet_seconds),
        "receptive_radius": int(model.receptive_radius),
        "package_version": __version__,
        "outputs": "cas: logits [batch, T, C+1], last column background; attention: sigmoid [batch, T, 1]",
        **dict(extra or {}),
    }


def torch_to_onnx(model: nn.Module, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Trace `model` (eval mode, CPU copy) to an ONNX ModelProto with dynamic batch and T."""
    check_opset(opset)
    net = _Graph(copy.deepcopy(model).float().cpu().eval())
    example = torch.randn(EXAMPLE_BATCH, EXAMPLE_T, int(model.feature_dim))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        torch.onnx.export(net, (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=[INPUT], output_names=list(OUTPUTS), dynamic_axes=DYNAMIC_AXES,
                          do_constant_folding=True, export_params=True)
    return onnx.load_from_string(buffer.getvalue())


def simplify(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """onnxslim the graph; on failure keep the original and return the reason."""
    try:
        import onnxslim
    except ImportError:
        return proto, "onnxslim is not installed: the graph was not simplified (pip install onnxslim)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(copy.deepcopy(proto))
    except Exception as exc:  # onnxslim raises many types
        return proto, f"onnxslim failed ({type(exc).__name__}: {exc}); the graph was not simplified"
    if not isinstance(slim, onnx.ModelProto):
        return proto, "onnxslim returned no model; the graph was not simplified"
    return slim, None


def export_onnx(model: nn.Module, path: str | os.PathLike, *, classes: Sequence[str],
                snippet_seconds: float, opset: int = DEFAULT_OPSET, simplify_graph: bool = True,
                metadata: Mapping[str, Any] | None = None) -> OnnxExport:
    """Export `model` (a HamNet) to `path`; see the module docstring for the steps.

    Raises BundleError when the exported graph is not the contract (names, dtypes,
    dynamic axes) or fails the ONNX checker.
    """
    started = time.perf_counter()
    num_classes = int(model.num_classes)
    if len(classes) != num_classes:
        raise BundleError(f"{len(classes)} class names for a model with {num_classes} classes; "
                          "use the checkpoint's class list")
    proto = torch_to_onnx(model, opset)
    notes: list[str] = []
    simplified = False
    if simplify_graph:
        slim, note = simplify(proto)
        try:
            check_dynamic(slim, int(model.feature_dim), num_classes)
        except BundleError as exc:
            slim, note = proto, f"onnxslim changed the graph's interface ({exc}); kept the unsimplified graph"
        simplified = note is None
        if note:
            notes.append(note)
        proto = slim
    convs_as_2d(proto)  # ONNX Runtime's fast CPU convolution is 2-D only
    check_dynamic(proto, int(model.feature_dim), num_classes)
    proto.producer_name = "hamnet-deploy"
    from hamnet_deploy.runtime.version import __version__

    proto.producer_version = __version__
    proto.doc_string = "HAM-Net branches: features [batch, T, D] -> cas [batch, T, C+1], attention [batch, T, 1]"
    set_metadata(proto, model_metadata(model, classes, snippet_seconds, metadata))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"the exported ONNX graph fails onnx.checker ({first}); try another --opset") from exc
    data = proto.SerializeToString()
    write_bytes_atomic(path, data)
    inputs, outputs = graph_io(proto)
    return OnnxExport(Path(path), opset, inputs, outputs, simplified, time.perf_counter() - started, notes)
