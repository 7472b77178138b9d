"""Device choice (cuda > mps > cpu) and mixed-precision settings."""

from __future__ import annotations

import torch

from hamnet_deploy.runtime.devices import parse_device
from hamnet_deploy.runtime.errors import ConfigError


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind, index = parse_device(name, "device=")
    if kind == "auto":
        return select_device("auto")
    device = torch.device(kind, index) if index is not None else torch.device(kind)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: CUDA is not available here; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name}: only {torch.cuda.device_count()} CUDA device(s); pick another index")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device={name}: MPS is not available here; use --device cpu or auto")
    return device


def amp_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """Autocast dtype: on CUDA by default (bf16 where supported, else fp16), never on CPU."""
    if device.type != "cuda" or amp is False:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
