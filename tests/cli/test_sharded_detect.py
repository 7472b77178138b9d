"""Job arrays without Ray: `--shard I/N` runs a deterministic part of the inputs into a
`--shards` folder of JSON lines, `--skip-existing` continues a stopped run, `--merge`
gives exactly the results file one process writes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hamnet_deploy.runtime.shards import parse_shard, read_records, shard_of
from tests.helpers import cli, one_line_error


@pytest.fixture(scope="module")
def feats(tiny_data, tmp_path_factory):
    """The tiny dataset's 16 videos, one of them damaged."""
    folder = tmp_path_factory.mktemp("feats") / "videos"
    shutil.copytree(tiny_data / "videos", folder)
    (folder / "zz_broken.npy").write_bytes(b"\x93NUMPY garbage")
    return folder


@pytest.fixture(scope="module")
def single(feats, built_bundle, tmp_path_factory):
    """What one process writes (JSON and CSV)."""
    out = tmp_path_factory.mktemp("single")
    for name in ("r.json", "r.csv"):
        assert cli("detect", feats, "--model", built_bundle, "--out", out / name).exit_code == 1  # one file failed
    return out


def test_shard_of_is_deterministic_and_balanced():
    assert shard_of("video_test_0000004", 3) == shard_of("video_test_0000004", 3)
    counts = np.bincount([shard_of(f"video_{i:05d}", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(Exception, match="--shard"):
            parse_shard(bad)


def test_three_shards_merged_equal_one_run(feats, built_bundle, single, tmp_path):
    shards = tmp_path / "parts"
    for i in range(3):
        assert cli("detect", feats, "--model", built_bundle, "--shard", f"{i}/3", "--shards", shards).exit_code in (0, 1)
    records = read_records(shards)
    assert len(records) == len(list(feats.iterdir()))  # every input once
    for name in ("r.json", "r.csv"):
        merged = cli("detect", "--merge", shards, "--out", tmp_path / name)
        assert merged.exit_code == 1 and "1 failed inputs" in merged.output  # the damaged file, recorded
        assert (tmp_path / name).read_text() == (single / name).read_text()


def test_a_stopped_run_continues_and_nothing_is_lost_or_doubled(feats, built_bundle, single, tmp_path):
    shards = tmp_path / "parts"
    assert cli("detect", feats, "--model", built_bundle, "--shards", shards).exit_code == 1
    (part,) = shards.glob("part-*.jsonl")
    lines = part.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2])  # killed while writing line 6
    again = cli("detect", feats, "--model", built_bundle, "--shards", shards)
    assert again.exit_code == 2 and "--skip-existing" in again.output
    resumed = cli("detect", feats, "--model", built_bundle, "--shards", shards, "--skip-existing",
                  "--out", tmp_path / "r.json")
    assert resumed.exit_code == 1, resumed.output
    assert "5 already there" in resumed.output
    assert (tmp_path / "r.json").read_text() == (single / "r.json").read_text()


def test_a_failed_input_runs_again_and_its_result_replaces_the_failure(feats, built_bundle, tmp_path):
    folder = tmp_path / "videos"
    shutil.copytree(feats, folder)
    shards = tmp_path / "parts"
    assert cli("detect", folder, "--model", built_bundle, "--shards", shards).exit_code == 1
    assert read_records(shards)["zz_broken"]["status"] == "failed"
    np.save(folder / "zz_broken.npy", np.load(folder / next(p.name for p in feats.glob("*.npy") if p.stem != "zz_broken")))
    assert cli("detect", folder, "--model", built_bundle, "--shards", shards, "--skip-existing").exit_code == 0
    assert read_records(shards)["zz_broken"]["status"] in ("ok", "empty")
    merged = cli("detect", "--merge", shards, "--out", tmp_path / "r.json")
    assert merged.exit_code == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert "zz_broken" in doc["results"] and "failed" not in doc


def test_one_folder_holds_one_model_and_one_set_of_settings(feats, built_bundle, tmp_path):
    shards = tmp_path / "parts"
    assert cli("detect", feats, "--model", built_bundle, "--shard", "0/2", "--shards", shards).exit_code in (0, 1)
    one_line_error(cli("detect", feats, "--model", built_bundle, "--shard", "1/2", "--shards", shards,
                       "--conf", 0.5), "another post-processing settings")


def test_options_a_sharded_run_refuses(feats, built_bundle, tmp_path):
    one_line_error(cli("detect", feats, "--model", built_bundle, "--shard", "0/2", "--shards", tmp_path / "s",
                       "--out", tmp_path / "r.json"), "--merge DIR")
    one_line_error(cli("detect", feats, "--model", built_bundle, "--shard", "0/2", "--shards", tmp_path / "s",
                       "--plot", tmp_path / "p"), "--plot")
    one_line_error(cli("detect", feats, "--model", built_bundle, "--shard", "0/2"), "--shards DIR")
    one_line_error(cli("detect", feats, "--merge", tmp_path, "--out", tmp_path / "r.json"), "drop the feature paths")
    one_line_error(cli("detect", "--merge", tmp_path, "--out", tmp_path / "r.json"), "not a shard folder")
    one_line_error(cli("detect", "--model", built_bundle), "no feature files given")
    assert not (tmp_path / "s").exists()
