"""What this machine has for HAM-Net inference: packages, ONNX Runtime providers,
TensorRT, CUDA devices, and which backends will therefore work. NumPy/stdlib only;
each optional package is probed without importing PyTorch into the runtime."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

from hamnet_deploy.runtime.devices import cuda_devices, installed_tensorrt


def dist_version(name: str) -> str | None:
    """Installed version of distribution `name`, or None."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


@dataclass
class BackendStatus:
    name: str
    works: bool
    why: str


@dataclass
class Environment:
    python: str
    platform: str
    packages: dict[str, str | None]
    ort_providers: list[str]
    cuda: list[dict[str, Any]]
    tensorrt: str | None
    torch_cuda: bool | None
    warnings: list[str] = field(default_factory=list)
    backends: list[BackendStatus] = field(default_factory=list)


def _ort_providers() -> list[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    try:
        import onnxruntime

        return list(onnxruntime.get_available_providers())
    except Exception:  # a broken install must not break the report
        return []


def _torch_cuda() -> bool | None:
    """None: torch absent. Probed in this process only when asked (`hamnet doctor`)."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        torch = importlib.import_module("torch")
        return bool(torch.cuda.is_available())
    except Exception:
        return None


def probe(check_torch: bool = True) -> Environment:
    """Collect the environment report (never raises)."""
    names = ["hamnet-deploy", "numpy", "onnxruntime", "onnxruntime-gpu", "torch", "onnx", "onnxslim",
             "tensorrt", "cuda-python", "matplotlib", "tritonclient"]
    packages = {n: dist_version(n) for n in names}
    env = Environment(python=sys.version.split()[0], platform=f"{platform.system()} {platform.machine()}",
                      packages=packages, ort_providers=_ort_providers(), cuda=cuda_devices(),
                      tensorrt=installed_tensorrt(), torch_cuda=_torch_cuda() if check_torch else None)
    if packages["onnxruntime"] and packages["onnxruntime-gpu"]:
        env.warnings.append("onnxruntime and onnxruntime-gpu are both installed (one Python module): "
                            "pip uninstall -y onnxruntime onnxruntime-gpu, then install only the one you need")
    gpu = bool(env.cuda)
    prov = set(env.ort_providers)
    trt_ok = env.tensorrt is not None and gpu
    env.backends = [
        BackendStatus("tensorrt", trt_ok, "TensorRT " + env.tensorrt + (" + CUDA GPU" if gpu else ", but no CUDA GPU")
                      if env.tensorrt else "TensorRT not installed (pip install 'hamnet-deploy[trt]' or JetPack)"),
        BackendStatus("onnxruntime-tensorrt", "TensorrtExecutionProvider" in prov and gpu,
                      "provider present" if "TensorrtExecutionProvider" in prov else "needs onnxruntime-gpu with TensorRT"),
        BackendStatus("onnxruntime-cuda", "CUDAExecutionProvider" in prov and gpu,
                      ("provider present" + ("" if gpu else ", but no CUDA GPU")) if "CUDAExecutionProvider" in prov
                      else "needs onnxruntime-gpu (pip install 'hamnet-deploy[gpu]')"),
        BackendStatus("onnxruntime-cpu", "CPUExecutionProvider" in prov,
                      "provider present" if "CPUExecutionProvider" in prov else "onnxruntime not installed"),
        BackendStatus("torch", packages["torch"] is not None,
                      f"PyTorch {packages['torch']}" + (" with CUDA" if env.torch_cuda else "")
                      if packages["torch"] else "PyTorch not installed (only needed for checkpoints)"),
    ]
    return env
