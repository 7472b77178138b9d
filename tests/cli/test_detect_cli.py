"""`hamnet detect` end to end: a tiny model trained on the synthetic data, exported with
`hamnet export`, run over the test split's feature files; its results evaluate to the
trainer's mAP; bad files are reported while the rest run; it works without PyTorch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hamnet_deploy.cli import app
from hamnet_deploy.runtime.annotations import load_annotation_json
from hamnet_deploy.runtime.detections import read_results

ROOT = Path(__file__).resolve().parents[2]
D, C = 16, 3
SMALL = ["model.attention_dim=16", "data.num_snippets=24", "data.batch_size=4", "optim.lr=1e-3",
         "eval_every=0", "device=cpu", "epochs=3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Synthetic data, a 3-epoch run (the trainer evaluates the last epoch) and its bundle."""
    from hamnet_deploy.training.data import load_dataset
    from hamnet_deploy.training.recipes import load_recipe
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset
    from hamnet_deploy.training.trainer import METRICS_FILE, train

    root = tmp_path_factory.mktemp("detect")
    data = root / "synth"
    generate_dataset(data, SynthConfig(videos=16, dim=D, num_classes=C, seed=3))
    run = root / "run"
    train(load_recipe("thumos14").with_overrides(SMALL), load_dataset(data), run)
    last = json.loads((run / METRICS_FILE).read_text().splitlines()[-1])
    bundle = root / "bundle"
    result = invoke("export", run, "--out", bundle, "--skip-parity-long")
    assert result.exit_code == 0, result.output
    ann = load_annotation_json(data / "annotations.json")
    test_files = [data / "videos" / f"{v}.npy" for v in ann.names("test")]
    return {"root": root, "data": data, "run": run, "bundle": bundle, "eval": last["eval"],
            "ann": data / "annotations.json", "test_files": test_files, "classes": ann.classes}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def detect(trained, *args):
    return invoke("detect", *args, "--model", trained["bundle"])


def test_results_evaluate_to_the_trainers_map(trained, tmp_path):
    out = tmp_path / "results.json"
    result = detect(trained, *trained["test_files"], "--out", out, "--annotations", trained["ann"])
    assert result.exit_code == 0, result.output
    assert "backend onnxruntime" in result.output and f"{len(trained['test_files'])} videos" in result.output
    report = tmp_path / "eval.json"
    result = invoke("eval", out, "-a", trained["ann"], "--json", report)
    assert result.exit_code == 0, result.output
    got = json.loads(report.read_text())
    want = trained["eval"]
    # ONNX Runtime's outputs differ from PyTorch's by ~1e-6 (float32 summation order), which
    # can move a detection score in its 6th digit; ranks and tIoUs, hence APs, do not move
    # unless two scores tie to that precision. So the mAP matches to float precision.
    assert got["average_mAP"] == pytest.approx(want["average_mAP"], abs=1e-6)
    np.testing.assert_allclose(got["mAP"], want["mAP"], atol=1e-6)
    assert want["average_mAP"] > 0  # a real comparison, not 0 == 0


