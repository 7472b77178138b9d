"""The project's TensorRT code against the real TensorRT Python bindings of 8.6, 10.x and
11.x (tests/trt_api/real_bindings.py: the wheels from the package index, a stand-in
libnvinfer whose factories return NULL), in subprocesses:

- every name the code uses (tests/trt_api/api_usage.py reads it from the code) exists
  in each major that needs it, takes the arguments the code passes, can be set where
  the code sets it;
- the fakes the other TensorRT tests use have the real enum values and names
  (snapshot.json is what the real modules say) and the real parameter names;
- the builder and the runner, run for real up to where a GPU is needed, end in
  BackendUnavailable with the message for that cause, never a traceback, and the
  bindings without their library give the "library missing" message.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from tests.trt_api import api_usage, fake_trt, real_bindings
from tests.trt_api.update_snapshot import real_snapshot

VERSIONS = real_bindings.versions()


def test_every_receiver_in_the_tensorrt_code_is_known():
    _, unknown = api_usage.project_uses()
    assert not unknown, (f"variables in {api_usage.FILES} not listed in tests/trt_api/api_usage.py "
                         f"RECEIVERS (a TensorRT object) or NOT_TENSORRT: {sorted(unknown)}")


def test_usage_reader_finds_calls_sets_and_guards():
    uses, _ = api_usage.project_uses()
    by_name = {}
    for u in uses:
        by_name.setdefault(u.name, []).append(u)
    assert any(u.kind == "call" and u.positional == 2 for u in by_name["IBuilderConfig.set_memory_pool_limit"])
    assert any(u.kind == "set" for u in by_name["Runtime.DLA_core"])
    assert any(u.guarded for u in by_name["ParserError.node_name"])
    assert any(u.keywords == ("bindings", "stream_handle") for u in by_name["IExecutionContext.execute_async_v2"])
    assert any(u.starred for u in by_name["IOptimizationProfile.set_shape"])


def test_signature_parsing():
    doc = ("set_shape(self: tensorrt.tensorrt.IOptimizationProfile, input: str, min: tensorrt.tensorrt.Dims, "
           "opt: tensorrt.tensorrt.Dims, max: tensorrt.tensorrt.Dims) -> None\n\n    Set the shapes.")
    [params] = api_usage.signatures(doc, "set_shape")
    assert [p.name for p in params] == ["input", "min", "opt", "max"]
    assert api_usage.accepts(params, 4, ()) and not api_usage.accepts(params, 3, ())
    assert api_usage.accepts(params, 1, (), starred=True) and not api_usage.accepts(params, 5, ())
    over = ("create_execution_context(*args, **kwargs)\nOverloaded function.\n\n1. create_execution_context(self: "
            "X, strategy: Y = <Strategy.STATIC: 0>) -> Z\n\n2. create_execution_context(self: X, runtime_config: "
            "W = None) -> Z\n")
    sigs = api_usage.signatures(over, "create_execution_context")
    assert [[p.name for p in s] for s in sigs] == [["strategy"], ["runtime_config"]]
    assert all(api_usage.accepts(s, 0, ()) for s in sigs)
    assert not api_usage.accepts(sigs[0], 0, ("bogus",))


@pytest.fixture(scope="module", params=sorted(VERSIONS, key=lambda v: [int(x) for x in v.split(".")]))
def version(request) -> str:
    try:
        real_bindings.environment(request.param, VERSIONS[request.param])
    except real_bindings.BindingsUnavailable as exc:  # a failure, not a skip: CI must run this
        pytest.fail(f"TensorRT {request.param} bindings unavailable: {exc}")
    return request.param


@pytest.fixture(scope="module")
def real(version) -> dict:
    """What the real module says about every name the code uses and the fakes declare."""
    uses, _ = api_usage.project_uses()
    names = {u.name for u in uses}
    fake = fake_trt.make_fake_trt(version, snapshot={"enums": fake_trt.snapshot_for(version)["enums"]})
    for real_name in fake_trt.fake_classes(fake, version):
        names |= {real_name} | {f"{real_name}.{n}" for n in fake_trt.declared(getattr(fake, real_name))}
    return real_bindings.probe(version, VERSIONS[version], sorted(names), [])


def test_the_bindings_are_the_real_version(version, real):
    assert real["version"] == version
    for factory in ("Builder", "Runtime"):
        assert real["start"][factory] == "TypeError: pybind11::init(): factory function returned nullptr"


def _params(info: dict, name: str) -> list[list[api_usage.Param]]:
    if info.get("params") is not None:  # a Python function of the bindings' __init__.py
        return [[api_usage.Param(n, d, s) for n, d, s in info["params"]]]
    return api_usage.signatures(info["doc"], "__init__" if info["kind"] == "class" else name.split(".")[-1])


def test_every_used_name_exists_and_takes_the_call(version, real):
    major = real_bindings.major(version)
    uses, _ = api_usage.project_uses()
    problems = []
    for u in uses:
        info = real["names"][u.name]
        if not info["exists"]:
            if major in api_usage.required_in(u.name):
                problems.append(f"{u.name} is missing ({u.where})")
            continue
        if u.kind == "set" and not (info["kind"] == "property" and info["writable"]):
            problems.append(f"{u.name} cannot be set ({info['kind']}) ({u.where})")
        elif u.kind == "override" and info["kind"] != "function":
            problems.append(f"{u.name} is not a method to override ({u.where})")
        elif u.kind == "call":
            sigs = _params(info, u.name)
            if not sigs:
                problems.append(f"{u.name}: no signature in the bindings to check the call against ({u.where})")
            elif not any(api_usage.accepts(s, u.positional, u.keywords, u.starred) for s in sigs):
                shown = [[p.name for p in s] for s in sigs]
                problems.append(f"{u.name} called with {u.positional} positional + {list(u.keywords)} but takes "
                                f"{shown} ({u.where})")
    assert not problems, f"TensorRT {version}: " + "; ".join(problems)


def test_names_absent_in_a_major_are_declared_so(version, real):
    """REQUIRED_IN must not claim a name is absent where it exists (it would hide a rename)."""
    major = real_bindings.major(version)
    wrong = [n for n, majors in api_usage.REQUIRED_IN.items()
             if n in real["names"] and real["names"][n]["exists"] != (major in majors)]
    assert not wrong, f"TensorRT {version}: REQUIRED_IN is wrong for {wrong}"


def test_snapshot_is_what_the_real_module_says(version):
    """snapshot.json's entry of a version checked in CI is what that module says; another
    version of the same major (HAMNET_TRT_VERSIONS) agrees with the fake of its major on
    every enum member both have and on the class members the fakes declare."""
    real = real_snapshot(version, VERSIONS[version])
    fix = "run python tests/trt_api/update_snapshot.py"
    if version in json.loads(fake_trt.SNAPSHOT.read_text()):
        assert fake_trt.snapshot_for(version) == real, f"snapshot.json does not match TensorRT {version}: {fix}"
        return
    stored = fake_trt.snapshot_for(version)
    for enum, members in stored["enums"].items():
        theirs = real["enums"][enum] or {}
        differ = {m: (v, theirs[m]) for m, v in members.items() if m in theirs and theirs[m] != v}
        assert not differ, f"TensorRT {version} {enum}: values differ from the fake's {differ}"
    assert stored["members"] == real["members"], f"TensorRT {version}: the fake's names differ"


def test_fake_methods_take_the_real_parameters(version, real):
    fake = fake_trt.make_fake_trt(version)
    problems = []
    for real_name in fake_trt.fake_classes(fake, version):
        cls = getattr(fake, real_name, None)
        if cls is None:
            continue
        for name in fake_trt.declared(cls):
            attr = getattr(cls, name)
            info = real["names"][f"{real_name}.{name}"]
            if not callable(attr) or isinstance(attr, (int, property)) or info.get("kind") != "function":
                continue
            mine = list(inspect.signature(attr).parameters)[1:]
            sigs = _params(info, f"{real_name}.{name}")
            # the fake's parameters are the real ones' leading names; the rest have defaults
            if sigs and not any([p.name for p in s[:len(mine)]] == mine and all(p.default for p in s[len(mine):])
                                for s in sigs):
                problems.append(f"{real_name}.{name}{tuple(mine)} vs the real {[[p.name for p in s] for s in sigs]}")
    assert not problems, f"TensorRT {version} fakes: " + "; ".join(problems)


GPU_SCRIPT = r"""
import json, sys
from pathlib import Path

