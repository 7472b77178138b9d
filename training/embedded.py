"""The embedded synthetic dataset that `hamnet train` (and `hamnet demo`) use when no
`--data` is given: generated once per (dim, videos, seed) into a cache folder.

The folder name also carries a short hash of the generator's settings and version, so
a change of the generator's defaults (or of `overrides`) never reuses a stale dataset."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hamnet_deploy.runtime.cache import cache_dir
from hamnet_deploy.runtime.fileio import sha256_file, staging
from hamnet_deploy.training.synth import SYNTH_VERSION, SynthConfig, generate_dataset


def config_hash(cfg: SynthConfig) -> str:
    """8 hex digits identifying the generator version and every setting of `cfg` (a
    timelines file by its content, so the same file elsewhere gives the same hash)."""
    settings = cfg.to_dict()
    if cfg.timelines:
        try:
            settings["timelines"] = sha256_file(cfg.timelines)
        except OSError:
            pass  # generate_dataset reports the missing file
    raw = json.dumps({"version": SYNTH_VERSION, "config": settings}, sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:8]


def embedded_dataset(dim: int = 2048, videos: int = 412, seed: int = 0, timelines: str | None = None,
                     progress=None, overrides: dict | None = None) -> Path:
    """Folder of the synthetic dataset for these settings, generating it on first use.

    `overrides` sets other `SynthConfig` fields (strengths, ...). Generation writes into
    a temporary folder that is renamed into place, so an interrupted run never leaves a
    half-written cache entry.
    """
    cfg = SynthConfig(**{**(overrides or {}), "videos": videos, "dim": dim, "seed": seed, "timelines": timelines})
    tag = f"synth-d{dim}-v{videos}-s{seed}" + ("-real" if timelines else "") + f"-{config_hash(cfg)}"
    target = cache_dir() / tag
    if (target / "annotations.json").is_file():
        return target
    with staging(target) as tmp:  # another process that publishes first wins
        generate_dataset(tmp, cfg, progress=progress)
    return target
