"""The PyTorch runner: a HAM-Net of a training checkpoint (or one in memory, as the
trainer's evaluation and the export checks use it) behind the runtime's runner contract
(`runtime.backends.base.BaseRunner`), so the one windowed inference path
(`runtime.inference`) runs PyTorch models too.

It registers itself as the backend `torch` through the `hamnet_deploy.backends` entry
point (`BACKEND`); the runtime never imports it. Importing this module needs NumPy only:
torch is imported when a runner activates.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.backends.base import BaseRunner
from hamnet_deploy.runtime.backends.registry import Backend
from hamnet_deploy.runtime.errors import BackendUnavailable, ConfigError

TORCH_MISSING = ("PyTorch is not installed: pip install 'hamnet-deploy[train]', or run an exported bundle "
                 "with --backend onnxruntime (hamnet export RUN --out bundle)")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")


class TorchRunner(BaseRunner):
    """Runs a HAM-Net in eval mode (no dropout, no mask).

    Args:
        checkpoint: a run folder from `hamnet train` (its latest checkpoint) or a
            checkpoints/epoch-N folder. Or pass `model` instead:
        model: a HAM-Net already in memory (left on its device; its train/eval mode is
            restored when the runner deactivates).
        device: "auto" (CUDA > MPS > CPU), "cpu", "cuda", "cuda:N" or "mps" (checkpoints).
        threads: CPU threads for PyTorch (default: PyTorch's own choice).
        precision: "fp32" (default), or "bf16" / "fp16": the forward under autocast in
            that type (outputs come back as float32).
    """

    name = "torch"

    def __init__(self, checkpoint: str | os.PathLike | None = None, *, model: Any = None, device: str = "auto",
                 threads: int | None = None, precision: str = "fp32") -> None:
        super().__init__()
        if (checkpoint is None) == (model is None):
            raise ConfigError("TorchRunner needs a checkpoint or a model (one of them)")
        if precision not in PRECISIONS:
            raise ConfigError(f"PyTorch precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        self.precision = precision
        if model is None and device not in DEVICES and not str(device).startswith("cuda:"):
            raise ConfigError(f"PyTorch device {device!r}: choose one of {', '.join(DEVICES)} or cuda:N")
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.device_name = device
        self.threads = threads
        self.classes: list[str] = []
        self.postprocess: Any = None
        self.receptive_radius: int = 0
        self.snippet_seconds: float = 0.64
        self.epoch: int | None = None
        self.chosen = ""  # which checkpoint a run folder gave ("best checkpoint (epoch 35, ...)")
        self.config: Any = None  # the checkpoint's TrainConfig, after activate()
        self._given = model
        self._model: Any = None
        self._device: Any = None
        self._was_training = False

    @classmethod
    def from_model(cls, model: Any, precision: str = "fp32") -> TorchRunner:
        """A runner over an in-memory HAM-Net, on the device its weights are on."""
        return cls(model=model, precision=precision)

    @property
    def what(self) -> str:
        return "the checkpoint's model" if self.checkpoint is not None else "the model"

    def describe(self) -> str:
        if self.chosen.startswith(("best", "last")):
            source = f"{self.checkpoint}: {self.chosen}"
        else:
            epoch = f", epoch {self.epoch}" if self.epoch is not None else ""
            source = f"checkpoint {self.checkpoint}{epoch}" if self.checkpoint is not None else "model in memory"
        return f"{source} on {self._device or self.device_name}"

    def activate_impl(self) -> None:
        """Import torch; load the checkpoint (safetensors, no pickle) or take the model; eval mode."""
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailable(TORCH_MISSING) from exc
        if self.threads:
            torch.set_num_threads(int(self.threads))
        if self._given is not None:
            model = self._given
            self._device = next(model.parameters()).device
            self._was_training = bool(model.training)
        else:
            from hamnet_deploy.training.checkpoint import load_model
            from hamnet_deploy.training.device import select_device

            try:
                device = select_device(self.device_name)
            except ConfigError as exc:  # names the missing device and the fix
                raise BackendUnavailable(f"PyTorch: {exc}") from None
            loaded = load_model(self.checkpoint, device)
            model, self._device = loaded.model, device
            self.classes = list(loaded.classes)
            self.postprocess = loaded.postprocess
            self.snippet_seconds = float(loaded.postprocess.snippet_seconds)
            self.epoch = loaded.checkpoint.epoch
            self.chosen = loaded.checkpoint.chosen
            self.config = loaded.config
        self._model = model.eval()
        self.input_dim = int(model.feature_dim)
        self.receptive_radius = int(model.receptive_radius)

    def deactivate_impl(self) -> None:
        """Drop the model (a given one goes back to its mode; CUDA memory of a loaded one is freed)."""
        model, self._model = self._model, None
        if self._given is not None:
            model.train(self._was_training)
        elif getattr(self._device, "type", "") == "cuda":
            import torch

            del model
            torch.cuda.empty_cache()

    def infer_impl(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        x = torch.from_numpy(features).to(self._device, non_blocking=True)
        with torch.inference_mode():
            if self.precision == "fp32":
                cas, att = self._model(x)
            else:
                dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
                with torch.autocast(self._device.type, dtype=dtype):
                    cas, att = self._model(x)
        return cas.float().cpu().numpy(), att.float().cpu().numpy()


def _probe(env: Any, device: str) -> None:
    if env.torch is None:
        raise BackendUnavailable(TORCH_MISSING)
    if device == "cuda" and not env.gpus:
        raise BackendUnavailable("no CUDA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)")


def _create(model: Any, device: str, options: Any, env: Any) -> TorchRunner:
    return TorchRunner(model, device=device, threads=options.threads)


def _details(env: Any) -> str:
    import torch

    return (f"PyTorch {env.torch}" + (" with CUDA" if torch.cuda.is_available() else ", CPU only")
            + ", for training checkpoints")


BACKEND = Backend(
    name="torch", model="checkpoint", devices=("cpu", "cuda", "mps"), probe=_probe, create=_create,
    summary="PyTorch on a training checkpoint (a run folder of hamnet train); needs the train extra",
    details=_details,
)
"""Registered through the `hamnet_deploy.backends` entry point (pyproject.toml)."""
