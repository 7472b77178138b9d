"""Shared fixtures: paths to ../shared and small generated data."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
THUMOS = SHARED / "data" / "thumos14-reduced"


@pytest.fixture(scope="session")
def thumos_dir() -> Path:
    if not THUMOS.is_dir():
        pytest.fail(f"{THUMOS} is missing: the tests need ../shared beside the checkout")
    return THUMOS
