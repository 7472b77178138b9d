"""The embedded synthetic dataset that `hamnet train` (and `hamnet demo`) use when no
`--data` is given: generated once per (dim, videos, seed) into a cache folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from training.synth import SynthConfig, generate_dataset


def cache_root() -> Path:
    """$HAMNET_CACHE, else $XDG_CACHE_HOME/hamnet, else ~/.cache/hamnet."""
    if os.environ.get("HAMNET_CACHE"):
        return Path(os.environ["HAMNET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hamnet"


def embedded_dataset(dim: int = 2048, videos: int = 412, seed: int = 0, timelines: str | None = None,
                     progress=None) -> Path:
    """Folder of the synthetic dataset for these settings, generating it on first use.

    Generation writes into a temporary folder that is renamed into place, so an
    interrupted run never leaves a half-written cache entry.
    """
    tag = f"synth-d{dim}-v{videos}-s{seed}" + ("-real" if timelines else "")
    target = cache_root() / tag
    if (target / "annotations.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{tag}-", dir=target.parent))
    try:
        cfg = SynthConfig(videos=videos, dim=dim, seed=seed, timelines=timelines)
        generate_dataset(tmp, cfg, progress=progress)
        if target.exists():  # another process won the race
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
