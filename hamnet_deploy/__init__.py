"""hamnet-deploy: HAM-Net weakly-supervised temporal action localization, from training to the edge.

Layers (each only imports the ones before it): `hamnet_deploy.runtime` (NumPy only),
`hamnet_deploy.training` (PyTorch), `hamnet_deploy.export` (ONNX, TensorRT, bundle writer)
and the command line (`hamnet_deploy.cli`). Importing this package imports nothing
heavy, so `hamnet_deploy.runtime` keeps working where only NumPy is installed.
"""

from hamnet_deploy.runtime.version import __version__

__all__ = ["__version__"]
