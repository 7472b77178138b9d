"""Recipes: the published training settings as JSON files (`training/recipes/<name>.json`:
`thumos14`, `activitynet12`), or any JSON file of settings the user names. Partial files
are fine: missing settings keep the SPEC defaults."""

from __future__ import annotations

from pathlib import Path

from hamnet_deploy.runtime.errors import ConfigError
from hamnet_deploy.runtime.fileio import read_json
from hamnet_deploy.runtime.settings import suggest
from hamnet_deploy.training.config import TrainConfig

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def available_recipes() -> list[str]:
    """Names of the recipes shipped in ``training/recipes``."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def load_recipe(name_or_path: str | Path) -> TrainConfig:
    """Load a recipe by name (``thumos14``, ``activitynet12``) or by JSON file path."""
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix == ".json" or path.is_file()):
        path = RECIPES_DIR / f"{text}.json"
        if not path.is_file():
            names = available_recipes()
            raise ConfigError(f"unknown recipe {text!r}: choose one of {', '.join(names)} or give a .json "
                              f"path{suggest(text, names)}")
    data = read_json(path, "recipe file", ConfigError, "fix or re-create it",
                     missing="recipe file does not exist: check the path")
    return TrainConfig.from_dict(data, where=str(path))
