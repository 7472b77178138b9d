"""TensorRT optimisation profiles: the one place their rules live.

A profile bounds the input `features` [batch, T, D] of an engine (native TensorRT or ONNX
Runtime's TensorRT provider): 1 <= min_t <= opt_t <= max_t and 1 <= min_batch <=
max_batch. TensorRT never clamps a shape outside it, so a runner checks first
(`Profile.require`) and the caller chunks long videos (exact with receptive-radius
context, `runtime.windows`). A batch smaller than `min_batch` is allowed: batch items are
independent, so a runner pads it with zero rows (static DLA engines fix the batch).
"""

from __future__ import annotations

from dataclasses import dataclass

from hamnet_deploy.runtime.errors import DataError
from hamnet_deploy.runtime.settings import Invalid, Settings, option


class ShapeOutsideProfile(DataError):
    """An input's batch or T lies outside the engine's optimisation profile.

    TensorRT never clamps: the caller must split the video into chunks (with
    `receptive_radius` snippets of context on each side, which keeps them exact) or
    rebuild the engine with a larger profile.
    """


def check_order(min_t: int, opt_t: int, max_t: int, max_batch: int, min_batch: int | None = None,
                flags: bool = False) -> None:
    """Raise Invalid unless min_t <= opt_t <= max_t and min_batch <= max_batch (every value
    is already a whole number >= 1); `flags` names the command-line options."""
    t = ("--min-t <= --opt-t <= --max-t" if flags else "min_t <= opt_t <= max_t")
    if not min_t <= opt_t <= max_t:
        raise Invalid("min_t", min_t, f"needs {t} (got {min_t}, {opt_t}, {max_t})")
    if min_batch is not None and min_batch > max_batch:
        raise Invalid("min_batch", min_batch, f"needs min_batch <= max_batch ({max_batch})")


@dataclass(frozen=True)
class Profile(Settings):
    """An engine's T range and batch range (as a bundle manifest records it)."""

    where = "shape profile"  # inside a manifest its problems are the manifest's (BundleError)

    min_t: int = option(1, ge=1)
    opt_t: int = option(512, ge=1)
    max_t: int = option(4096, ge=1)
    max_batch: int = option(4, ge=1)
    min_batch: int | None = option(None, ge=1)
    """Smallest batch the engine takes; None = 1 (a static DLA engine: max_batch)."""

    def check(self) -> None:
        check_order(self.min_t, self.opt_t, self.max_t, self.max_batch, self.min_batch)

    @property
    def smallest_batch(self) -> int:
        return self.min_batch or 1

    @property
    def static(self) -> bool:
        """One T only (DLA engines: min = opt = max)."""
        return self.min_t == self.max_t

    def accepts(self, batch: int, t: int) -> bool:
        """True when a [batch, t, D] input lies inside the profile (a batch below
        min_batch counts: the runner pads it)."""
        return 1 <= int(batch) <= self.max_batch and self.min_t <= int(t) <= self.max_t

    def require(self, batch: int, t: int, name: str = "the engine") -> None:
        """Raise ShapeOutsideProfile, telling the caller to chunk, unless `accepts`."""
        if self.accepts(batch, t):
            return
        t_range = f"T = {self.min_t}" if self.static else f"T {self.min_t}..{self.max_t}"
        raise ShapeOutsideProfile(
            f"input of batch {batch} and T = {t} is outside the profile of {name} (batch 1..{self.max_batch}, "
            f"{t_range}); TensorRT never clamps: split the video into chunks of at most {self.max_t} snippets "
            f"with receptive-radius context (and batches of at most {self.max_batch}), or rebuild the engine "
            "with a larger --max-t / --max-batch")

    def shapes(self, dim: int) -> tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]:
        """(min, opt, max) shapes of `features`: the opt batch is max_batch (the runtime
        fills batches with chunks of long videos, so full batches are the common case)."""
        return ((self.smallest_batch, self.min_t, dim), (self.max_batch, self.opt_t, dim),
                (self.max_batch, self.max_t, dim))
