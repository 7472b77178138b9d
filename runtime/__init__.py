"""NumPy-only runtime: post-processing, evaluation, annotations, backends, bundle format.

Nothing here imports torch, directly or indirectly; onnxruntime and tensorrt are
imported lazily inside the backends that need them.
"""
