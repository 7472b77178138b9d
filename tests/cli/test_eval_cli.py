"""`hamnet eval`: tables, JSON output, settings, ground truth in both layouts, errors,
and a run where PyTorch cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hamnet_deploy.commands import eval as eval_cmd
from hamnet_deploy.runtime.annotations import annotations_to_json, load_annotation_json
from hamnet_deploy.runtime.detections import Detections

ROOT = Path(__file__).resolve().parents[2]


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test app"""

    eval_cmd.register(app)
    return app


def run(*args: str):
    return CliRunner().invoke(_app(), ["eval", *map(str, args)])


@pytest.fixture()
def small(tmp_path: Path) -> tuple[Path, Path]:
    """Annotation JSON (2 test videos, 1 validation video, 3 classes) and predictions."""
    gt = {"classes": ["run", "jump", "swim"], "database": {
        "t1": {"subset": "test", "duration": 60.0, "annotations": [
            {"segment": [0, 10], "label": "run"}, {"segment": [20, 30], "label": "jump"}]},
        "t2": {"subset": "test", "duration": 60.0, "annotations": [{"segment": [5, 15], "label": "run"}]},
        "val": {"subset": "validation", "duration": 60.0, "annotations": [{"segment": [0, 5], "label": "swim"}]},
    }}
    ann_path = tmp_path / "gt.json"
    ann_path.write_text(json.dumps(gt))
    dets = Detections.from_arrays(["run", "jump", "swim"], np.array(["t1", "t1", "t2", "t2"], dtype=object),
                                  [0, 1, 0, 0], [0.9, 0.8, 0.7, 0.95], [0, 21, 5, 40], [10, 30, 15, 50])
    pred_path = tmp_path / "pred.json"
    dets.write_json(pred_path)
    return ann_path, pred_path


def test_table_and_json(small, tmp_path):
    ann_path, pred_path = small
    out = tmp_path / "res" / "eval.json"
    result = run(pred_path, "--annotations", ann_path, "--json", out)
    assert result.exit_code == 0, result.output
    assert "subset test" in result.output and "mAP" in result.output
    for t in ("0.1", "0.5", "0.7", "Avg"):
        assert t in result.output
    report = json.loads(out.read_text())
    # run: FP (0.95) TP TP; jump: IoU 0.9 -> TP up to 0.7; swim has no test ground truth
    run_ap = 2 / 3  # precision at recall .5 is lifted to 2/3 by the monotone envelope
    assert report["per_class"]["run"]["AP"][0] == pytest.approx(run_ap, abs=1e-6)
    assert report["per_class"]["jump"]["AP"] == [1.0] * 7
    assert report["per_class"]["swim"]["AP"] == [None] * 7
    assert report["average_mAP"] == pytest.approx((run_ap + 1) / 2, abs=1e-6)
    assert report["settings"]["subset"] == "test" and report["videos"] == 2


def test_per_class_rows_and_thresholds(small):
    ann_path, pred_path = small
    result = run(pred_path, "-a", ann_path, "--per-class", "--thresholds", "activitynet")
    assert result.exit_code == 0, result.output
    for name in ("run", "jump", "swim", "0.95", "0.55"):
        assert name in result.output
    assert "0.1 " not in result.output
    custom = run(pred_path, "-a", ann_path, "--thresholds", "0.3,0.9")
    assert custom.exit_code == 0 and "0.9" in custom.output and "0.5" not in custom.output.split("Avg")[0]


def test_subset_exclude_and_ambiguous(small, tmp_path):
    ann_path, pred_path = small
    every = run(pred_path, "-a", ann_path, "--subset", "all", "--json", tmp_path / "all.json")
    assert every.exit_code == 0, every.output
    assert json.loads((tmp_path / "all.json").read_text())["videos"] == 3
    skip = tmp_path / "skip.txt"
    skip.write_text("# leave out\nt2\n\n")
    amb = tmp_path / "amb.txt"
    amb.write_text("t2 45 46\n")
    res = run(pred_path, "-a", ann_path, "--exclude-file", skip, "--ambiguous", amb, "--json", tmp_path / "x.json")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "x.json").read_text())
    assert report["videos"] == 1 and report["dropped_predictions"] == 2
    assert report["per_class"]["run"]["AP"][0] == 1.0
    forgiven = run(pred_path, "-a", ann_path, "--ambiguous", amb, "--json", tmp_path / "y.json")
    assert forgiven.exit_code == 0 and "Ambiguous" in forgiven.output
    assert json.loads((tmp_path / "y.json").read_text())["per_class"]["run"]["AP"][0] == 1.0


