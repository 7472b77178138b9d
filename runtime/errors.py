"""Typed exceptions: every bad input raises one of these with a one-line message
that names the problem and the fix. The CLI prints the message and exits 2."""


class HamnetError(Exception):
    """Base class of every error the package raises on purpose."""


class DataError(HamnetError):
    """A dataset, feature file or annotation file is missing, malformed or inconsistent."""


class ConfigError(HamnetError):
    """A setting or a combination of settings is invalid."""


class BundleError(HamnetError):
    """A model bundle, checkpoint or engine is missing, corrupt or does not match."""


class BackendUnavailable(HamnetError):
    """The requested inference backend (TensorRT, CUDA, ...) is not usable here."""
