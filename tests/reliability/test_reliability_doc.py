"""docs/RELIABILITY.md names a test for every fault it lists: each named test exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_the_page_names_exists():
    page = (ROOT / "docs" / "RELIABILITY.md").read_text()
    named = set(re.findall(r"`(?:[\w/]+\.py::)?(test_\w+)", page))
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(), re.M))
    assert len(named) > 50
    assert sorted(named - defined) == []
