"""Inference backends behind one runner contract (Polygraphy-style).

Every runner takes a model file and its manifest entry and exposes::

    runner = Runner(path, manifest_entry)
    runner.activate()                      # load libraries, allocate, may raise BackendUnavailable
    cas, attention = runner.infer(features)  # [B, T, D] float32 -> [B, T, C+1], [B, T, 1]
    runner.deactivate()                    # free everything; idempotent

and works as a context manager (`with Runner(...) as r:`). Attributes: `name`,
`max_t`, `max_batch`, `input_dim`. Each backend imports its library (onnxruntime,
tensorrt, ...) lazily inside `activate`, so importing this package needs NumPy only.
"""
