"""Security rules (docs/RELIABILITY.md, "Security"), each with a test:

1. No pickle on user inputs: pickled feature files (plain pickles, object arrays in
   .npy/.npz) are refused without being unpickled - a payload whose unpickling would
   create a marker file never does.
2. Checkpoints load without running pickle: weights are safetensors, and every
   `torch.load` passes `weights_only=True` (source scan); an optimizer.pt holding a
   pickle payload is refused without executing it.
3. No `shell=True`, `os.system` or `os.popen` anywhere (source scan).
4. File names from manifests (and the run folder's checkpoint pointer, and video ids
   from annotations) cannot leave their folder: absolute paths, `..`, symlinks.
5. Nothing is fetched from the network at run time: no network modules in the
   package (source scan), and detect, eval and export work with every socket connect
   failing.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import pickle
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from hamnet_deploy.runtime.bundle import load_bundle
from hamnet_deploy.runtime.errors import BundleError, DataError
from hamnet_deploy.runtime.feature_files import load_features
from hamnet_deploy.training.checkpoint import load_checkpoint, resolve_checkpoint
from hamnet_deploy.training.data import load_dataset
from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("runtime", "training", "export", "hamnet_deploy")
D, C = 8, 2


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Nothing here may fall back to generating the embedded dataset in the user's cache."""
    monkeypatch.setenv("HAMNET_CACHE", str(tmp_path / "cache"))


class Payload:
    """Unpickling this creates the marker file (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _sources(*folders: str) -> list[Path]:
    roots = [ROOT / f for f in folders] if folders else [ROOT]
    skip = {".venv", ".git", "build", "dist", "__pycache__", "node_modules"}
    out = []
    for root in roots:
        for path in root.rglob("*.py"):
            if not skip.intersection(path.relative_to(ROOT).parts):
                out.append(path)
    return sorted(out)


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword_is_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny dataset, a 1-epoch run (with optimizer state) and its bundle."""
    from hamnet_deploy.training.recipes import load_recipe
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset
    from hamnet_deploy.training.trainer import train

    root = tmp_path_factory.mktemp("security")
    generate_dataset(root / "data", SynthConfig(videos=6, dim=D, num_classes=C, seed=6))
    cfg = load_recipe("thumos14").with_overrides(["model.attention_dim=8", "data.num_snippets=8",
                                                     "data.batch_size=4", "eval_every=0", "device=cpu", "epochs=1"])
    train(cfg, load_dataset(root / "data"), root / "run")
    result = cli("export", root / "run", "--out", root / "bundle", "--skip-parity-long")
    assert result.exit_code == 0, result.output
    return {"root": root, "data": root / "data", "run": root / "run", "bundle": root / "bundle",
            "video": sorted((root / "data" / "videos").iterdir())[0]}


# --------------------------------------------------------------------------- #
#                          1. no pickle on user inputs                        #
# --------------------------------------------------------------------------- #
def _pickled_files(folder: Path, marker: Path) -> dict[str, Path]:
    payload = Payload(marker)
    files = {}
    files["plain-pickle.npy"] = folder / "plain-pickle.npy"
    files["plain-pickle.npy"].write_bytes(pickle.dumps(payload))
    files["object-array.npy"] = folder / "object-array.npy"
    np.save(files["object-array.npy"], np.array([payload, None], dtype=object), allow_pickle=True)
    files["object-array.npz"] = folder / "object-array.npz"
    np.savez(files["object-array.npz"], features=np.array([payload, None], dtype=object))
    return files


