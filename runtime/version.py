"""The package version, defined once here so every layer (the bundle writer, the ONNX
metadata, the CLI) reads the same value without importing a layer above its own."""

__version__ = "0.1.0"
