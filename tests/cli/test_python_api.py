"""The Python API: `Detector` (the README's example, run as written), the results it
returns and writes, and `hamnet detect` listing every video it processed."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_D
from tests.helpers import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Detection: `hamnet detect`"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(built_bundle, tiny_data, tmp_path, monkeypatch):
    shutil.copytree(built_bundle, tmp_path / "bundle")
    shutil.copytree(tiny_data / "videos", tmp_path / "feats")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), scope)  # noqa: S102 - our own README
    results = scope["results"]
    videos = sorted(p.stem for p in (tmp_path / "feats").iterdir())
    assert sorted(r.video for r in results) == videos and all(r.ok for r in results)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert sorted(doc["results"]) == videos


def test_detector_on_files_arrays_and_bad_inputs(built_bundle, tiny_data):
    from hamnet_deploy import Detector, Results
    from hamnet_deploy.runtime.errors import ConfigError

    files = sorted((tiny_data / "videos").iterdir())[:2]
    rng = np.random.default_rng(0)
    with Detector(built_bundle, device="cpu", class_threshold=0.0, max_detections=5) as det:
        assert det.backend == "onnxruntime" and det.classes == json.loads(
            (built_bundle / "manifest.json").read_text())["classes"]
        results = det([*files, rng.standard_normal((40, TINY_D)).astype(np.float32), "missing.npy",
                       {"narrow": np.zeros((5, 3), np.float32)}])
        assert isinstance(results, Results) and len(results) == 5
        ok = [r for r in results if r.ok]
        assert [r.video for r in ok] == [files[0].stem, files[1].stem, "video_2"]
        for r in ok:
            assert 0 < len(r.detections) <= 5 * len(det.classes)  # max_detections per video
            assert set(r.class_probs) == set(det.classes)
            assert all(0.0 <= p <= 1.0 for p in r.class_probs.values()) and r.snippets > 0
            top = r.rows()[0]
            assert top["class_score"] == r.class_probs[top["label"]]
        failed = dict(results.failed)
        assert "no such file" in failed["missing.npy"]
        assert f"video 'narrow': features are 3-D but {TINY_D}-D" in failed["narrow"]
        # the same video through a file and as an array gives the same detections
        again = det({"same": np.load(files[0])})[0]
        assert np.array_equal(again.detections.score, results[0].detections.score)
        assert results.timing["seconds"] > 0
        frame = results.to_pandas()
        assert list(frame.columns) == ["video", "label", "score", "start", "end", "class_score"]
        assert len(frame) == len(results.detections)
    with pytest.raises(ConfigError, match="nms"):
        Detector(built_bundle, nms="sometimes")
    with pytest.raises(ConfigError, match="is not a feature file"):
        Detector(built_bundle)([3.5])


def test_detect_lists_every_video_it_processed(built_bundle, tmp_path):
    """24 videos at --class-threshold 0.99 (most find nothing): 24 entries in the JSON and
    the CSV; a bad file is recorded in both."""
    feats = tmp_path / "feats"
    feats.mkdir()
    rng = np.random.default_rng(1)
    for i in range(24):
        np.save(feats / f"v{i:02d}.npy", rng.standard_normal((int(rng.integers(5, 40)), TINY_D)).astype(np.float32))
    (feats / "broken.npy").write_bytes(b"not a numpy file")
    for name in ("r.json", "r.csv"):
        out = tmp_path / name
        result = cli("detect", feats, "--model", built_bundle, "--class-threshold", 0.99, "--out", out)
        assert result.exit_code == 1, result.output  # the broken file
        if name == "r.json":
            doc = json.loads(out.read_text())
            assert sorted(doc["results"]) == [f"v{i:02d}" for i in range(24)]
            assert [f["input"] for f in doc["failed"]] == [str(feats / "broken.npy")]
        else:
            rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
            assert {r[0] for r in rows if r[-1] in ("ok", "none")} == {f"v{i:02d}" for i in range(24)}
            assert [r[0] for r in rows if r[-1].startswith("failed: ")] == [str(feats / "broken.npy")]
    assert os.path.getsize(tmp_path / "r.json") > 0


def test_conf_and_the_deploy_preset(built_bundle, tiny_data, tmp_path):
    """`--conf` keeps exactly the released detections scoring at least that; `deploy`
    gives hard-NMS lists of at most 5 per class and 20 per video, none negative; the
    classification file holds each video's class probabilities."""
    from hamnet_deploy import Detector

    videos = tiny_data / "videos"
    with Detector(built_bundle, class_threshold=0.0) as det:
        released = det([videos])
    with Detector(built_bundle, class_threshold=0.0, conf=0.5) as det:
        confident = det([videos])
    for a, b in zip(released, confident, strict=True):
        keep = a.detections.score >= 0.5
        assert np.array_equal(a.detections.score[keep], b.detections.score)
        assert np.array_equal(a.detections.t_start[keep], b.detections.t_start)
    with Detector(built_bundle, class_threshold=0.0, preset="deploy") as det:
        deployed = det([videos])
    assert len(deployed.detections) < len(released.detections)
    for r in deployed:
        d = r.detections
        assert len(d) <= 20 and (d.score >= 0).all()
        for c in range(len(d.classes)):
            mine = d.select(d.label == c)
            assert len(mine) <= 5
            s, e = mine.t_start, mine.t_end
            inter = np.clip(np.minimum(e[:, None], e[None]) - np.maximum(s[:, None], s[None]), 0, None)
            iou = inter / (e - s)[:, None].__add__((e - s)[None]).__sub__(inter)
            np.fill_diagonal(iou, 0)
            assert (iou < 0.5 + 1e-9).all()  # hard NMS
    out = tmp_path / "classes.json"
    result = cli("detect", videos, "--model", built_bundle, "--preset", "deploy", "--conf", 0.1, "--out-classes", out)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())["results"]
    assert sorted(doc) == sorted(r.video for r in released)
    first = released[0]
    assert {e["label"]: e["score"] for e in doc[first.video]} == pytest.approx(first.class_probs, abs=1e-8)
    one = cli("detect", videos, "--model", built_bundle, "--preset", "fast")
    assert one.exit_code == 2 and "--preset 'fast': choose one of released, deploy" in one.output


