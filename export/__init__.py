"""Export: ONNX, TensorRT engines and the deployment bundle writer."""