def test_the_payload_really_runs_when_unpickled(tmp_path):
    """The check below means something: unpickling the payload does create the marker."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Payload(marker)))  # noqa: S301 - the point of this test
    assert marker.exists()


def test_pickled_feature_files_are_refused_unexecuted(env, tmp_path):
    marker = tmp_path / "marker"
    files = _pickled_files(tmp_path, marker)
    for path in files.values():
        with pytest.raises(DataError, match="pickle"):
            load_features(path, D)  # the one reader: detect and the training loader use it
    result = cli("detect", *files.values(), "--model", env["bundle"])
    assert result.exit_code == 1 and result.output.count("failed:") == 3, result.output
    assert "Traceback" not in result.output
    assert not marker.exists(), "a pickle payload ran"


def test_pickled_per_video_dataset_is_refused_unexecuted(env, tmp_path):
    marker = tmp_path / "marker"
    data = tmp_path / "data"
    shutil.copytree(env["data"], data)
    victim = sorted((data / "videos").iterdir())[1]
    np.save(victim, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickle"):
        load_dataset(data)
    result = cli("train", "--data", data, "--out", tmp_path / "run", "--epochs", 1, "--device", "cpu", "-q")
    assert result.exit_code == 2 and "pickle" in result.output and "Traceback" not in result.output
    assert not marker.exists(), "a pickle payload ran"


# --------------------------------------------------------------------------- #
#                     2. checkpoints load without running pickle              #
# --------------------------------------------------------------------------- #
def test_every_torch_load_passes_weights_only_true():
    found = []
    for path in _sources():
        for call in _calls(path):
            if _dotted(call.func).endswith("torch.load"):
                found.append(path)
                assert _keyword_is_true(call, "weights_only"), f"{path}:{call.lineno}: torch.load without weights_only=True"
    assert found, "the scan found no torch.load at all (training/checkpoint.py has one)"


def test_only_the_wtalc_reader_loads_numpy_pickles():
    allowed = {ROOT / "training" / "wtalc.py"}
    for path in _sources(*PACKAGES):
        for call in _calls(path):
            if _dotted(call.func) in ("np.load", "numpy.load") and _keyword_is_true(call, "allow_pickle"):
                assert path in allowed, f"{path}:{call.lineno}: np.load(allow_pickle=True) on a user file"


def test_no_pickle_marshal_eval_or_exec_in_the_package():
    banned = {"pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.loads", "marshal.load", "eval", "exec",
              "dill.load", "dill.loads", "joblib.load", "cloudpickle.load", "cloudpickle.loads"}
    for path in _sources(*PACKAGES):
        for call in _calls(path):
            assert _dotted(call.func) not in banned, f"{path}:{call.lineno}: {_dotted(call.func)}"


def test_optimizer_state_with_a_pickle_payload_is_refused_unexecuted(env, tmp_path):
    marker = tmp_path / "marker"
    run = tmp_path / "run"
    shutil.copytree(env["run"], run)
    folder = resolve_checkpoint(run)
    good = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    torch.save({**good, "extra": Payload(marker)}, folder / "optimizer.pt")
    with pytest.raises(BundleError, match="optimizer"):
        load_checkpoint(run, with_optimizer=True)
    result = cli("train", "--resume", run, "--data", env["data"], "--epochs", 2, "--device", "cpu", "-q")
    assert result.exit_code == 2 and "optimizer" in result.output and "Traceback" not in result.output
    assert not marker.exists(), "a pickle payload in optimizer.pt ran"


def test_weights_are_safetensors_not_pickle(env):
    folder = resolve_checkpoint(env["run"])
    raw = (folder / "model.safetensors").read_bytes()
    header = int.from_bytes(raw[:8], "little")
    json.loads(raw[8:8 + header])  # a JSON header and raw tensor bytes: nothing to execute
    assert not raw.startswith(b"\x80") and b"PK" not in raw[:4]


# --------------------------------------------------------------------------- #
#                               3. no shell=True                              #
# --------------------------------------------------------------------------- #
def test_no_shell_anywhere():
    sources = _sources()
    assert len(sources) > 50
    for path in sources:
        for call in _calls(path):
            assert not _keyword_is_true(call, "shell"), f"{path}:{call.lineno}: shell=True"
            name = _dotted(call.func)
            assert name not in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"), \
                f"{path}:{call.lineno}: {name} runs a shell"


# --------------------------------------------------------------------------- #
#                    4. file names cannot leave their folder                  #
# --------------------------------------------------------------------------- #
def _bundle_copy(env, dst: Path, edit) -> Path:
    shutil.copytree(env["bundle"], dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    edit(dst, manifest)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def _engine(dst: Path, manifest: dict, name: str) -> None:
    data = b"engine bytes"
    manifest["engines"] = [{"file": name, "sha256": hashlib.sha256(data).hexdigest(), "precision": "fp16",
                            "tensorrt_version": "10.3.0", "gpu_name": "NVIDIA H100", "compute_capability": "9.0",
                            "profile": {"min_t": 1, "opt_t": 8, "max_t": 64, "max_batch": 1}}]


@pytest.mark.parametrize("name, needle", [
    ("/etc/passwd", "absolute path"),
    ("../bundle/model.onnx", "leaves the bundle folder"),
    ("sub/../../model.onnx", "leaves the bundle folder"),
    ("C:\\model.onnx", "absolute path"),
    ("\\\\server\\share\\model.onnx", "absolute path"),
])
@pytest.mark.parametrize("where", ["model", "engine"])
def test_manifest_file_names_cannot_leave_the_bundle(env, tmp_path, name, needle, where):
    def edit(dst: Path, m: dict) -> None:
        if where == "model":
            m["models"]["onnx"]["file"] = name
        else:
            _engine(dst, m, name)

    bundle = _bundle_copy(env, tmp_path / "bundle", edit)
    with pytest.raises(BundleError, match=needle):
        load_bundle(bundle)
    result = cli("detect", env["video"], "--model", bundle)
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("link", ["file", "folder"])
def test_symlinks_out_of_the_bundle_are_refused(env, tmp_path, link):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(env["bundle"] / "model.onnx", outside / "model.onnx")

    def edit(dst: Path, m: dict) -> None:
        (dst / "model.onnx").unlink()
        if link == "file":
            (dst / "model.onnx").symlink_to(outside / "model.onnx")
        else:
            (dst / "sub").symlink_to(outside, target_is_directory=True)
            m["models"]["onnx"]["file"] = "sub/model.onnx"

    bundle = _bundle_copy(env, tmp_path / "bundle", edit)
    with pytest.raises(BundleError, match="outside the bundle folder"):
        load_bundle(bundle)
    result = cli("detect", env["video"], "--model", bundle)
    assert result.exit_code == 2 and "outside the bundle folder" in result.output


@pytest.mark.parametrize("pointer", ["/etc", "../../..", "checkpoints/../../elsewhere"])
def test_checkpoint_pointer_cannot_leave_the_run(env, tmp_path, pointer):
    run = tmp_path / "run"
    shutil.copytree(env["run"], run)
    (run / "latest.json").write_text(json.dumps({"epoch": 1, "path": pointer}))
    with pytest.raises(BundleError, match="leaves the run folder"):
        load_checkpoint(run)


@pytest.mark.parametrize("video", ["../escape", "/tmp/abs", "a/b", "..", "a\\b"])
def test_video_ids_cannot_leave_the_features_folder(env, tmp_path, video):
    data = tmp_path / "data"
    shutil.copytree(env["data"], data)
    ann = json.loads((data / "annotations.json").read_text())
    ann["database"][video] = {"subset": "test", "duration": 5.0, "annotations": []}
    (data / "annotations.json").write_text(json.dumps(ann))
    with pytest.raises(DataError, match="cannot be used as a feature file name"):
        load_dataset(data)


# --------------------------------------------------------------------------- #
#                             5. no network at run time                       #
# --------------------------------------------------------------------------- #
NETWORK_MODULES = {"socket", "ssl", "urllib", "urllib3", "requests", "httpx", "http", "aiohttp", "ftplib",
                   "smtplib", "telnetlib", "xmlrpc", "websocket", "websockets", "paramiko", "pycurl"}


def test_no_network_modules_in_the_package():
    for path in _sources(*PACKAGES):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in NETWORK_MODULES, f"{path}:{node.lineno}: imports {name}"


def test_detect_eval_and_export_never_connect(env, tmp_path, monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during a test that forbids it")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    result = cli("export", env["run"], "--out", tmp_path / "bundle", "--skip-parity-long")
    assert result.exit_code == 0, result.output
    out = tmp_path / "results.json"
    result = cli("detect", env["data"] / "videos", "--model", tmp_path / "bundle", "--out", out)
    assert result.exit_code == 0, result.output
    result = cli("eval", out, "-a", env["data"] / "annotations.json")
    assert result.exit_code == 0, result.output
    result = cli("eval", env["run"], "--data", env["data"])
    assert result.exit_code == 0, result.output
    assert attempts == []


def test_pickle_payload_helper_is_not_importable_by_numpy_without_pickle(tmp_path):
    """np.load with allow_pickle=False (what the loaders use) refuses object arrays."""
    buf = io.BytesIO()
    np.save(buf, np.array([Payload(tmp_path / "m")], dtype=object), allow_pickle=True)
    buf.seek(0)
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(buf, allow_pickle=False)
    assert not (tmp_path / "m").exists()


def test_resume_never_unpickles_a_dataset_only_the_run_names(env, tmp_path):
    """`hamnet train --resume RUN` reads the dataset path from RUN/config.json. A W-TALC
    dataset there (pickled files) is refused unexecuted; named with --data it is trusted."""
    from hamnet_deploy.training.synth import SynthConfig, generate_dataset
    from tests.helpers import one_line_error

    data = tmp_path / "data"
    generate_dataset(data, SynthConfig(videos=6, dim=D, num_classes=C, seed=6), wtalc=True)
    tiny = ["--set", "model.attention_dim=8", "--set", "data.num_snippets=8", "--set", "data.batch_size=4",
            "--eval-every", "0", "--device", "cpu", "-q"]
    run = tmp_path / "run"
    result = cli("train", "--data", data / "wtalc", "--out", run, "--epochs", 1, *tiny)
    assert result.exit_code == 0, result.output
    # the recorded dataset is swapped for a payload (a shared or copied run folder can point anywhere)
    marker = tmp_path / "pickle-ran"
    [features] = (data / "wtalc").glob("*-JOINTFeatures.npy")
    np.save(features, np.array([Payload(marker), None], dtype=object), allow_pickle=True)
    line = one_line_error(cli("train", "--resume", run, "--epochs", 2, *tiny), "holds the W-TALC layout")
    assert "pass --data" in line and "config.json" in line
    assert not marker.exists()
    assert json.loads((run / "latest.json").read_text())["epoch"] == 1  # nothing trained, nothing written
