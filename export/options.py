"""Settings of the export stages that other modules share.

`TrtOptions` is the contract between `hamnet export --trt` and
`export.tensorrt_build.build_engines(onnx_path, bundle_dir, options) -> list[dict]`:
the command builds and validates it from the command line; the engine builder reads
it. Plain Python (no torch, no tensorrt).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from hamnet_deploy.runtime.errors import ConfigError
from hamnet_deploy.runtime.profile import Profile, check_order
from hamnet_deploy.runtime.settings import Invalid, Settings, option
from hamnet_deploy.runtime.trt_compat import DLA_MAX_DIM

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


CALIB_WHAT = "feature files (.npy/.npz, a folder of them or a glob) or a dataset folder"


def calib_found(text: str) -> bool:
    """Whether a --calib value names something: a path that exists or a glob that matches."""
    return Path(text).exists() or (any(c in text for c in "*?[") and bool(glob.glob(text, recursive=True)))


def check_opset(opset: int) -> int:
    """Raise ConfigError unless `opset` is one the exporter supports."""
    if isinstance(opset, int) and not isinstance(opset, bool) and MIN_OPSET <= opset <= DEFAULT_OPSET:
        return opset  # every exporter has these: no need to ask (and import) PyTorch
    hi = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= hi:
        raise ConfigError(f"--opset {opset}: choose an ONNX opset from {MIN_OPSET} to {hi} "
                          f"({DEFAULT_OPSET} for TensorRT 8.5/8.6 and Jetson)")
    return opset


@dataclass
class TrtOptions(Settings):
    """How to build TensorRT engines from the exported ONNX graph.

    Attributes:
        fp16: allow FP16 kernels (TensorRT 8.x/10.x builder flag; 11.x: FP16 graph).
        int8: INT8 engine, calibrated on `calib_data` (8.x/10.x calibrator; 11.x: QDQ graph).
        calib_data: what calibrates INT8 (required with int8): feature files or a dataset
            folder (its train split); see `export.calibration`.
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
        version_compatible, hardware_compatible: TensorRT 8.6+ portability flags
            (slower engines; recorded in the manifest for the runtime check).
    """

    where = "TensorRT option"
    options = True

    fp16: bool = False
    int8: bool = False
    calib_data: str | None = None
    min_t: int = option(1, ge=1)
    opt_t: int = option(512, ge=1)
    max_t: int = option(4096, ge=1)
    max_batch: int = option(4, ge=1)
    workspace_mb: int = option(2048, ge=1)
    timing_cache: str | None = None
    dla_core: int | None = option(None, ge=0)
    opset: int = DEFAULT_OPSET
    calib_videos: int = option(32, ge=1)
    version_compatible: bool = False
    hardware_compatible: bool = False

    @property
    def precision(self) -> str:
        """Name of the engine precision: int8, fp16 or fp32."""
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"

    @property
    def profile(self) -> Profile:
        """The engine's shape profile (a DLA engine's batch is fixed at max_batch)."""
        return Profile(self.min_t, self.opt_t, self.max_t, self.max_batch,
                       self.max_batch if self.dla_core is not None else None)

    def check(self) -> None:
        check_order(self.min_t, self.opt_t, self.max_t, self.max_batch, flags=True)
        if self.int8 and not self.calib_data:
            raise Invalid("int8", problem="needs calibration data: add --calib FEATURES (feature files or a "
                                          "dataset folder, representative of what the engine will see)")
        if self.calib_data is not None and not calib_found(self.calib_data):
            raise Invalid("calib", self.calib_data, f"not found; pass {CALIB_WHAT}")
        if self.dla_core is not None:
            if not (self.fp16 or self.int8):
                raise Invalid("dla", self.dla_core, "DLA runs FP16 or INT8 only: add --fp16 (or --int8 "
                                                    "--calib DATA)")
            if not self.min_t == self.opt_t == self.max_t:
                raise Invalid("dla", self.dla_core, f"needs a static T (DLA has no dynamic shapes): pass "
                                                    f"--min-t, --opt-t and --max-t with one value, e.g. "
                                                    f"{self.opt_t}")
            if self.opt_t > DLA_MAX_DIM:
                raise Invalid("dla", self.dla_core, f"T = {self.opt_t} exceeds the DLA limit of {DLA_MAX_DIM} "
                                                    "per dimension; use a smaller chunk")
        try:
            check_opset(self.opset)
        except ConfigError as exc:
            raise Invalid("opset", self.opset, str(exc).split(": ", 1)[-1]) from None


@dataclass
class ExportOptions(Settings):
    """Everything `hamnet export` (and `export.pipeline.run_export`) takes besides the
    checkpoint and the bundle folder; which formats are written follows from it
    (`export.formats.selected_formats`).

    Attributes:
        opset: ONNX opset of the exported graph.
        force: replace an existing bundle (atomically).
        skip_parity_long: skip the T = 2615 parity cases (small machines).
        int8_cpu: also write the static INT8 model for CPUs; needs `calib`.
        calib: what calibrates INT8 (CPU and TensorRT): feature files or a dataset folder.
        calib_videos: at most this many calibration videos.
        trt: TensorRT engines to build (None: none).
        triton: also write a Triton model repository into this folder.
        triton_max_batch: Triton's max_batch_size.
        triton_ensemble: also the ensemble that runs the post-processing in Triton
            (features in, detections out).
        verify: accuracy guard: evaluate PyTorch and every exported model on this
            dataset's test split.
        allow_drop: with verify, report an mAP drop instead of failing.
        max_drop: with verify, the largest allowed drop of average mAP (points).
    """

    where = "export option"
    options = True

    opset: int = DEFAULT_OPSET
    force: bool = False
    skip_parity_long: bool = False
    int8_cpu: bool = False
    calib: str | None = None
    calib_videos: int = option(32, ge=1)
    trt: TrtOptions | None = None
    triton: str | None = None
    triton_max_batch: int = option(4, ge=1)
    triton_ensemble: bool = False
    verify: str | None = None
    allow_drop: bool = False
    max_drop: float = option(1.0, ge=0.0)

    def check(self) -> None:
        try:
            check_opset(self.opset)
        except ConfigError as exc:
            raise Invalid("opset", self.opset, str(exc).split(": ", 1)[-1]) from None
        if self.int8_cpu and self.calib is None:
            raise Invalid("int8_cpu", problem="needs calibration data: add --calib FEATURES (feature files or a "
                                              "dataset folder, whose train split is used)")
        if self.calib is not None and not (self.int8_cpu or (self.trt is not None and self.trt.int8)):
            raise Invalid("calib", self.calib, "is for INT8 calibration: add --int8-cpu (or --trt --int8), or "
                                               "drop --calib")
        if self.calib is not None and not calib_found(self.calib):
            raise Invalid("calib", self.calib, f"not found; pass {CALIB_WHAT}")
        if self.verify is not None and not Path(self.verify).exists():
            raise Invalid("verify", self.verify, "not found; pass a dataset folder with a test split")
        if (self.allow_drop or self.max_drop != 1.0) and self.verify is None:
            raise Invalid("max_drop" if self.max_drop != 1.0 else "allow_drop",
                          problem="applies to --verify DATA only: add --verify DATA")
