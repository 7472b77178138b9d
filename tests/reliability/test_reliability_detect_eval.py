"""Bad inputs and faults for `hamnet detect` and `hamnet eval` (docs/RELIABILITY.md).

Every case runs the real command line (typer's CliRunner, in process) and checks the
outcome: a one-line `error: ...` and exit code 2 for a usage or model error, exit code
1 plus a `failed:` line per bad feature file for detect (the good files still run),
never a traceback, and no file left half-written.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import add_fake_engine, cli, one_line_error

D, C = 8, 2


# --------------------------------------------------------------------------- #
#                                  fixtures                                   #
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny dataset, an untrained 2-class model exported to a bundle, and a results file."""

    from hamnet_deploy.export.options import ExportOptions
    from hamnet_deploy.export.pipeline import run_export
    from hamnet_deploy.training.checkpoint import save_checkpoint
    from hamnet_deploy.training.config import DataConfig, ModelConfig, TrainConfig
    from hamnet_deploy.training.model import HamNet
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("reliability")
    data = root / "data"
    generate_dataset(data, SynthConfig(videos=6, dim=D, num_classes=C, seed=4))
    ann = json.loads((data / "annotations.json").read_text())
    cfg = TrainConfig(model=ModelConfig(feature_dim=D, num_classes=C, attention_dim=8),
                      data=DataConfig(feature_dim=D), epochs=1, output_dir=str(root / "run"))
    import torch

    torch.manual_seed(0)
    from hamnet_deploy.runtime.postprocess import PostprocessConfig

    save_checkpoint(root / "run", 1, HamNet.from_config(cfg.model), None,
                    {"classes": ann["classes"], "config": cfg.to_dict(), "postprocess": PostprocessConfig().to_dict(),
                     "feature_dim": D, "num_classes": C})
    run_export(root / "run", root / "bundle", ExportOptions(skip_parity_long=True))
    video = sorted((data / "videos").iterdir())[0]
    results = root / "results.json"
    r = cli("detect", data / "videos", "--model", root / "bundle", "--out", results)
    assert r.exit_code == 0, r.output
    return {"root": root, "data": data, "ann": data / "annotations.json", "bundle": root / "bundle",
            "run": root / "run", "video": video, "results": results, "classes": ann["classes"],
            "annotations": ann}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Nothing here may fall back to generating the embedded dataset in the user's cache."""
    monkeypatch.setenv("HAMNET_CACHE", str(tmp_path / "cache"))


def failed_file(result, needle: str) -> str:
    """detect's per-file failure: exit 1, a `failed:` line naming the reason, no traceback."""
    text = result.output
    assert result.exit_code == 1, text
    assert "Traceback" not in text and isinstance(result.exception, SystemExit), text
    lines = [x for x in text.splitlines() if x.startswith("failed:")]
    assert len(lines) == 1 and needle in lines[0], text
    return lines[0]


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def good_features(T: int = 20) -> np.ndarray:
    return np.random.default_rng(T).normal(size=(T, D)).astype(np.float32)


# --------------------------------------------------------------------------- #
#                        detect: bad feature files (exit 1)                   #
# --------------------------------------------------------------------------- #
def _huge_header() -> bytes:
    from numpy.lib import format as npy_format

    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**12, D)})
    return buf.getvalue() + b"\0" * 64


def _bad_deflate_npz() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, features=good_features(200))
    raw = bytearray(buf.getvalue())
    raw[60:90] = b"\xff" * 30  # inside the compressed stream
    return bytes(raw)


def _text_npz() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("features.npy", b"not an array")
    return buf.getvalue()


