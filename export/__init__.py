"""Export: ONNX, TensorRT engines and the deployment bundle writer."""

if __name__ != "hamnet_deploy.export":  # the folder sits at the top of the checkout
    raise ImportError(f"import hamnet_deploy.export, not {__name__}: the export layer is installed "
                      "as part of the hamnet_deploy package")
