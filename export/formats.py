"""The export formats in one table (Ultralytics-style). The table drives the argument
checks of `hamnet export`, each export step (its `step` in `export.steps`, run by
`export.pipeline.run_step`) and what `bench/infer_speed.py` times. A new format is one
row and one step function.

| key | flag | file | CPU | GPU |
| --- | --- | --- | --- | --- |
| pytorch | - | (the checkpoint) | yes | yes |
| onnx | - (always) | model.onnx | yes | yes |
| onnx_int8 | --int8-cpu | model.int8.onnx | yes | no |
| tensorrt | --trt | *.engine | no | yes |
| triton | --triton DIR | DIR/hamnet/... | yes | yes |
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hamnet_deploy.export import steps
from hamnet_deploy.runtime.errors import ConfigError


@dataclass(frozen=True)
class ExportFormat:
    """One row of the table.

    Attributes:
        key: identifier (also the manifest's model kind where there is one).
        name: display name.
        flag: the `hamnet export` option that selects it; None = always written.
        file: file name in the bundle (None: not a bundle file).
        manifest: where the manifest records it (`models.onnx`, `engines`, None).
        cpu, gpu: where it runs.
        options: option names (without dashes, `_` for `-`) that only mean something
            with this format; giving one without selecting the format is an error.
        requires: Python modules the export needs.
        runner: inference backend for benchmarks (`torch`, `onnxruntime`, None).
        step: the function that writes it (`export.steps`); None for the source.
        optional: a failure is reported and the export goes on (TensorRT needs a GPU).
        after_bundle: runs on the committed bundle (not inside it).
    """

    key: str
    name: str
    flag: str | None
    file: str | None
    manifest: str | None
    cpu: bool
    gpu: bool
    options: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    runner: str | None = None
    step: Callable[[Any], Any] | None = None
    optional: bool = False
    after_bundle: bool = False

    def missing_requirements(self) -> list[str]:
        """Modules of `requires` that are not importable here."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("pytorch", "PyTorch", None, None, None, True, True, (), ("torch",), "torch"),
    ExportFormat("onnx", "ONNX (FP32)", None, "model.onnx", "models.onnx", True, True,
                 ("opset", "skip_parity_long"), ("torch", "onnx", "onnxslim", "onnxruntime"), "onnxruntime",
                 steps.onnx_step),
    ExportFormat("onnx_int8", "ONNX INT8 (CPU)", "int8_cpu", "model.int8.onnx", "models.onnx_int8", True, False,
                 ("calib", "calib_videos"), ("onnxruntime", "onnx"), "onnxruntime", steps.int8_cpu_step),
    ExportFormat("tensorrt", "TensorRT engine", "trt", "*.engine", "engines", False, True,
                 ("fp16", "int8", "calib", "calib_videos", "min_t", "opt_t", "max_t", "max_batch",
                  "workspace_mb", "dla", "timing_cache", "version_compatible", "hardware_compatible"), ("tensorrt",),
                 "tensorrt", steps.tensorrt_step,
                 optional=True),
    ExportFormat("triton", "Triton model repository", "triton", None, None, True, True,
                 ("max_batch", "triton_ensemble"), (), None, steps.triton_step, after_bundle=True),
)
FORMAT_KEYS = tuple(f.key for f in FORMATS)


def get_format(key: str) -> ExportFormat:
    for fmt in FORMATS:
        if fmt.key == key:
            return fmt
    raise ConfigError(f"unknown export format {key!r}; known: {', '.join(FORMAT_KEYS)}")


def export_formats() -> list[dict[str, Any]]:
    """The table as rows (for printing): format, flag, file, CPU, GPU, options."""
    return [{"format": f.name, "key": f.key, "flag": _dash(f.flag) if f.flag else "-",
             "file": f.file or "-", "cpu": f.cpu, "gpu": f.gpu,
             "options": " ".join(_dash(o) for o in f.options)} for f in FORMATS]


def _dash(name: str) -> str:
    return "--" + name.replace("_", "-")


def selected_formats(flags: Mapping[str, Any]) -> list[ExportFormat]:
    """Formats an export writes: those without a flag plus those whose flag is set."""
    return [f for f in FORMATS if f.key != "pytorch" and (f.flag is None or flags.get(f.flag))]


def check_export_args(flags: Mapping[str, Any], given: Iterable[str]) -> list[ExportFormat]:
    """Check that every option in `given` belongs to a selected format.

    `flags`: the format flags (`int8_cpu`, `trt`, `triton`) and their values; `given`:
    names of the other options the user set. Raises ConfigError naming the option and
    the flag it needs; returns the selected formats.
    """
    chosen = selected_formats(flags)
    keys = {f.key for f in chosen}
    for option in given:
        owners = [f for f in FORMATS if option in f.options]
        if not owners:
            continue
        if not any(f.key in keys for f in owners):
            need = " or ".join(_dash(f.flag) for f in owners if f.flag)
            raise ConfigError(f"{_dash(option)} applies to {need} only: add {need.split(' or ')[0]} "
                              f"or drop {_dash(option)}")
    return chosen


def benchmark_formats(device: str = "cpu") -> list[ExportFormat]:
    """Formats with a runner that run on `device` ("cpu" or "gpu")."""
    return [f for f in FORMATS if f.runner and (f.cpu if device == "cpu" else f.gpu)]
