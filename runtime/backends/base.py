"""The runner contract as a class (Polygraphy's `BaseRunner`): `BaseRunner` owns the life
cycle and every input and output check; a backend writes only the `*_impl` methods.

    with SomeRunner(...) as runner:          # activate(): load libraries, allocate
        cas, att = runner.infer(features)    # [B, T, D] float32 -> [B, T, C+1], [B, T, 1]
    # deactivate(): free everything (idempotent)

Limits a runner knows after `activate` (from the model's metadata or an engine's
profile): `input_dim` (D), `profile` (a `runtime.profile.Profile` bounding batch and T,
or None for any shape). `runtime.inference` reads `max_t`/`max_batch`/`min_t` to chunk
and batch so that every call fits.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from hamnet_deploy.runtime.errors import BackendUnavailable, BundleError, DataError
from hamnet_deploy.runtime.profile import Profile


class BaseRunner:
    """Life cycle (activate, infer, deactivate, context manager) and the checks of every
    input against the model: float32, rank 3, non-empty, D, batch and T limits."""

    name: ClassVar[str] = "runner"
    """The backend's registry name (`--backend`)."""

    def __init__(self) -> None:
        self.input_dim: int | None = None
        self.profile: Profile | None = None
        self.classes_from: tuple[int, str] | None = None
        """(class count, where it was read): the CAS must have that many classes + background."""
        self._active = False

    # ------------------------------------------------------------ backend hooks
    def activate_impl(self) -> None:
        """Load the model; set `input_dim` (and `profile` when shapes are bounded)."""
        raise NotImplementedError

    def infer_impl(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The raw call on checked C-contiguous float32 [B, T, D] features."""
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        """Free what `activate_impl` took."""

    def describe(self) -> str:
        """One line for messages: file, precision, device."""
        return type(self).__name__

    @property
    def what(self) -> str:
        """How messages name the model ("model.onnx", "the engine x.engine")."""
        return "the model"

    # ------------------------------------------------------------ life cycle
    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> BaseRunner:
        if not self._active:
            self.activate_impl()
            self._active = True
        return self

    def deactivate(self) -> None:
        """Free everything; calling it again does nothing."""
        if self._active:
            try:
                self.deactivate_impl()
            finally:
                self._active = False

    def __enter__(self) -> BaseRunner:
        return self.activate()

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()}, {'active' if self._active else 'inactive'})"

    # ------------------------------------------------------------ limits
    @property
    def max_t(self) -> int | None:
        return self.profile.max_t if self.profile is not None else None

    @property
    def min_t(self) -> int:
        return self.profile.min_t if self.profile is not None else 1

    @property
    def max_batch(self) -> int | None:
        return self.profile.max_batch if self.profile is not None else None

    # ------------------------------------------------------------ inference
    def infer(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """features [B, T, D] float32 -> (cas [B, T, C+1], attention [B, T, 1]), float32.

        Raises DataError for a bad input (ShapeOutsideProfile when B or T is outside the
        runner's profile: split long videos into chunks first) and BackendUnavailable
        before `activate` or when the backend returns the wrong shapes."""
        if not self._active:
            raise BackendUnavailable(f"{type(self).__name__}.infer called before activate(); use `with runner:` "
                                     "or call activate() first")
        x = self.check_input(features)
        cas, att = self.infer_impl(x)
        return self.check_output(cas, att, x.shape)

    def check_input(self, features: Any) -> np.ndarray:
        x = features
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            kind = getattr(x, "dtype", type(x).__name__)
            raise DataError(f"features must be a float32 NumPy array, got {kind}; convert with "
                            "features.astype(np.float32)")
        if x.ndim != 3:
            raise DataError(f"features must be [batch, T, D], got shape {x.shape}")
        batch, t, dim = x.shape
        if batch < 1 or t < 1:
            raise DataError(f"features of shape {x.shape} are empty; every video needs at least one snippet")
        if self.input_dim is not None and dim != self.input_dim:
            raise DataError(f"features are {dim}-D but {self.what} takes {self.input_dim}-D; use the feature "
                            "extractor the model was trained with")
        if self.profile is not None:
            self.profile.require(batch, t, self.what)
        return np.ascontiguousarray(x)

    def check_output(self, cas: Any, att: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        cas = np.asarray(cas, dtype=np.float32)
        att = np.asarray(att, dtype=np.float32)
        b, t = shape[0], shape[1]
        if att.ndim == 2:
            att = att[..., None]
        if cas.ndim != 3 or cas.shape[:2] != (b, t) or cas.shape[2] < 2 or att.shape != (b, t, 1):
            raise BackendUnavailable(f"{self.name} returned cas {cas.shape} and attention {att.shape} for input "
                                     f"{tuple(shape)}; expected [{b}, {t}, C+1] and [{b}, {t}, 1]; re-export "
                                     "the bundle")
        if self.classes_from is not None and cas.shape[2] != self.classes_from[0] + 1:
            count, where = self.classes_from
            raise BundleError(f"{where}: lists {count} class names but {self.what} outputs {cas.shape[2] - 1} "
                              "classes (+ background); re-export the bundle, or correct `classes` in that file")
        return cas, att
