"""The Triton ensemble (features in, detections out): every config parses into Triton's
ModelConfig protobuf and the names line up from step to step; the Python-backend model
runs its `execute` on real model outputs in a process that has only NumPy and the files
the export wrote, and returns exactly the detections `hamnet detect` finds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from hamnet_deploy.export.triton import write_triton_repository
from hamnet_deploy.runtime.bundle import load_bundle
from hamnet_deploy.runtime.errors import BundleError
from tests.helpers import cli

PB_UTILS_STUB = '''
"""The names of Triton's triton_python_backend_utils that hamnet_post uses."""
import numpy as np

class Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, np.asarray(array)
    def name(self):
        return self._name
    def as_numpy(self):
        return self._array

class TritonError:
    def __init__(self, message):
        self._message = message
    def message(self):
        return self._message

class InferenceResponse:
    def __init__(self, output_tensors, error=None):
        self._outputs, self._error = output_tensors, error
    def output_tensors(self):
        return self._outputs
    def has_error(self):
        return self._error is not None
    def error(self):
        return self._error

class InferenceRequest:
    def __init__(self, model_name, inputs, requested_output_names):
        self._inputs = inputs
    def inputs(self):
        return self._inputs

def get_input_tensor_by_name(request, name):
    return next((t for t in request.inputs() if t.name() == name), None)
'''

DRIVER = '''
import importlib.util, json, sys
import numpy as np
import triton_python_backend_utils as pb
assert "torch" not in sys.modules
spec = importlib.util.spec_from_file_location("model", sys.argv[1])
model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model)
import hamnet_deploy.runtime.postprocess as post
inputs = np.load(sys.argv[2])
m = model.TritonPythonModel()
m.initialize({"model_config": "{}", "model_repository": sys.argv[1], "model_version": "1"})
requests, names = [], sorted({k.split("/")[0] for k in inputs.files})
for v in names:
    tensors = [pb.Tensor("cas", inputs[v + "/cas"]), pb.Tensor("attention", inputs[v + "/attention"])]
    if v + "/duration" in inputs.files:
        tensors.append(pb.Tensor("duration", inputs[v + "/duration"]))
    requests.append(pb.InferenceRequest("hamnet_post", tensors, []))
out = {}
for v, response in zip(names, m.execute(requests)):
    if response.has_error():
        out[v] = {"error": response.error().message()}
        continue
    t = {x.name(): x.as_numpy() for x in response.output_tensors()}
    out[v] = {"label": [b.decode() for b in t["label"][0]], "score": t["score"][0].tolist(),
              "segment": t["segment"][0].tolist(), "class_probability": t["class_probability"][0].tolist()}