def test_train_from_python_takes_the_cli_settings(tiny_data, tmp_path):
    """`hamnet_deploy.train(...)` is what `hamnet train` runs: the same settings give the
    same run config, and bad settings the same one-line errors (as exceptions)."""
    import hamnet_deploy
    from hamnet_deploy.runtime.errors import ConfigError
    from hamnet_deploy.runtime.events import Recorder

    small = ["model.attention_dim=8", "data.num_snippets=8", "data.batch_size=4"]
    events = Recorder()
    outcome = hamnet_deploy.train(tiny_data, out=tmp_path / "api", epochs=1, seed=3, sets=small, report=events)
    assert outcome.epochs == 1 and (tmp_path / "api" / "latest.json").is_file()
    assert [e.name for e in events.events][:2] == ["train.load", "train.load"] and events.named("train.epoch")
    args = [a for s in small for a in ("--set", s)]
    assert cli("train", "--data", tiny_data, "--out", tmp_path / "cli", "--epochs", 1, "--seed", 3, *args).exit_code == 0
    api_cfg = json.loads((tmp_path / "api" / "config.json").read_text())
    cli_cfg = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert {**api_cfg, "output_dir": None} == {**cli_cfg, "output_dir": None}
    with pytest.raises(ConfigError, match="--seed -1: must be >= 0"):
        hamnet_deploy.train(tiny_data, out=tmp_path / "bad", seed=-1)


def test_export_from_python_takes_the_cli_settings(tiny_run, tiny_data, tmp_path):
    """`hamnet_deploy.export_bundle(...)` is what `hamnet export` runs: a checkpoint to a
    bundle the Detector runs, the same option checks, and an in-place INT8 update."""
    import hamnet_deploy
    from hamnet_deploy import Detector
    from hamnet_deploy.runtime.errors import ConfigError

    outcome = hamnet_deploy.export_bundle(tiny_run, out=tmp_path / "b", skip_parity_long=True)
    assert outcome.bundle == tmp_path / "b" and (tmp_path / "b" / "manifest.json").is_file()
    with Detector(outcome.bundle) as det:
        assert det([sorted((tiny_data / "videos").iterdir())[0]])[0].ok
    with pytest.raises(ConfigError, match="--opset applies when exporting a checkpoint"):
        hamnet_deploy.export_bundle(outcome.bundle, int8_cpu=True, calib=tiny_data, opset=17)
    hamnet_deploy.export_bundle(outcome.bundle, int8_cpu=True, calib=tiny_data)
    assert (tmp_path / "b" / "model.int8.onnx").is_file()
