"""A short run of the fuzz targets (fuzz/targets.py) in the normal test suite: every
seed input, then a few dozen hypothesis-generated inputs per target. The long run is
`python fuzz/run.py --minutes 10` (docs/RELIABILITY.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz import run as fuzz_run  # noqa: E402
from fuzz.targets import TARGETS, seeds  # noqa: E402

SHORT = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                 suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seed_inputs(name):
    for data in seeds(name):
        TARGETS[name](data)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_generated_inputs(name):
    starts = seeds(name)
    inputs = st.one_of(
        st.tuples(st.sampled_from(starts), st.binary(max_size=128)).map(lambda t: t[0][:1] + t[1] + t[0][1:]),
        st.tuples(st.integers(0, 3), st.binary(max_size=512)).map(lambda t: bytes([t[0]]) + t[1]),
    )

    @SHORT
    @given(inputs)
    def check(data):
        TARGETS[name](data)

    check()


def test_runner_reports_and_replays(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fuzz_run, "FINDINGS", tmp_path / "findings")
    assert fuzz_run.main(["--minutes", "0.02", "--engine", "hypothesis", "--targets", "npy,evaluate"]) == 0
    out = capsys.readouterr().out
    assert "npy" in out and "evaluate" in out and "0 finding(s)" in out
    saved = tmp_path / "input"
    saved.write_bytes(seeds("npy")[0])
    assert fuzz_run.main(["--replay", "npy", str(saved)]) == 0
    assert not (tmp_path / "findings").exists()


def test_runner_saves_a_finding(tmp_path, capsys, monkeypatch):
    """A target that fails is reported with its saved input, and the exit code is 1."""
    monkeypatch.setattr(fuzz_run, "FINDINGS", tmp_path / "findings")

    def broken(data: bytes) -> None:
        if len(data) > 3:
            raise KeyError("boom")

    monkeypatch.setitem(TARGETS, "npy", broken)
    assert fuzz_run.main(["--minutes", "0.01", "--engine", "hypothesis", "--targets", "npy"]) == 1
    out = capsys.readouterr().out
    assert "KeyError" in out and "1 finding(s)" in out
    assert len(list((tmp_path / "findings").iterdir())) == 1