onnx_path, work = Path(sys.argv[1]), Path(sys.argv[2])
import tensorrt as trt
from hamnet_deploy.export import tensorrt_build as tb
from hamnet_deploy.export.options import TrtOptions
from hamnet_deploy.runtime import devices
from hamnet_deploy.runtime.backends import tensorrt as rt
from hamnet_deploy.runtime.errors import BackendUnavailable

results = {}

def attempt(key, fn):
    try:
        fn()
        results[key] = "no error"
    except BackendUnavailable as exc:
        results[key] = "BackendUnavailable: " + str(exc)
    except BaseException as exc:
        results[key] = f"{type(exc).__name__}: {exc}"

opts = TrtOptions(min_t=1, opt_t=16, max_t=64, max_batch=2, workspace_mb=64)
attempt("build, no GPU", lambda: tb.build_engines(onnx_path, work, opts))
gpu = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "memory_bytes": 1 << 36,
       "source": "test"}
tb.cuda_devices = rt.cuda_devices = lambda: [gpu]
devices.cuda_driver_version = lambda: "11.8"
attempt("build, old driver", lambda: tb.build_engines(onnx_path, work, opts))
devices.cuda_driver_version = lambda: None
attempt("build, no driver", lambda: tb.build_engines(onnx_path, work, opts))
engine = work / "model.engine"
engine.write_bytes(b"plan")
import hashlib
entry = {"file": engine.name, "sha256": hashlib.sha256(b"plan").hexdigest(), "precision": "fp16",
         "tensorrt_version": trt.__version__, "gpu_name": gpu["name"], "compute_capability": "9.0",
         "profile": {"min_t": 1, "opt_t": 16, "max_t": 64, "max_batch": 2}}
