"""Fuzz targets for the settings readers: post-processing settings (a bundle's or a
checkpoint's `postprocess` block), training recipes (JSON files) and `--set key=value`
overrides of `hamnet train` and `hamnet detect`. Each reader may raise only the typed
errors; what it accepts must survive a round trip through its JSON form, and every
number it keeps is finite and within what the settings declare."""

from __future__ import annotations

import json
import math
from typing import Any

from fuzz.inputs import BIG, TEXTS, Draw, _content, _documented, _file, _json_bytes, _json_value


def _round_trips(cfg: Any) -> None:
    """`cfg` (a Settings object) as JSON and back is equal, and holds no non-finite float."""
    data = cfg.to_dict()
    text = json.dumps(data, allow_nan=False)  # ValueError (a finding) for NaN or infinity
    assert type(cfg).from_dict(json.loads(text)) == cfg


def target_postprocess_config(data: bytes) -> None:
    """`PostprocessConfig.from_dict` on arbitrary mappings; what it accepts round-trips."""
    from hamnet_deploy.runtime.postprocess import PostprocessConfig

    d = Draw(data)
    keys = [*PostprocessConfig().to_dict(), "unknown", ""]
    raw: Any = {}
    for _ in range(d.int(0, 6)):
        raw[d.choice(keys)] = _json_value(d)
    if d.int(0, 15) == 0:
        raw = _json_value(d)
    cfg = _documented(lambda: PostprocessConfig.from_dict(raw))
    if cfg is not None:
        _round_trips(cfg)


def _recipe_seeds() -> list[Any]:
    from hamnet_deploy.training.recipes import RECIPES_DIR

    return [json.loads(p.read_text()) for p in sorted(RECIPES_DIR.glob("*.json"))]


def target_recipe(data: bytes) -> None:
    """A recipe JSON file (`hamnet train --recipe FILE`) through `load_recipe`: the
    shipped recipes mutated at the JSON or byte level, or raw bytes."""
    from hamnet_deploy.training.recipes import load_recipe

    seeds = _recipe_seeds()
    path = _file("recipe.json", _content(data, [_json_bytes(s) for s in seeds], seeds))
    cfg = _documented(lambda: load_recipe(path))
    if cfg is not None:
        _round_trips(cfg)
        assert cfg.epochs >= 1 and cfg.data.batch_size >= 1 and math.isfinite(cfg.optim.lr)


def _keys(cfg: Any, prefix: str = "") -> list[str]:
    out = []
    for key, value in cfg.to_dict().items():
        out.append(prefix + key)
        if isinstance(value, dict) and hasattr(getattr(cfg, key, None), "to_dict"):
            out += _keys(getattr(cfg, key), f"{prefix}{key}.")
    return out


def target_overrides(data: bytes) -> None:
    """`--set key=value` items (command-line text, non-UTF-8 bytes as surrogate escapes)
    on the training config and on the post-processing settings, as `hamnet train --set`
    and `hamnet detect --set` apply them."""
    from hamnet_deploy.runtime.postprocess import PostprocessConfig
    from hamnet_deploy.training.config import TrainConfig

    d = Draw(data)
    base = d.choice([TrainConfig(), PostprocessConfig()])
    keys = [*_keys(base), "unknown", "", "model.", ".x", "model.attention_dim.x"]
    items = []
    for _ in range(d.int(1, 4)):
        value = d.choice([*TEXTS, str(BIG), str(d.int(-(2**70), 2**70)), repr(d.float(-1e6, 1e6))])
        if d.int(0, 7) == 0:  # arbitrary bytes, as a shell passes them
            value = d.raw(d.int(0, 12)).decode("utf-8", "surrogateescape")
        sep = "=" if d.int(0, 15) else d.choice(["", "==", ":"])
        items.append(f"{d.choice(keys)}{sep}{value}")
    cfg = _documented(lambda: base.with_overrides(items))
    if cfg is not None:
        _round_trips(cfg)
