"""What this machine has for HAM-Net inference, as one snapshot (`Environment`) that the
backend table's probes read (tests build their own to simulate other machines), and
the report `hamnet doctor` prints. NumPy/stdlib only: nothing here imports PyTorch,
TensorRT or ONNX Runtime's providers beyond asking which exist."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

from hamnet_deploy.runtime import devices, trt_import
from hamnet_deploy.runtime.errors import BackendUnavailable

PACKAGES = ("hamnet-deploy", "numpy", "onnxruntime", "onnxruntime-gpu", "torch", "onnx", "onnxslim",
            "tensorrt", "cuda-python", "matplotlib", "tritonclient")


def dist_version(name: str) -> str | None:
    """Installed version of distribution `name`, or None."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def ort_providers() -> list[str]:
    """`onnxruntime.get_available_providers()`, or [] when ONNX Runtime is absent or broken."""
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    try:
        return list(importlib.import_module("onnxruntime").get_available_providers())
    except Exception:  # a broken install must not break the report
        return []


@dataclass(frozen=True)
class Environment:
    """ONNX Runtime providers, CUDA GPUs, the importable TensorRT and PyTorch versions,
    the newest CUDA the driver supports ("12.4") and the CUDA major TensorRT was built for."""

    ort_providers: tuple[str, ...] = ()
    gpus: tuple[dict[str, Any], ...] = ()
    tensorrt: str | None = None
    torch: str | None = None
    cuda_driver: str | None = None
    tensorrt_cuda: int | None = None

    @classmethod
    def current(cls) -> Environment:
        """This machine now (PyTorch is found, never imported; TensorRT is not loaded)."""
        torch = dist_version("torch") if importlib.util.find_spec("torch") is not None else None
        trt = devices.installed_tensorrt()
        return cls(tuple(ort_providers()), tuple(devices.cuda_devices()), trt, torch, devices.cuda_driver_version(),
                   trt_import.tensorrt_cuda_major() if trt else None)

    def tensorrt_driver_problem(self) -> str | None:
        """Why TensorRT's CUDA runtime cannot run on this driver, or None (it can, or unknown)."""
        if self.tensorrt is None or trt_import.driver_runs(self.cuda_driver, self.tensorrt_cuda) is not False:
            return None
        major = str(self.cuda_driver).split(".")[0]
        return (f"TensorRT {self.tensorrt} is built for CUDA {self.tensorrt_cuda} but the NVIDIA driver supports "
                f"CUDA up to {self.cuda_driver}: update the driver, or install TensorRT for CUDA {major} (pip "
                f"install tensorrt-cu{major})")


@dataclass
class BackendStatus:
    name: str
    devices: list[str]
    works: bool
    why: str


@dataclass
class Report:
    """What `hamnet doctor` shows."""

    python: str
    platform: str
    packages: dict[str, str | None]
    ort_providers: list[str]
    cuda: list[dict[str, Any]]
    tensorrt: str | None
    cuda_driver: str | None = None
    tensorrt_cuda: int | None = None
    tensorrt_runs: bool | None = None
    """Whether TensorRT's CUDA runtime can run on the driver (None: unknown)."""
    warnings: list[str] = field(default_factory=list)
    backends: list[BackendStatus] = field(default_factory=list)
    auto: str = ""
    auto_reason: str = ""


def probe(env: Environment | None = None, details: bool = True) -> Report:
    """The doctor's report for `env` (default: this machine); never raises. `details`
    lets a backend add a line that imports its library (PyTorch's CUDA check)."""
    from hamnet_deploy.runtime.backends import registry

    env = env or Environment.current()
    packages = {n: dist_version(n) for n in PACKAGES}
    report = Report(python=sys.version.split()[0], platform=f"{platform.system()} {platform.machine()}",
                    packages=packages, ort_providers=list(env.ort_providers), cuda=list(env.gpus),
                    tensorrt=env.tensorrt, cuda_driver=env.cuda_driver, tensorrt_cuda=env.tensorrt_cuda,
                    tensorrt_runs=trt_import.driver_runs(env.cuda_driver, env.tensorrt_cuda) if env.tensorrt else None)
    problem = env.tensorrt_driver_problem()
    if problem:
        report.warnings.append(problem)
    if env.tensorrt:  # load it: bindings without their library say so here
        try:
            trt_import.import_tensorrt("or run with --backend onnxruntime")
        except BackendUnavailable as exc:
            report.warnings.append(str(exc))
    if packages["onnxruntime"] and packages["onnxruntime-gpu"]:
        report.warnings.append("onnxruntime and onnxruntime-gpu are both installed (one Python module): "
                               "pip uninstall -y onnxruntime onnxruntime-gpu, then install only the one you need")
    for name, why in registry.plugin_errors().items():
        report.warnings.append(f"backend plugin {name} failed to load: {why}")
    for b in registry.backends():
        why = b.why_not(env)
        text = why or b.summary
        if why is None and details and b.details is not None:
            try:
                text = b.details(env)
            except Exception as exc:  # the report never fails
                text = f"{b.summary} ({type(exc).__name__}: {exc})"
        report.backends.append(BackendStatus(b.name, list(b.devices), why is None, text))
    return report
