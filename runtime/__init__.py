"""NumPy-only runtime: post-processing, evaluation, annotations, backends, bundle format.

Nothing here imports torch, directly or indirectly; onnxruntime and tensorrt are
imported lazily inside the backends that need them.
"""

if __name__ != "hamnet_deploy.runtime":  # the folder sits at the top of the checkout
    raise ImportError(f"import hamnet_deploy.runtime, not {__name__}: the runtime layer is installed "
                      "as part of the hamnet_deploy package")