def test_csv_predictions_and_unknown_videos(small, tmp_path):
    ann_path, _ = small
    csv = tmp_path / "p.csv"
    csv.write_text("video,label,score,t_start,t_end\nt1,run,0.9,0,10\nghost,run,0.5,0,10\n")
    result = run(csv, "-a", ann_path, "--subset", "test")
    assert result.exit_code == 0, result.output
    assert "not in gt.json" in result.output and "false positives" in result.output


def test_wtalc_annotation_folder(thumos_dir, tmp_path):
    gt = load_annotation_json(thumos_dir / "thumos14-reduced.json")
    test = gt.select("test")
    names, labels, starts, ends = [], [], [], []
    for name, v in test.videos.items():
        for (s, e), c in zip(v.segments, v.labels, strict=True):
            names.append(name)
            labels.append(int(c))
            starts.append(s)
            ends.append(e)
    dets = Detections.from_arrays(gt.classes, np.array(names, dtype=object), labels, np.ones(len(labels)),
                                  starts, ends)
    pred = tmp_path / "gt_as_pred.json"
    dets.write_json(pred)
    for ann in (thumos_dir, thumos_dir / "thumos14-reduced.json"):
        result = run(pred, "-a", ann, "--json", tmp_path / "r.json", "--force")
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / "r.json").read_text())
        assert report["mAP"] == [1.0] * 7 and report["videos"] == 212


@pytest.mark.parametrize("args,match", [
    (["--thresholds", "abc"], "tIoU thresholds"),
    (["--subset", "train"], "subsets"),
    (["--exclude-file", "nope.txt"], "not found"),
    (["--ambiguous", "nope.txt"], "not found"),
])
def test_errors_exit_2_with_one_line(small, args, match):
    ann_path, pred_path = small
    result = run(pred_path, "-a", ann_path, *args)
    assert result.exit_code == 2
    assert match in result.output and "Traceback" not in result.output


def test_missing_and_malformed_files(small, tmp_path):
    ann_path, pred_path = small
    assert run(tmp_path / "none.json", "-a", ann_path).exit_code == 2
    assert run(pred_path, "-a", tmp_path / "none.json").exit_code == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"results": {"t1": [{"label": "fly", "score": 1, "segment": [0, 1]}]}}')
    result = run(bad, "-a", ann_path)
    assert result.exit_code == 2 and "'fly'" in result.output


def test_registered_in_the_real_cli(small):
    from hamnet_deploy.cli import app

    ann_path, pred_path = small
    result = CliRunner().invoke(app, ["eval", str(pred_path), "--annotations", str(ann_path)])
    assert result.exit_code == 0, result.output
    assert "mAP" in result.output


BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""


def test_eval_runs_without_torch(small, tmp_path):
    ann_path, pred_path = small
    code = BLOCK_TORCH + (
        "from hamnet_deploy.commands import eval as e\n"
        "import typer\n"
        "from typer.testing import CliRunner\n"
        "app = typer.Typer()\n"
        "app.callback()(lambda: None)\n"
        "e.register(app)\n"
        f"r = CliRunner().invoke(app, ['eval', {str(pred_path)!r}, '-a', {str(ann_path)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "ok" in out.stdout


def test_annotations_json_round_trip_is_accepted(small, tmp_path):
    ann_path, pred_path = small
    again = tmp_path / "again.json"
    again.write_text(json.dumps(annotations_to_json(load_annotation_json(ann_path))))
    assert run(pred_path, "-a", again).exit_code == 0
