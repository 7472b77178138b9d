"""Inference backends behind one runner contract (Polygraphy-style).

- `base.BaseRunner`: the life cycle (activate, infer, deactivate, context manager) and
  every input/output check; a backend writes only `activate_impl`, `infer_impl`,
  `deactivate_impl`.
- `registry`: the one table of backends (name, model file, devices, probe, factory,
  auto rank), read by `--backend auto`, the CLI's choices, `hamnet doctor`, `hamnet bench`.
- `select.select_runner`: the backend for a model here, and why.

Each backend imports its library (onnxruntime, tensorrt) lazily inside `activate`, so
importing this package needs NumPy only.
"""