FEATURE_CASES = {
    # name: (file name, bytes, reason shown)
    "npy-truncated-header": ("v.npy", npy_bytes(good_features())[:40], "truncated or corrupt"),
    "npy-truncated-data": ("v.npy", npy_bytes(good_features())[:-7], "truncated or corrupt"),
    "npy-huge-shape-in-header": ("v.npy", _huge_header(), "header says shape"),
    "npy-garbled-header": ("v.npy", npy_bytes(good_features()).replace(b"'shape': (", b"'shape': ((("), "corrupt"),
    "npy-random-bytes": ("v.npy", bytes(range(256)) * 4, "not a NumPy .npy/.npz file"),
    "npy-empty-file": ("v.npy", b"", "empty file"),
    "npy-pickle": ("v.npy", pickle.dumps(good_features()), "a pickle, refused"),
    "npy-object-array": ("v.npy", npy_bytes(np.array([good_features()], dtype=object), True), "object array"),
    "npz-truncated": ("v.npz", npy_bytes(good_features())[:0] + b"PK\x03\x04" + b"\0" * 40, "truncated or corrupt"),
    "npz-corrupt-deflate": ("v.npz", _bad_deflate_npz(), "truncated or corrupt"),
    "npz-member-not-an-array": ("v.npz", _text_npz(), "not a NumPy array"),
    "int32": ("v.npy", npy_bytes(good_features().astype(np.int32)), "2-D floating array"),
    "bool": ("v.npy", npy_bytes(good_features() > 0), "2-D floating array"),
    "complex": ("v.npy", npy_bytes(good_features().astype(np.complex64)), "2-D floating array"),
    "rank-1": ("v.npy", npy_bytes(good_features()[:, 0].copy()), "2-D floating array"),
    "rank-3": ("v.npy", npy_bytes(good_features()[None]), "2-D floating array"),
    "T=0": ("v.npy", npy_bytes(good_features()[:0]), "T = 0"),
    "D-mismatch": ("v.npy", npy_bytes(np.zeros((20, D + 3), np.float32)), f"{D + 3}-D but {D}-D are expected"),
    "NaN": ("v.npy", npy_bytes(np.where(np.eye(20, D, dtype=bool), np.nan, good_features()).astype(np.float32)),
            "NaN or infinity"),
    "Inf": ("v.npy", npy_bytes(np.full((20, D), np.inf, np.float32)), "NaN or infinity"),
    "float64-beyond-float32": ("v.npy", npy_bytes(np.full((20, D), 1e300)), "NaN or infinity"),
}


@pytest.mark.parametrize("case", sorted(FEATURE_CASES))
def test_bad_feature_file_is_reported_and_the_rest_run(env, tmp_path, case):
    name, content, reason = FEATURE_CASES[case]
    (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "good.npy", good_features())
    out = tmp_path / "results.json"
    result = cli("detect", tmp_path / name, tmp_path / "good.npy", "--model", env["bundle"], "--out", out)
    failed_file(result, reason)
    assert set(json.loads(out.read_text())["results"]) <= {"good"}  # the good file ran and was written


