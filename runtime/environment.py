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

from hamnet_deploy.runtime import devices

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
    """ONNX Runtime providers, CUDA GPUs, the importable TensorRT and PyTorch versions."""

    ort_providers: tuple[str, ...] = ()
    gpus: tuple[dict[str, Any], ...] = ()
    tensorrt: str | None = None
    torch: str | None = None

    @classmethod
    def current(cls) -> Environment:
        """This machine now (PyTorch is found, never imported)."""
        torch = dist_version("torch") if importlib.util.find_spec("torch") is not None else None
        return cls(tuple(ort_providers()), tuple(devices.cuda_devices()), devices.installed_tensorrt(), torch)


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
                    tensorrt=env.tensorrt)
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