def test_chunked_batched_run_gives_the_same_detections(trained, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert detect(trained, trained["data"] / "videos", "--out", a).exit_code == 0
    result = detect(trained, trained["data"] / "videos", "--out", b, "--max-t", "16", "--batch-size", "5",
                    "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "overlap/padding" in result.output
    x, y = read_results(a, trained["classes"]), read_results(b, trained["classes"])
    assert len(x) == len(y) > 0 and list(x.video) == list(y.video) and list(x.label) == list(y.label)
    np.testing.assert_allclose(x.score, y.score, atol=1e-4)
    np.testing.assert_allclose(x.segments, y.segments, atol=1e-9)


def test_bad_files_are_reported_and_the_rest_run(trained, tmp_path):
    folder = tmp_path / "feats"
    folder.mkdir()
    good = trained["test_files"][:3]
    for f in good:
        shutil.copy(f, folder / f.name)
    x = np.load(good[0])
    data = (folder / good[0].name).read_bytes()
    (folder / "truncated.npy").write_bytes(data[: len(data) // 2])
    np.save(folder / "wrong_dim.npy", np.zeros((20, D + 4), np.float32))
    nan = x.copy()
    nan[5, 1] = np.nan
    np.save(folder / "has_nan.npy", nan)
    obj = np.empty(1, dtype=object)
    obj[0] = x
    np.save(folder / "pickled.npy", obj, allow_pickle=True)
    out = tmp_path / "results.csv"
    result = detect(trained, folder, "--out", out)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    for name, reason in [("truncated.npy", "truncated or corrupt"), ("wrong_dim.npy", "20-D but 16-D are expected"),
                         ("has_nan.npy", "NaN or infinity"), ("pickled.npy", "object array, refused")]:
        assert f"failed: {folder / name}" in text and reason in text, name
    assert "4 of 7 inputs failed" in text
    dets = read_results(out, trained["classes"])
    assert sorted(dets.videos()) == sorted(f.stem for f in good)
    assert out.read_text().startswith("video,label,score,t_start,t_end")


def test_single_video_table_overrides_and_plots(trained, tmp_path):
    video = trained["test_files"][0]
    result = detect(trained, video, "--rows", "3")
    assert result.exit_code == 0, result.output
    assert f"{video.stem}:" in result.output and "start (s)" in result.output
    base = read_results_via(trained, tmp_path / "base.json", video)
    few = read_results_via(trained, tmp_path / "few.json", video, "--max-detections", "2", "--nms", "hard",
                           "--set", "nms_iou=0.3", "--set", "action_thresholds=0.2,0.5")
    assert 0 < len(few) <= 2 < len(base)
    none = read_results_via(trained, tmp_path / "none.json", video, "--class-threshold", "1.0")
    assert len(none) == 0
    plots = tmp_path / "plots"
    result = detect(trained, *trained["test_files"][:2], "--plot", plots, "--annotations", trained["ann"])
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in plots.iterdir() if p.suffix == ".png")
    assert pngs == sorted(f"{f.stem}.png" for f in trained["test_files"][:2])
    assert all((plots / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    page = (plots / "index.html").read_text()
    assert all(f'href="{p}"' in page and f'src="{p}"' in page for p in pngs)
    assert "ground-truth segments" in page and f"wrote 2 plots and {plots / 'index.html'}" in result.output


def read_results_via(trained, out, video, *args):
    result = detect(trained, video, "--out", out, *args)
    assert result.exit_code == 0, result.output
    return read_results(out, trained["classes"])


@pytest.mark.parametrize("args, needle", [
    (["--set", "nonsense=1"], "--set nonsense: unknown setting"),
    (["--set", "nms_sigma"], "use key=value"),
    (["--nms", "fuzzy"], "nms='fuzzy'"),
    (["--out", "results.txt"], ".json (ActivityNet results format) or .csv"),
    (["--backend", "tensorrt"], "no TensorRT engine"),
    (["--backend", "onnxruntime-int8"], "--int8-cpu"),
    (["--max-t", "4"], "exceed twice the receptive radius"),
    (["--fp16"], "--backend onnxruntime-tensorrt"),
])
def test_usage_errors_exit_2(trained, args, needle):
    result = detect(trained, trained["test_files"][0], *args)
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split()) and "Traceback" not in result.output


def test_missing_model_and_inputs(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HAMNET_MODEL", raising=False)
    result = invoke("detect", trained["test_files"][0])
    assert result.exit_code == 2
    assert "hamnet export RUN --out bundle" in " ".join(result.output.split())
    monkeypatch.setenv("HAMNET_MODEL", str(trained["bundle"]))
    assert invoke("detect", trained["test_files"][0]).exit_code == 0
    result = invoke("detect", tmp_path / "nothing-here")
    assert result.exit_code == 2 and "no feature files" in result.output
    result = invoke("detect", trained["test_files"][0], tmp_path / "typo.npy")
    assert result.exit_code == 1 and "no such file" in result.output


def test_plot_without_matplotlib_says_how_to_install(trained, tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    result = detect(trained, trained["test_files"][0], "--plot", tmp_path / "p")
    assert result.exit_code == 2 and "pip install 'hamnet-deploy[plot]'" in result.output


def test_detect_runs_where_torch_cannot_be_imported(trained, tmp_path):
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text('raise ImportError("fake torch: PyTorch is not installed here")\n')
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(fake), str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    out = tmp_path / "results.json"
    code = ("import sys\n"
            "from hamnet_deploy.cli import main\n"
            "sys.argv = ['hamnet'] + sys.argv[1:]\n"
            "try:\n    main()\n"
            "finally:\n"
            "    assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n")
    proc = subprocess.run([sys.executable, "-c", code, "detect", *map(str, trained["test_files"]),
                           "--model", str(trained["bundle"]), "--out", str(out), "--max-t", "64"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "onnxruntime" in proc.stdout
    ref = tmp_path / "ref.json"
    assert detect(trained, *trained["test_files"], "--out", ref).exit_code == 0
    a, b = read_results(out, trained["classes"]), read_results(ref, trained["classes"])
    assert list(a.video) == list(b.video) and np.allclose(a.score, b.score, atol=1e-4)
    # a checkpoint needs PyTorch: a clear message, not a traceback
    proc = subprocess.run([sys.executable, "-c", code, "detect", str(trained["test_files"][0]), "--model",
                           str(trained["run"])], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "PyTorch is not installed" in proc.stderr, proc.stderr + proc.stdout


def test_bench_times_available_backends_and_skips_the_rest(trained):
    result = invoke("bench", "--model", trained["bundle"], "--t", "8,20", "--repeats", "2",
                    "--backends", "onnxruntime,tensorrt")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "onnxruntime" in text and "GFLOP/s" in text
    assert "skipped tensorrt" in text
    bad = invoke("bench", "--model", trained["bundle"], "--t", "0")
    assert bad.exit_code == 2 and "--t" in bad.output


def test_runtime_flops_formula_matches_the_model():
    from hamnet_deploy.runtime.benchmark import flops_per_snippet
    from hamnet_deploy.training.model import HamNet

    assert flops_per_snippet(2048, 20, 512) == HamNet(2048, 20).flops_per_snippet()
    assert flops_per_snippet(16, 3, 16) == HamNet(16, 3, attention_dim=16).flops_per_snippet()


def test_streamed_chunks_write_the_file_one_pass_writes(trained, tmp_path, monkeypatch):
    """The detection loop runs a chunk of videos at a time and writes as it goes: the
    files do not depend on the chunk size, and a video id repeated in a later chunk
    fails as it does within one."""
    import json

    from hamnet_deploy.commands import detect as command

    files = trained["test_files"]
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / files[0].name).write_bytes(files[0].read_bytes())  # the same id as the first file
    for name in ("one.json", "one.csv"):
        assert detect(trained, *files, "--out", tmp_path / name).exit_code == 0
    monkeypatch.setattr(command, "CHUNK", 2)
    for name in ("few.json", "few.csv"):
        assert detect(trained, *files, "--out", tmp_path / name).exit_code == 0
    assert (tmp_path / "few.json").read_text() == (tmp_path / "one.json").read_text()
    assert (tmp_path / "few.csv").read_text() == (tmp_path / "one.csv").read_text()
    result = detect(trained, *files, twin / files[0].name, "--out", tmp_path / "twin.json")
    assert result.exit_code == 1 and "repeats" in result.output
    doc = json.loads((tmp_path / "twin.json").read_text())
    assert len(doc["results"]) == len(files) and "repeats" in doc["failed"][0]["reason"]


def test_the_results_writer_gives_the_bytes_of_one_json_dump(tmp_path):
    import json

    from hamnet_deploy.runtime.detections import Detections
    from hamnet_deploy.runtime.results import Results, VideoResult
    from hamnet_deploy.runtime.results_file import ResultsFile

    classes = ("a", "b")
    first = Results(classes, [VideoResult("v1", "ok", Detections.from_arrays(classes, "v1", [0, 1], [0.5, 0.1 + 0.2],
                                                                             [1.0, 2.0], [1.5, 22.400000000000002]),
                                          {"a": 0.7, "b": 0.1}, 10)])
    second = Results(classes, [VideoResult("v2", "ok", Detections.empty(classes), {"a": 0.1, "b": 0.2}, 5),
                               VideoResult("x.npy", "failed", Detections.empty(classes), error="bad")])
    whole = Results(classes, first.videos + second.videos)
    for suffix in (".json", ".csv"):
        with ResultsFile(tmp_path / f"r{suffix}") as out:
            out.add(first)
            out.add(second)
        expected = (json.dumps(whole.to_dict(), indent=1) + "\n" if suffix == ".json"
                    else whole.detections.to_csv(**whole._context()))
        assert (tmp_path / f"r{suffix}").read_text() == expected
    with ResultsFile(tmp_path / "empty.json") as out:
        pass
    assert json.loads((tmp_path / "empty.json").read_text())["results"] == {}
    with pytest.raises(RuntimeError), ResultsFile(tmp_path / "broken.json") as out:
        out.add(first)
        raise RuntimeError("stopped half way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.json", "r.csv", "r.json"]  # nothing half-written