m.finalize()
print(json.dumps({"videos": out, "runtime": post.__file__, "modules": sorted(sys.modules)}))
'''


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repo(built_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton") / "models"
    write_triton_repository(load_bundle(built_bundle), out, max_batch=4, ensemble=True)
    return out


def test_every_config_parses_and_the_names_line_up(repo, built_bundle):
    bundle = load_bundle(built_bundle)
    net, post, ens = (parse(repo / name / "config.pbtxt") for name in ("hamnet", "hamnet_post", "hamnet_detect"))
    assert net.dynamic_batching.max_queue_delay_microseconds > 0 and net.max_batch_size == 4
    assert post.backend == "python" and not post.platform and post.max_batch_size == 1
    assert {i.name: i.optional for i in post.input} == {"cas": False, "attention": False, "duration": True}
    assert [(o.name, model_config_pb2.DataType.Name(o.data_type), list(o.dims)) for o in post.output] == [
        ("label", "TYPE_STRING", [-1]), ("score", "TYPE_FP64", [-1]), ("segment", "TYPE_FP64", [-1, 2]),
        ("class_probability", "TYPE_FP64", [bundle.num_classes])]
    assert ens.platform == "ensemble" and ens.max_batch_size == 1
    assert [(i.name, list(i.dims)) for i in ens.input] == [("features", [-1, bundle.feature_dim])]
    assert [o.name for o in ens.output] == [o.name for o in post.output]
    first, second = ens.ensemble_scheduling.step
    assert (first.model_name, second.model_name) == ("hamnet", "hamnet_post")
    assert set(first.input_map) == {i.name for i in net.input}
    assert set(first.output_map) == {o.name for o in net.output} == set(second.input_map)
    assert set(second.output_map.values()) == {o.name for o in ens.output}
    assert (repo / "hamnet_detect" / "1").is_dir()


def test_the_python_model_returns_what_detect_finds(repo, built_bundle, tiny_data, tmp_path):
    from hamnet_deploy import Detector

    files = sorted((tiny_data / "videos").glob("*.npy"))[:4]
    with Detector(built_bundle) as det:
        results = det(files)
    arrays = {}
    for r in results:
        cas, att = results.run.outputs[r.video]
        arrays[f"{r.video}/cas"], arrays[f"{r.video}/attention"] = cas[None], att.reshape(1, -1, 1)
    clipped = results[0].video
    arrays[f"{clipped}/duration"] = np.array([[5.0]])  # as `hamnet detect -a` clips to the duration
    bad = "zz_two_videos"
    arrays[f"{bad}/cas"] = np.concatenate([arrays[f"{clipped}/cas"]] * 2)
    arrays[f"{bad}/attention"] = np.concatenate([arrays[f"{clipped}/attention"]] * 2)
    np.savez(tmp_path / "inputs.npz", **arrays)

    site = tmp_path / "numpy-only"  # NumPy and the stub of Triton's utils, nothing else
    site.mkdir()
    purelib = Path(sysconfig.get_paths()["purelib"])
    for entry in purelib.iterdir():
        if entry.name == "numpy" or entry.name.startswith(("numpy-", "numpy.libs")):
            (site / entry.name).symlink_to(entry)
    (site / "triton_python_backend_utils.py").write_text(PB_UTILS_STUB)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-S", "-c", DRIVER, str(repo / "hamnet_post" / "1" / "model.py"),
                           str(tmp_path / "inputs.npz")], capture_output=True, text=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    assert Path(got["runtime"]).is_relative_to(repo / "hamnet_post" / "1")  # the vendored copy ran
    assert not {"torch", "onnxruntime", "platformdirs"} & {m.split(".")[0] for m in got["modules"]}
    assert "one video per request" in got["videos"][bad]["error"]
    with Detector(built_bundle) as det:
        short = det([files[0]], durations={clipped: 5.0})[0]
    for r in results:
        mine = got["videos"][r.video]
        expected = (short if r.video == clipped else r).rows()
        assert mine["label"] == [x["label"] for x in expected]
        assert mine["score"] == [x["score"] for x in expected]  # exactly: the same code, float64
        assert mine["segment"] == [[x["start"], x["end"]] for x in expected]
        assert mine["class_probability"] == [r.class_probs[c] for c in results.classes]
    assert max(end for _, end in got["videos"][clipped]["segment"]) <= 5.0


def test_force_keeps_pythons_caches_and_refuses_foreign_files(built_bundle, tmp_path):
    bundle = load_bundle(built_bundle)
    out = tmp_path / "models"
    write_triton_repository(bundle, out, ensemble=True)
    cache = out / "hamnet_post" / "1" / "hamnet_deploy" / "runtime" / "__pycache__"
    cache.mkdir()
    (cache / "postprocess.cpython-311.pyc").write_bytes(b"pyc")  # Triton's Python made it
    write_triton_repository(bundle, out, ensemble=True, force=True)
    (out / "hamnet_post" / "1" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="notes.txt"):
        write_triton_repository(bundle, out, ensemble=True, force=True)
    assert (out / "hamnet_post" / "1" / "notes.txt").read_text() == "mine"


def test_the_cli_writes_the_ensemble_only_when_asked(built_bundle, tmp_path):
    plain = cli("export", built_bundle, "--triton", tmp_path / "a")
    assert plain.exit_code == 0, plain.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["hamnet"]
    both = cli("export", built_bundle, "--triton", tmp_path / "b", "--triton-ensemble")
    assert both.exit_code == 0, both.output
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["hamnet", "hamnet_detect", "hamnet_post"]