devices.cuda_driver_version = lambda: "12.4"
rt.cuda_memory_api = lambda: object()  # no driver here: let the runner reach trt.Runtime
attempt("runner", lambda: rt.TensorRTRunner(engine, entry).activate())
results["files"] = sorted(p.name for p in work.iterdir())
print(json.dumps(results))
"""


def test_builder_and_runner_end_in_backend_unavailable(version, tiny_onnx, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = real_bindings.environment(version, VERSIONS[version], extra={"HAMNET_CACHE": str(tmp_path / "cache")})
    out = real_bindings.run_python(GPU_SCRIPT, env, str(tiny_onnx), str(work))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["build, no GPU"].startswith("BackendUnavailable: no CUDA GPU is visible"), got
    cuda = 12 if VERSIONS[version].startswith("tensorrt-cu12") else None
    for key in ("build, old driver", "build, no driver"):
        assert got[key].startswith(f"BackendUnavailable: TensorRT {version} could not start CUDA "
                                   "(trt.Builder() failed)"), got[key]
        assert got[key].endswith("runs with ONNX Runtime")
    if cuda:
        assert "supports CUDA up to 11.8, older than the CUDA 12 this TensorRT was built for" in got[
            "build, old driver"] and "pip install tensorrt-cu11" in got["build, old driver"]
    else:
        assert "driver: CUDA 11.8; TensorRT: its CUDA version" in got["build, old driver"]
    assert "no NVIDIA driver answered" in got["build, no driver"]
    assert got["runner"].startswith(f"BackendUnavailable: TensorRT {version} could not start CUDA "
                                    "(trt.Runtime() failed)"), got["runner"]
    assert got["runner"].endswith("--backend onnxruntime")
    assert got["files"] == ["model.engine"]  # the failed builds wrote nothing


MISSING_LIB_SCRIPT = r"""
from hamnet_deploy.runtime.backends.tensorrt import import_tensorrt
from hamnet_deploy.runtime import devices
from hamnet_deploy.runtime.errors import BackendUnavailable
print(devices.installed_tensorrt())
try:
    import_tensorrt()
except BackendUnavailable as exc:
    print(exc)
"""


def test_bindings_without_their_library(version):
    env = real_bindings.environment(version, VERSIONS[version], libraries=False)
    out = real_bindings.run_python(MISSING_LIB_SCRIPT, env)
    assert out.returncode == 0, out.stderr
    installed, message = out.stdout.strip().splitlines()
    assert installed == version
    libs = VERSIONS[version].replace("-bindings", "-libs")
    lib = rf"lib(nvinfer|nvonnxparser|nvinfer_plugin|nvparsers)\.so\.{real_bindings.major(version)}"
    assert re.match(f"TensorRT's Python bindings are installed but its library {lib} cannot be loaded",
                    message), message
    assert f"pip install {libs}=={version}" in message and "LD_LIBRARY_PATH" in message
    assert "not installed" not in message


def test_export_from_a_bundle_with_the_real_bindings_and_no_torch(version, built_bundle, tmp_path):
    """The device path with real TensorRT bindings, no GPU and no PyTorch: exit 2, one line,
    the bundle untouched."""
    import hashlib
    import shutil

    from tests.helpers import run_base_cli

    bundle = Path(shutil.copytree(built_bundle, tmp_path / "bundle"))

    def files() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundle.rglob("*") if p.is_file()}

    before = files()
    dist = VERSIONS[version]
    env = {"LD_LIBRARY_PATH": str(real_bindings.stub_libraries(real_bindings.major(version))),
           "HAMNET_CACHE": str(tmp_path / "cache")}
    out = run_base_cli(["export", bundle, "--trt", "--fp16"], tmp_path,
                       prepend=(real_bindings.site(version, dist),), env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 2 and "Traceback" not in text, text
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: no CUDA GPU is visible"), text
    assert files() == before


@pytest.mark.parametrize("libraries", [True, False])
def test_doctor_with_the_real_bindings(version, tmp_path, libraries):
    from tests.helpers import run_base_cli

    dist = VERSIONS[version]
    env = {"LD_LIBRARY_PATH": str(real_bindings.stub_libraries(real_bindings.major(version)))} if libraries else {}
    out = run_base_cli(["doctor", "--json"], tmp_path, prepend=(real_bindings.site(version, dist),), env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["tensorrt"] == version
    assert report["tensorrt_cuda"] == (12 if "cu12" in dist else None)
    assert report["cuda_driver"] is None and report["tensorrt_runs"] is None  # no driver here
    missing = [w for w in report["warnings"] if "bindings are installed but its library" in w]
    assert bool(missing) == (not libraries), report["warnings"]
