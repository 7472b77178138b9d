"""PyTorch runner: the HAM-Net of a training checkpoint, for machines that have PyTorch
(a reference for the exported models, or detection straight from `hamnet train`'s run
folder).

The only runtime module that touches torch, and only inside functions: importing this
module needs NumPy only. The model definition lives in `training`, imported lazily too.

Contract shared by every backend (see `runtime.backends`): ``TorchRunner(checkpoint)``,
``activate()``, ``infer(features [B, T, D] float32) -> (cas [B, T, C+1], attention
[B, T, 1])``, ``deactivate()``, context manager; attributes ``name``, ``max_t``,
``max_batch``, ``input_dim``. After `activate()` it also knows what a bundle manifest
would say: ``classes``, ``postprocess``, ``receptive_radius``, ``snippet_seconds``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.errors import BackendUnavailable, ConfigError, DataError

TORCH_MISSING = ("PyTorch is not installed: pip install 'hamnet-deploy[train]', or run an exported bundle "
                 "with --backend onnxruntime (hamnet export RUN --out bundle)")
DEVICES = ("auto", "cpu", "cuda", "mps")


def torch_available() -> bool:
    """True when `import torch` works (imports it)."""
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


class TorchRunner:
    """Runs a checkpoint's HAM-Net in eval mode (no dropout, no mask).

    Args:
        checkpoint: a run folder from `hamnet train` (its latest checkpoint) or a
            checkpoints/epoch-N folder.
        device: "auto" (CUDA > MPS > CPU), "cpu", "cuda" or "mps".
        threads: CPU threads for PyTorch (default: PyTorch's own choice).
    """

    name = "torch"

    def __init__(self, checkpoint: str | os.PathLike, *, device: str = "auto", threads: int | None = None) -> None:
        if device not in DEVICES:
            raise ConfigError(f"PyTorch device {device!r}: choose one of {', '.join(DEVICES)}")
        self.checkpoint = Path(checkpoint)
        self.device_name = device
        self.threads = threads
        self.max_t: int | None = None
        self.max_batch: int | None = None
        self.min_t = 1
        self.input_dim: int | None = None
        self.classes: list[str] = []
        self.postprocess: Any = None
        self.receptive_radius: int = 0
        self.snippet_seconds: float = 0.64
        self.epoch: int | None = None
        self._model: Any = None
        self._device: Any = None

    @property
    def is_active(self) -> bool:
        return self._model is not None

    def __enter__(self) -> TorchRunner:
        return self.activate()

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    def __repr__(self) -> str:
        return f"TorchRunner({str(self.checkpoint)!r}, device={self._device or self.device_name})"

    def describe(self) -> str:
        epoch = f", epoch {self.epoch}" if self.epoch is not None else ""
        return f"checkpoint {self.checkpoint}{epoch} on {self._device or self.device_name}"

    def activate(self) -> TorchRunner:
        """Import torch, load the checkpoint (safetensors, no pickle), eval mode."""
        if self._model is not None:
            return self
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailable(TORCH_MISSING) from exc
        from hamnet_deploy.training.checkpoint import load_model
        from hamnet_deploy.training.device import select_device

        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            device = select_device(self.device_name)
        except Exception as exc:  # ConfigError naming the missing device and the fix
            raise BackendUnavailable(f"PyTorch: {exc}") from None
        loaded = load_model(self.checkpoint, device)
        model = loaded.model.eval()
        self._model, self._device = model, device
        self.input_dim = int(model.feature_dim)
        self.receptive_radius = int(model.receptive_radius)
        self.classes = list(loaded.classes)
        self.postprocess = loaded.postprocess
        self.snippet_seconds = float(loaded.postprocess.snippet_seconds)
        self.epoch = loaded.checkpoint.epoch
        return self

    def deactivate(self) -> None:
        """Drop the model (and empty the CUDA cache when it ran there). Idempotent."""
        model, self._model = self._model, None
        if model is not None and getattr(self._device, "type", "") == "cuda":
            import torch

            del model
            torch.cuda.empty_cache()

    def infer(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """features [B, T, D] float32 -> (cas [B, T, C+1], attention [B, T, 1]), float32."""
        if self._model is None:
            raise BackendUnavailable("TorchRunner.infer called before activate(); use `with runner:` or "
                                     "call activate() first")
        x = features
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            kind = getattr(x, "dtype", type(x).__name__)
            raise DataError(f"features must be a float32 NumPy array, got {kind}; convert with "
                            "features.astype(np.float32)")
        if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 1:
            raise DataError(f"features must be a non-empty [batch, T, D] array, got shape {x.shape}")
        if x.shape[2] != self.input_dim:
            raise DataError(f"features are {x.shape[2]}-D but the checkpoint's model takes {self.input_dim}-D; "
                            "use the feature extractor the model was trained with")
        import torch

        with torch.inference_mode():
            cas, att = self._model(torch.from_numpy(np.ascontiguousarray(x)).to(self._device))
        return (cas.float().cpu().numpy().astype(np.float32, copy=False),
                att.float().cpu().numpy().astype(np.float32, copy=False))
