"""hamnet-deploy: HAM-Net weakly-supervised temporal action localization, from training to the edge.

Layers (each only imports the ones before it): `hamnet_deploy.runtime` (NumPy only),
`hamnet_deploy.training` (PyTorch), `hamnet_deploy.export` (ONNX, TensorRT, bundle writer)
and the command line (`hamnet_deploy.cli`). Importing this package imports nothing
heavy, so `hamnet_deploy.runtime` keeps working where only NumPy is installed.

    from hamnet_deploy import Detector
    results = Detector("bundle")(["video.npy"])
    results.to_json("results.json")
"""

from typing import Any

from hamnet_deploy.runtime.version import __version__

__all__ = ["Detector", "Results", "__version__", "export_bundle", "train"]

_LAZY = {"Detector": "hamnet_deploy.runtime.detector", "Results": "hamnet_deploy.runtime.results",
         "train": "hamnet_deploy.training.api", "export_bundle": "hamnet_deploy.export.api"}


def __getattr__(name: str) -> Any:
    """`from hamnet_deploy import Detector` (or `train`, `export_bundle`) imports its layer
    only when asked."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hamnet_deploy' has no attribute {name!r}")