@pytest.mark.parametrize("T", [1, 2, 10**6])
def test_short_and_very_long_videos_run(env, tmp_path, T):
    x = np.zeros((T, D), np.float32) if T > 2 else good_features(T)
    np.save(tmp_path / "v.npy", x)
    result = cli("detect", tmp_path / "v.npy", "--model", env["bundle"], "--out", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert f"T = {T}" in result.output
    json.loads((tmp_path / "r.json").read_text())


def test_float16_and_npz_features_are_accepted(env, tmp_path):
    np.save(tmp_path / "half.npy", good_features().astype(np.float16))
    np.savez_compressed(tmp_path / "packed.npz", features=good_features())
    result = cli("detect", tmp_path / "half.npy", tmp_path / "packed.npz", "--model", env["bundle"])
    assert result.exit_code == 0, result.output


def test_unreadable_feature_file(env, tmp_path, monkeypatch):
    np.save(tmp_path / "v.npy", good_features())
    real_open = open

    def deny(path, *args, **kwargs):
        if str(path).endswith("v.npy"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    failed_file(cli("detect", tmp_path / "v.npy", "--model", env["bundle"]), "Permission denied")


def test_missing_inputs_and_duplicate_ids(env, tmp_path):
    one_line_error(cli("detect", tmp_path / "nope.npy", "--model", env["bundle"]), "no such file or folder")
    (tmp_path / "empty").mkdir()
    one_line_error(cli("detect", tmp_path / "empty", "--model", env["bundle"]), "holds no .npy")
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        np.save(tmp_path / sub / "same.npy", good_features())
    failed_file(cli("detect", tmp_path / "a", tmp_path / "b", "--model", env["bundle"]), "repeats")


# --------------------------------------------------------------------------- #
#                       detect: bad models and bundles (exit 2)               #
# --------------------------------------------------------------------------- #
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit_manifest(bundle: Path, edit) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    edit(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


def _resign(bundle: Path) -> None:
    """Update the manifest's checksum after a change: tampering that checksums cannot catch."""
    _edit_manifest(bundle, lambda m: m["models"]["onnx"].update(sha256=_sha(bundle / "model.onnx")))


def _onnx_wrong_outputs(bundle: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["b", "T", D])
    y = helper.make_tensor_value_info("cas", TensorProto.FLOAT, ["b", "T", D])
    z = helper.make_tensor_value_info("attention", TensorProto.FLOAT, ["b", "T", D])
    graph = helper.make_graph([helper.make_node("Identity", ["features"], ["cas"]),
                               helper.make_node("Identity", ["features"], ["attention"])], "g", [x], [y, z])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(bundle / "model.onnx"))
    _resign(bundle)


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


BUNDLE_CASES = {
    "onnx-modified": (lambda b: _flip(b / "model.onnx"), "checksum mismatch"),
    "onnx-truncated-resigned": (lambda b: ((b / "model.onnx").write_bytes((b / "model.onnx").read_bytes()[:500]),
                                           _resign(b)), "cannot load the model"),
    "onnx-random-bytes-resigned": (lambda b: ((b / "model.onnx").write_bytes(bytes(range(256)) * 8), _resign(b)),
                                   "cannot load the model"),
    "onnx-wrong-outputs-resigned": (_onnx_wrong_outputs, "re-export the bundle"),
    "onnx-missing": (lambda b: (b / "model.onnx").unlink(), "missing"),
    "manifest-missing": (lambda b: (b / "manifest.json").unlink(), "no manifest"),
    "manifest-truncated": (lambda b: (b / "manifest.json").write_text((b / "manifest.json").read_text()[:300]),
                           "not valid JSON"),
    "manifest-binary": (lambda b: (b / "manifest.json").write_bytes(b"\xff\xfe\x00garbage"), "manifest is not UTF-8 text"),
    "manifest-nested-100000-deep": (lambda b: (b / "manifest.json").write_text("[" * 100000 + "]" * 100000),
                                    "nested too deeply"),
    "manifest-absolute-file-name": (lambda b: _edit_manifest(b, lambda m: m["models"]["onnx"].update(
        file=str((b / "model.onnx").resolve()))), "absolute path"),
    "manifest-dotdot-file-name": (lambda b: _edit_manifest(b, lambda m: m["models"]["onnx"].update(
        file="../bundle/model.onnx")), "leaves the bundle folder"),
    "manifest-feature-dim-edited": (lambda b: _edit_manifest(b, lambda m: m.update(feature_dim=D + 1)),
                                    f"takes {D}-D features"),
    "manifest-unknown-version": (lambda b: _edit_manifest(b, lambda m: m.update(format_version=99)),
                                 "upgrade hamnet-deploy"),
    "manifest-bad-postprocess": (lambda b: _edit_manifest(b, lambda m: m["postprocess"].update(nms="fastest")),
                                 "postprocess"),
}


@pytest.mark.parametrize("case", sorted(BUNDLE_CASES))
def test_damaged_bundle_is_refused(env, tmp_path, case):
    bundle = tmp_path / "bundle"
    shutil.copytree(env["bundle"], bundle)
    edit, needle = BUNDLE_CASES[case]
    edit(bundle)
    one_line_error(cli("detect", env["video"], "--model", bundle), needle)


def test_symlink_out_of_the_bundle_is_refused(env, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(env["bundle"], bundle)
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").symlink_to((env["bundle"] / "model.onnx").resolve())
    one_line_error(cli("detect", env["video"], "--model", bundle), "resolves outside the bundle folder")


def test_model_path_problems(env, tmp_path):
    one_line_error(cli("detect", env["video"], "--model", tmp_path / "nope"), "not found")
    one_line_error(cli("detect", env["video"], "--model", env["video"]), "not a bundle folder")
    (tmp_path / "plain").mkdir()
    one_line_error(cli("detect", env["video"], "--model", tmp_path / "plain"), "no manifest")


@pytest.mark.parametrize("cc, trt, needle", [("8.0", "10.3.0", "sm_80"), ("9.0", "8.6.1", "8.6")])
def test_engine_from_another_gpu_or_tensorrt_is_refused(env, tmp_path, monkeypatch, cc, trt, needle):
    import hamnet_deploy.runtime.devices as compat

    bundle = add_fake_engine(env["bundle"], tmp_path / "bundle", cc, trt)
    monkeypatch.setattr(compat, "installed_tensorrt", lambda: "10.3.0")
    monkeypatch.setattr(compat, "cuda_devices", lambda: [{"index": 0, "name": "NVIDIA H100",
                                                          "compute_capability": "9.0"}])
    one_line_error(cli("detect", env["video"], "--model", bundle, "--backend", "tensorrt"), needle)
    result = cli("detect", env["video"], "--model", bundle)  # auto: says why and runs ONNX Runtime
    assert result.exit_code == 0 and "backend onnxruntime" in result.output and needle in result.output


def test_tampered_engine_is_refused(env, tmp_path):
    bundle = add_fake_engine(env["bundle"], tmp_path / "bundle", "9.0", "10.3.0")
    (bundle / "hamnet.engine").write_bytes(b"something else")
    one_line_error(cli("detect", env["video"], "--model", bundle), "checksum mismatch")


@pytest.mark.parametrize("args, needle", [
    (("--set", "nms_sigma=abc"), "nms_sigma='abc': expected a finite number"),
    (("--set", "action_thresholds=nan,0.5"), "expected a finite number"),
    (("--set", "bogus=1"), "--set bogus: unknown setting"),
    (("--batch-size", "0"), "--batch-size 0"),
    (("--max-t", "1"), "--max-t 5 or more"),
    (("--out", "results.txt"), ".json"),
])
def test_bad_detect_settings(env, args, needle):
    one_line_error(cli("detect", env["video"], "--model", env["bundle"], *args), needle)


# --------------------------------------------------------------------------- #
#                             outputs and full disks                          #
# --------------------------------------------------------------------------- #
class _FullDisk:
    """File objects opened through os.fdopen (the atomic writer's temp files) whose
    write raises ENOSPC, as on a full disk; os.fsync fails the same way."""

    def __init__(self, monkeypatch):
        real_fdopen = os.fdopen

        class Full:
            def __init__(self, handle):
                self._h = handle

            def write(self, data):
                raise OSError(errno.ENOSPC, "No space left on device")

            def __getattr__(self, name):
                return getattr(self._h, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._h.close()

        monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))

        def no_sync(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", no_sync)


def test_full_disk_keeps_the_previous_results(env, tmp_path, monkeypatch):
    out = tmp_path / "results.json"
    out.write_text("previous\n")
    _FullDisk(monkeypatch)
    one_line_error(cli("detect", env["video"], "--model", env["bundle"], "--out", out, "--force"), "No space left")
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temp file left
    report = tmp_path / "eval.json"
    report.write_text("previous\n")
    one_line_error(cli("eval", env["results"], "-a", env["ann"], "--json", report, "--force"), "No space left")
    assert report.read_text() == "previous\n"


def test_dev_full_is_written_into_not_replaced(env, tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    link = tmp_path / "results.json"
    link.symlink_to("/dev/full")  # a symlink: a regression would replace the link, never /dev/full
    one_line_error(cli("detect", env["video"], "--model", env["bundle"], "--out", link, "--force"), "No space left")
    assert link.is_symlink()
    one_line_error(cli("eval", env["results"], "-a", env["ann"], "--json", link, "--force"), "No space left")


def test_outputs_that_cannot_be_written(env, tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(cli("detect", env["video"], "--model", env["bundle"], "--out", tmp_path / "file" / "r.json"), "cannot write")
    (tmp_path / "dir.json").mkdir()
    one_line_error(cli("detect", env["video"], "--model", env["bundle"], "--out", tmp_path / "dir.json"), "is a folder")
    one_line_error(cli("eval", env["results"], "-a", env["ann"], "--json", tmp_path / "dir.json"), "is a folder")
    one_line_error(cli("eval", env["results"], "-a", env["ann"], "--json", tmp_path / "file" / "x.json"), "cannot write")


# --------------------------------------------------------------------------- #
#                          eval: bad annotations (exit 2)                     #
# --------------------------------------------------------------------------- #
def _ann_edit(env, edit):
    def apply(path: Path) -> None:
        a = json.loads(json.dumps(env["annotations"]))
        v0 = next(iter(a["database"]))
        edit(a, a["database"][v0])
        path.write_text(json.dumps(a))
    return apply


def _seg(segment, label="Class00"):
    return lambda a, v: v["annotations"].append({"segment": segment, "label": label})


ANNOTATION_CASES = {
    "unknown-label": (_seg([1, 2], "NoSuchClass"), "not in the class list"),
    "label-not-a-string": (_seg([1, 2], ["Class00"]), "not in the class list"),
    "reversed-segment": (_seg([5, 2]), "reversed"),
    "negative-segment": (_seg([-5, 2]), "negative"),
    "segment-not-numbers": (_seg(["a", "b"]), "not two numbers"),
    "segment-three-numbers": (_seg([1, 2, 3]), "not [start, end]"),
    "segment-true-false": (_seg([True, 2]), "not two numbers"),
    "segment-infinite": (_seg([1, 1e999]), "not finite"),
    "fps-not-a-number": (lambda a, v: v.update(fps="fast"), "fps 'fast' must be a positive number"),
    "duration-missing": (lambda a, v: v.pop("duration"), "no 'duration'"),
    "duration-negative": (lambda a, v: v.update(duration=-3), "positive"),
    "annotations-null": (lambda a, v: (a.pop("classes"), v.update(annotations=None)), "'segment' and 'label'"),
    "subset-not-a-string": (lambda a, v: v.update(subset=["test"]), "subset"),
    "classes-not-a-list": (lambda a, v: a.update(classes="Class00"), "'classes' must be a list"),
}


@pytest.mark.parametrize("case", sorted(ANNOTATION_CASES))
def test_bad_annotation_file(env, tmp_path, case):
    edit, needle = ANNOTATION_CASES[case]
    path = tmp_path / "ann.json"
    _ann_edit(env, edit)(path)
    one_line_error(cli("eval", env["results"], "-a", path), needle)


def test_annotation_file_faults(env, tmp_path):
    path = tmp_path / "ann.json"
    text = env["ann"].read_text()
    path.write_text(text[: len(text) // 2])
    one_line_error(cli("eval", env["results"], "-a", path), "not valid JSON")
    path.write_bytes(b"\x93NUMPY garbage \xff")
    one_line_error(cli("eval", env["results"], "-a", path), "annotation file is not UTF-8 text")
    path.write_text("[" * 100000 + "]" * 100000)
    one_line_error(cli("eval", env["results"], "-a", path), "nested too deeply")
    v = json.dumps(next(iter(env["annotations"]["database"])))
    path.write_text('{"database": {' + f'{v}: {{"duration": 5}}, {v}: {{"duration": 6}}' + '}}')
    one_line_error(cli("eval", env["results"], "-a", path), "appears twice")
    one_line_error(cli("eval", env["results"], "-a", tmp_path / "nope.json"), "not found")
    one_line_error(cli("eval", tmp_path / "nope.json", "-a", env["ann"]), "not found")


# --------------------------------------------------------------------------- #
#                           eval: bad results files                           #
# --------------------------------------------------------------------------- #
def _results_edit(env, edit):
    def apply(path: Path) -> None:
        r = json.loads(env["results"].read_text())
        v0 = next(iter(r["results"]))
        edit(r, r["results"][v0])
        path.write_text(json.dumps(r))
    return apply


RESULTS_CASES = {
    "unknown-label": (lambda r, d: d.append({"label": "Nope", "score": 1, "segment": [1, 2]}), "not in the class list"),
    "reversed-segment": (lambda r, d: d.append({"label": "Class00", "score": 1, "segment": [5, 2]}), "ends before"),
    "nan-score": (lambda r, d: d.append({"label": "Class00", "score": float("nan"), "segment": [1, 2]}), "not finite"),
    "score-not-a-number": (lambda r, d: d.append({"label": "Class00", "score": [1], "segment": [1, 2]}), "not a number"),
    "segment-not-a-pair": (lambda r, d: d.append({"label": "Class00", "score": 1, "segment": {"a": 1}}), "not [start, end]"),
    "results-not-a-mapping": (lambda r, d: r.update(results=[1, 2]), "'results' mapping"),
}


@pytest.mark.parametrize("case", sorted(RESULTS_CASES))
def test_bad_results_file(env, tmp_path, case):
    edit, needle = RESULTS_CASES[case]
    path = tmp_path / "r.json"
    _results_edit(env, edit)(path)
    one_line_error(cli("eval", path, "-a", env["ann"]), needle)


@pytest.mark.parametrize("content, needle", [
    ("video,label,score,t_start,t_end\n" + '"' + "x" * 200_000 + '",Class00,1,2,3\n', "not valid CSV"),
    ("video,label,score,t_start,t_end\nv,Class00,1,2\n", "expected 5 fields"),
    ("garbage\n", "must start with the header"),
    ('{"results": ' * 50000, "nested too deeply"),
    ('{"results": {"v": [', "not valid JSON"),
])
def test_bad_results_text(env, tmp_path, content, needle):
    path = tmp_path / ("r.csv" if content.startswith(("video", "garbage")) else "r.json")
    path.write_text(content)
    one_line_error(cli("eval", path, "-a", env["ann"]), needle)


def test_results_with_times_near_float_max_still_score(env, tmp_path):
    """A segment reaching 1e308 s: tIoU's union overflowed to inf, so the ground truth
    given as predictions no longer matched itself (AP 0 instead of 1)."""
    ann = json.loads(json.dumps(env["annotations"]))
    v0 = next(v for v, e in ann["database"].items() if e["subset"] == "test")
    ann["database"] = {v0: {**ann["database"][v0], "annotations": [{"segment": [1.0, 1e308], "label": "Class00"}]}}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    preds = {"results": {v0: [{"label": "Class00", "score": 1.0, "segment": [1.0, 1e308]}]}}
    (tmp_path / "r.json").write_text(json.dumps(preds))
    report = tmp_path / "eval.json"
    result = cli("eval", tmp_path / "r.json", "-a", tmp_path / "ann.json", "--subset", "test", "--json", report)
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["per_class"]["Class00"]["AP"] == [1.0] * 7


def test_checkpoint_with_another_class_count_is_refused_by_eval(env, tmp_path):
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset

    other = tmp_path / "other"
    generate_dataset(other, SynthConfig(videos=4, dim=D, num_classes=C + 1, seed=1))
    one_line_error(cli("eval", env["run"], "--data", other), "differ from the checkpoint's")


def test_topk_ratio_below_one_is_a_one_line_error(env):
    one_line_error(cli("detect", env["video"], "--model", env["bundle"], "--set", "topk_ratio=0.3"), "topk_ratio")


def test_read_only_output_folder(env, tmp_path, monkeypatch):
    """As root, chmod does not stop writes, so a read-only folder is simulated: creating
    the temporary file fails with EACCES."""
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    one_line_error(cli("detect", env["video"], "--model", env["bundle"], "--out", tmp_path / "r.json"), "Permission denied")
    one_line_error(cli("eval", env["results"], "-a", env["ann"], "--json", tmp_path / "e.json"), "Permission denied")
    assert list(tmp_path.iterdir()) == []


def test_no_command_writes_over_its_own_inputs(env, tmp_path):
    """detect --out and eval --json naming a file the command reads (directly, through a
    dataset or bundle folder, or through a link): refused, the input unchanged."""
    import os

    data = Path(shutil.copytree(env["data"], tmp_path / "data"))
    bundle = Path(shutil.copytree(env["bundle"], tmp_path / "bundle"))
    results = Path(shutil.copy(env["results"], tmp_path / "results.json"))
    link = tmp_path / "link.json"
    os.symlink(results, link)
    before = {p: p.read_bytes() for p in (data / "annotations.json", bundle / "manifest.json", results)}
    cases = [
        (["detect", data / "videos", "--model", bundle, "-a", data / "annotations.json", "--out",
          data / "annotations.json"], "--out"),
        (["detect", data / "videos", "--model", bundle, "-a", data, "--out", data / "annotations.json"], "--out"),
        (["detect", data / "videos", "--model", bundle, "--out", bundle / "manifest.json"], "--out"),
        (["eval", results, "-a", data / "annotations.json", "--json", results], "--json"),
        (["eval", link, "-a", data / "annotations.json", "--json", results], "--json"),
        (["eval", results, "-a", data, "--json", data / "annotations.json"], "--json"),
    ]
    for args, option in cases:
        line = one_line_error(cli(*args), "is one of this command's inputs")
        assert line.startswith(f"error: {option} "), line
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.parametrize("name, needle", [
    ("Long\nJump", "control character"), ("Tab\there", "control character"), ("", "1-256 characters"),
    ("   ", "1-256 characters"), ("x" * 300, "1-256 characters"),
])
def test_class_names_are_checked_where_they_enter(env, tmp_path, name, needle):
    """Annotations (classes list and labels), the W-TALC class list and the manifest refuse
    a class name with a control character (a newline would shift Triton's labels), an
    empty or overlong one, with one line naming the file."""
    from hamnet_deploy.runtime.bundle import load_bundle
    from hamnet_deploy.runtime.errors import BundleError, DataError
    from hamnet_deploy.training.data import load_ground_truth
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset

    ann = json.loads(env["ann"].read_text())
    ann["classes"] = [name, *ann["classes"][1:]]
    (tmp_path / "a.json").write_text(json.dumps(ann))
    one_line_error(cli("eval", env["results"], "-a", tmp_path / "a.json"), needle)
    del ann["classes"]
    video = next(iter(ann["database"].values()))
    video["annotations"][0]["label"] = name
    (tmp_path / "labels.json").write_text(json.dumps(ann))
    if name.strip():  # a blank label is simply not a class
        one_line_error(cli("eval", env["results"], "-a", tmp_path / "labels.json"), needle)

    wtalc = tmp_path / "w"
    generate_dataset(wtalc, SynthConfig(videos=4, dim=D, num_classes=C, seed=1), wtalc=True)
    [folder] = (wtalc / "wtalc").glob("*-Annotations")
    np.save(folder / "classlist.npy", np.array([name.encode(), b"other"], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=needle):
        load_ground_truth(folder)

    bundle = Path(shutil.copytree(env["bundle"], tmp_path / "b"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["classes"][0] = name
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=needle):
        load_bundle(bundle)


def test_user_text_is_never_read_as_markup(tmp_path, monkeypatch):
    """Paths, class names and video ids holding rich markup (`[/x]`, `[old]`, `[bold]`) are
    printed as they are, by every command, and break nothing."""
    monkeypatch.setenv("HAMNET_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "w[old]" / "x[/y]"
    data, run, bundle = root / "data", root / "run", root / "bundle"
    result = cli("synth", data, "--videos", 6, "--dim", D, "--classes", C)
    assert result.exit_code == 0 and "x[/y]" in result.output, result.output
    ann = json.loads((data / "annotations.json").read_text())
    rename = {c: f"{c}[/b][bold]" for c in ann["classes"]}
    ann["classes"] = [rename[c] for c in ann["classes"]]
    for video in ann["database"].values():
        for a in video["annotations"]:
            a["label"] = rename[a["label"]]
    first = sorted(ann["database"])[0]
    ann["database"][f"{first}[old]"] = ann["database"].pop(first)
    (data / "videos" / f"{first}.npy").rename(data / "videos" / f"{first}[old].npy")
    (data / "annotations.json").write_text(json.dumps(ann))
    tiny = ["--set", "model.attention_dim=8", "--set", "data.num_snippets=8", "--set", "data.batch_size=4",
            "--eval-every", "0", "--device", "cpu", "-q"]
    for args, shown in [
        (["train", "--data", data, "--out", run, "--epochs", 1, *tiny], "x[/y]"),
        (["export", run, "--out", bundle, "--skip-parity-long"], "x[/y]"),
        (["detect", data / "videos" / f"{first}[old].npy", "--model", bundle, "-a", data], f"{first}[old]"),
        (["detect", data / "videos", "--model", bundle, "--out", root / "r[old].json"], f"{first}[old]"),
        (["eval", root / "r[old].json", "-a", data, "--per-class", "--json", root / "m[/x].json"], "[/b][bold]"),
    ]:
        result = cli(*args)
        assert result.exit_code == 0, (args, result.output)
        assert shown in result.output, (args, result.output)


HUGE = 10 ** 400  # an integer literal no float can hold


def test_numbers_no_float_can_hold(env, tmp_path):
    """A 400-digit integer in an annotation file, a results file, a manifest (its fields
    and its accuracy record), a recipe or `--set`: one line, never an OverflowError."""
    from hamnet_deploy.runtime.bundle import load_bundle

    ann = json.loads(env["ann"].read_text())
    next(iter(ann["database"].values()))["annotations"][0]["segment"][1] = HUGE
    (tmp_path / "a.json").write_text(json.dumps(ann))
    one_line_error(cli("eval", env["results"], "-a", tmp_path / "a.json"), "a segment is not two numbers")
    res = json.loads(env["results"].read_text())
    next(iter(res["results"].values()))[0]["score"] = HUGE
    (tmp_path / "r.json").write_text(json.dumps(res))
    one_line_error(cli("eval", tmp_path / "r.json", "-a", env["ann"]), "is not a number a float can hold")
    bundle = Path(shutil.copytree(env["bundle"], tmp_path / "b"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    for field in ("snippet_seconds", "receptive_radius"):
        broken = {**manifest, field: HUGE}
        (bundle / "manifest.json").write_text(json.dumps(broken))
        one_line_error(cli("detect", env["video"], "--model", bundle), field)
    manifest["source"]["verify"] = {"max_drop": HUGE, "pytorch": {"average_mAP": HUGE}, "onnx": {"average_mAP": 1}}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert load_bundle(bundle).accuracy_verified("onnx")[0] is False
    assert cli("detect", env["video"], "--model", bundle).exit_code == 0
    one_line_error(cli("detect", env["video"], "--model", env["bundle"], "--set", f"nms_iou={HUGE}"), "nms_iou")
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"epochs": HUGE}))
    one_line_error(cli("train", "--recipe", recipe, "--data", env["data"], "--out", tmp_path / "run"), "epochs")
    one_line_error(cli("train", "--data", env["data"], "--out", tmp_path / "run", "--set", f"optim.lr={HUGE}"),
                   "optim.lr")
