"""The one cache folder of every layer: the embedded synthetic dataset, ONNX Runtime's
TensorRT engine cache and the TensorRT builder's timing caches live under it.

Lookup order: `$HAMNET_CACHE` when set, else the platform's user cache folder for
"hamnet" (platformdirs: `$XDG_CACHE_HOME/hamnet` or `~/.cache/hamnet` on Linux,
`~/Library/Caches/hamnet` on macOS, `%LOCALAPPDATA%\\hamnet\\Cache` on Windows).
"""

from __future__ import annotations

import os
from pathlib import Path

from hamnet_deploy.runtime.errors import ConfigError

ENV = "HAMNET_CACHE"


def cache_root() -> Path:
    """The cache folder (not created)."""
    value = os.environ.get(ENV, "").strip()
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("hamnet", appauthor=False))


def cache_dir(*parts: str) -> Path:
    """`cache_root() / parts`, created; ConfigError naming $HAMNET_CACHE when it cannot be."""
    folder = cache_root().joinpath(*parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        source = f"${ENV}" if os.environ.get(ENV, "").strip() else "the user cache folder"
        why = ("a file is in the way" if isinstance(exc, (FileExistsError, NotADirectoryError))
               else exc.strerror or str(exc))
        raise ConfigError(f"cannot use the cache folder {folder} ({source}): {why}; set "
                          f"{ENV} to a writable folder") from None
    return folder
