"""Settings of the export stages that other modules share.

`TrtOptions` is the contract between `hamnet export --trt` and
`export.tensorrt_build.build_engines(onnx_path, bundle_dir, options) -> list[dict]`:
the command builds and validates it from the command line; the engine builder reads
it. Plain Python (no torch, no tensorrt).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hamnet_deploy.runtime.errors import ConfigError

DEFAULT_OPSET = 17
"""ONNX opset of the exported graph: 17 is what TensorRT 8.5/8.6 (JetPack 5.1/6.0)
parse, and every ONNX Runtime since 1.13 runs it; newer opsets change nothing in this
graph (Conv, LeakyRelu, Sigmoid, Transpose)."""
MIN_OPSET = 13


def max_opset() -> int:
    """Highest opset of torch's TorchScript exporter (20 in torch 2.4 - 2.13)."""
    try:
        from torch.onnx import _constants

        return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
    except Exception:  # torch missing or internals moved
        return 20


def check_opset(opset: int) -> int:
    """Raise ConfigError unless `opset` is one the exporter supports."""
    hi = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= hi:
        raise ConfigError(f"--opset {opset}: choose an ONNX opset from {MIN_OPSET} to {hi} "
                          f"({DEFAULT_OPSET} for TensorRT 8.5/8.6 and Jetson)")
    return opset


@dataclass
class TrtOptions:
    """How to build TensorRT engines from the exported ONNX graph.

    Attributes:
        fp16: allow FP16 kernels (TensorRT 8.x/10.x builder flag; 11.x: FP16 graph).
        int8: INT8 engine, calibrated on `calib_data` (8.x/10.x calibrator; 11.x: QDQ graph).
        calib_data: dataset folder whose train split calibrates INT8 (required with int8).
        min_t, opt_t, max_t: optimisation profile of the time axis T; longer videos are
            run in overlapping chunks of at most max_t snippets (exact with
            receptive_radius snippets of context per side).
        max_batch: largest batch of the profile (batch profile 1 .. max_batch, opt = max).
        workspace_mb: builder workspace cap in MiB (Jetson shares memory with the CPU:
            keep it modest).
        timing_cache: file to read/write the builder timing cache (speeds up rebuilds).
        dla_core: build for this Jetson DLA core (FP16/INT8 only, static shapes:
            min_t = opt_t = max_t); None = GPU.
        opset: opset of the ONNX graph the engine is built from (recorded only).
        calib_videos: at most this many train videos feed the INT8 calibrator.
    """

    fp16: bool = False
    int8: bool = False
    calib_data: str | None = None
    min_t: int = 1
    opt_t: int = 512
    max_t: int = 4096
    max_batch: int = 4
    workspace_mb: int = 2048
    timing_cache: str | None = None
    dla_core: int | None = None
    opset: int = DEFAULT_OPSET
    calib_videos: int = 32

    @property
    def precision(self) -> str:
        """Name of the engine precision: int8, fp16 or fp32."""
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"

    def validate(self) -> TrtOptions:
        """Raise ConfigError (one line with the fix) for an impossible combination."""
        for name in ("min_t", "opt_t", "max_t", "max_batch", "workspace_mb", "calib_videos"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {value}: must be a whole number >= 1")
        if not self.min_t <= self.opt_t <= self.max_t:
            raise ConfigError(f"T profile min {self.min_t}, opt {self.opt_t}, max {self.max_t}: needs "
                              "--min-t <= --opt-t <= --max-t")
        if self.int8 and not self.calib_data:
            raise ConfigError("--int8 needs calibration data: add --calib DATA (a dataset folder whose "
                              "train split is representative)")
        if self.calib_data is not None and not Path(self.calib_data).exists():
            raise ConfigError(f"--calib {self.calib_data}: not found; pass a dataset folder")
        if self.dla_core is not None:
            if isinstance(self.dla_core, bool) or not isinstance(self.dla_core, int) or self.dla_core < 0:
                raise ConfigError(f"--dla {self.dla_core}: the DLA core is a number >= 0 (0 or 1 on Orin)")
            if not (self.fp16 or self.int8):
                raise ConfigError("--dla runs FP16 or INT8 only: add --fp16 (or --int8 --calib DATA)")
            if not self.min_t == self.opt_t == self.max_t:
                raise ConfigError(f"--dla needs a static T (DLA has no dynamic shapes): pass --min-t, "
                                  f"--opt-t and --max-t with one value, e.g. {self.opt_t}")
        check_opset(self.opset)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
