"""Bundle format: manifest validation, checksums, path escapes, atomic writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hamnet_deploy.export.bundle_writer import BundleStage, build_manifest, check_target
from hamnet_deploy.runtime.bundle import load_bundle, read_manifest
from hamnet_deploy.runtime.errors import BundleError
from hamnet_deploy.runtime.fileio import sha256_file
from hamnet_deploy.runtime.manifest import (
    MANIFEST,
    EngineEntry,
    Manifest,
    TensorSpec,
    safe_relative_name,
)
from hamnet_deploy.runtime.postprocess import PostprocessConfig

CLASSES = ["jump", "run", "throw"]
IO_IN = (TensorSpec("features", "float32", ("batch", "T", 16)),)
IO_OUT = (TensorSpec("cas", "float32", ("batch", "T", 4)), TensorSpec("attention", "float32", ("batch", "T", 1)))


def engine_dict(name: str = "hamnet_sm86_fp16.engine", **extra) -> dict:
    return {"file": name, "precision": "fp16", "tensorrt_version": "10.3.0", "gpu_name": "Orin",
            "compute_capability": "8.7", "profile": {"min_t": 1, "opt_t": 512, "max_t": 4096, "max_batch": 4},
            "dla_core": None, **extra}


def write_bundle(target: Path, force: bool = False, engines: list | None = None, int8: bool = False,
                 post: PostprocessConfig | None = None) -> Path:
    with BundleStage(target, force) as stage:
        stage.file("model.onnx").write_bytes(b"onnx model bytes")
        models = {"onnx": stage.model_entry("model.onnx", opset=17, precision="fp32", inputs=IO_IN,
                                            outputs=IO_OUT, extra={"simplified": True})}
        if int8:
            stage.file("model.int8.onnx").write_bytes(b"int8 model bytes")
            models["onnx_int8"] = stage.model_entry("model.int8.onnx", opset=17, precision="int8",
                                                    inputs=IO_IN, outputs=IO_OUT)
        raw = []
        for e in engines or []:
            stage.file(e["file"]).write_bytes(b"engine " + e["file"].encode())
            raw.append(e)
        manifest = build_manifest(classes=CLASSES, feature_dim=16, snippet_seconds=0.64, receptive_radius=2,
                                  postprocess=(post or PostprocessConfig()).to_dict(), models=models,
                                  engines=stage.engine_entries(raw), config={"recipe": "thumos14"},
                                  source={"checkpoint": "/runs/x", "epoch": 3})
        return stage.commit(manifest)


def manifest_dict(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def rewrite(folder: Path, data: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps(data))


def test_round_trip(tmp_path):
    post = PostprocessConfig(nms="hard", class_threshold=0.1)
    folder = write_bundle(tmp_path / "b", engines=[engine_dict()], int8=True, post=post)
    b = load_bundle(folder)
    assert b.classes == CLASSES and b.num_classes == 3 and b.feature_dim == 16
    assert b.receptive_radius == 2 and b.snippet_seconds == pytest.approx(0.64)
    assert b.postprocess == post
    assert b.model_path() == folder / "model.onnx" and b.model_path("onnx_int8") == folder / "model.int8.onnx"
    assert b.kinds == ["onnx", "onnx_int8"] and b.has("onnx_int8")
    assert b.manifest.models["onnx"].extra == {"simplified": True}
    assert b.manifest.models["onnx"].inputs == IO_IN
    (eng,) = b.engines
    assert eng.sha256 == sha256_file(folder / eng.file) and eng.profile.max_t == 4096
    assert eng.profile.accepts(4, 4096) and not eng.profile.accepts(5, 10) and not eng.profile.accepts(1, 4097)
    assert b.engine_path(eng) == folder / eng.file
    # manifest on disk: every field the runtime needs
    raw = manifest_dict(folder)
    for key in ("format_version", "package_version", "created", "classes", "num_classes", "feature_dim",
                "snippet_seconds", "receptive_radius", "postprocess", "models", "engines", "config", "source"):
        assert key in raw
    assert raw["postprocess"] == post.to_dict()
    assert Manifest.from_dict(raw).to_dict() == raw
    assert load_bundle(folder / MANIFEST).path == folder
    assert sorted(os.listdir(tmp_path)) == ["b"]  # no temp folders left


def test_engine_entries_keep_builder_extras(tmp_path):
    extra = engine_dict("e.engine", version_compatible=True, builder="trtexec")
    extra["profile"]["min_batch"] = 4
    folder = write_bundle(tmp_path / "b", engines=[extra])
    (eng,) = load_bundle(folder).engines
    assert eng.extra == {"version_compatible": True, "builder": "trtexec"}
    assert eng.profile.min_batch == 4
    assert eng.to_dict()["profile"]["min_batch"] == 4


def test_no_model_kind_is_a_clear_error(tmp_path):
    b = load_bundle(write_bundle(tmp_path / "b"))
    with pytest.raises(BundleError, match="no 'onnx_int8' model.*--int8-cpu"):
        b.model_path("onnx_int8")


@pytest.mark.parametrize("victim", ["model.onnx", "model.int8.onnx", "e.engine"])
def test_tampered_file_is_refused(tmp_path, victim):
    folder = write_bundle(tmp_path / "b", engines=[engine_dict("e.engine")], int8=True)
    with open(folder / victim, "ab") as fh:
        fh.write(b"!")
    with pytest.raises(BundleError, match=rf"{victim}: checksum mismatch.*re-export"):
        load_bundle(folder)
    load_bundle(folder, verify=False)  # reading the manifest alone still works
    (folder / victim).unlink()
    with pytest.raises(BundleError, match=rf"{victim}: listed in the manifest .* missing"):
        load_bundle(folder)


@pytest.mark.parametrize("name", ["../model.onnx", "/etc/passwd", "a/../../model.onnx", "sub/../../x",
                                  "C:\\model.onnx", "..\\model.onnx", "\\\\server\\share\\m.onnx", "", ".",
                                  "c:model.onnx"])
def test_escaping_file_names_are_refused(tmp_path, name):
    folder = write_bundle(tmp_path / "b", engines=[engine_dict("e.engine")])
    for where in ("model", "engine"):
        data = manifest_dict(folder)
        if where == "model":
            data["models"]["onnx"]["file"] = name
        else:
            data["engines"][0]["file"] = name
        rewrite(folder, data)
        with pytest.raises(BundleError, match="file name"):
            load_bundle(folder, verify=False)


def test_symlink_out_of_the_bundle_is_refused(tmp_path):
    folder = write_bundle(tmp_path / "b")
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"onnx model bytes")  # same content: the checksum would pass
    (folder / "model.onnx").unlink()
    (folder / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(folder)


def test_safe_relative_name_accepts_subfolders():
    assert safe_relative_name("engines/orin.fp16.engine", "t") == "engines/orin.fp16.engine"
    for bad in (None, 3, ["a"]):
        with pytest.raises(BundleError):
            safe_relative_name(bad, "t")


@pytest.mark.parametrize("version,hint", [(2, "upgrade hamnet-deploy"), (0, "re-export")])
def test_unknown_format_version(tmp_path, version, hint):
    folder = write_bundle(tmp_path / "b")
    data = manifest_dict(folder)
    data["format_version"] = version
    rewrite(folder, data)
    with pytest.raises(BundleError, match=f"format version {version} is not supported.*{hint}"):
        load_bundle(folder)


@pytest.mark.parametrize("field", ["format_version", "classes", "num_classes", "feature_dim", "snippet_seconds",
                                   "receptive_radius", "postprocess", "models"])
def test_missing_fields(tmp_path, field):
    folder = write_bundle(tmp_path / "b")
    data = manifest_dict(folder)
    del data[field]
    rewrite(folder, data)
    with pytest.raises(BundleError, match=f"{field}: missing"):
        load_bundle(folder)


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["models"]["onnx"].pop("sha256"), "models.onnx.sha256: missing"),
    (lambda d: d["models"]["onnx"].update(sha256="abc"), "64 lowercase hex"),
    (lambda d: d["models"].pop("onnx"), "no 'onnx' entry"),
    (lambda d: d["models"].update(tflite=d["models"]["onnx"]), "unknown model kind"),
    (lambda d: d.update(num_classes=5), "num_classes=5: does not match the 3 class names"),
    (lambda d: d.update(classes=["a", "a", "b"]), "twice"),
    (lambda d: d.update(feature_dim="16"), "feature_dim='16': expected a whole number"),
    (lambda d: d.update(feature_dim=True), "feature_dim=True: expected a whole number"),
    (lambda d: d.update(snippet_seconds=0), "snippet_seconds"),
    (lambda d: d["postprocess"].update(nms="fancy"), "postprocess.*nms"),
    (lambda d: d["postprocess"].update(bogus=1), "postprocess.*bogus"),
    (lambda d: d["engines"][0]["profile"].update(min_t=10, opt_t=5), "min_t <= opt_t"),
    (lambda d: d["engines"][0].pop("gpu_name"), r"engines\[0\].gpu_name: missing"),
    (lambda d: d["engines"][0].update(file="model.onnx"), "same file"),
])
def test_invalid_manifests(tmp_path, edit, match):
    folder = write_bundle(tmp_path / "b", engines=[engine_dict("e.engine")])
    data = manifest_dict(folder)
    edit(data)
    rewrite(folder, data)
    with pytest.raises(BundleError, match=match):
        load_bundle(folder, verify=False)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="bundle not found"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest"):
        load_bundle(tmp_path / "empty")
    (tmp_path / "empty" / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(tmp_path / "empty" / MANIFEST)
    (tmp_path / "empty" / MANIFEST).write_text("[]")
    with pytest.raises(BundleError, match="expected a JSON object"):
        load_bundle(tmp_path / "empty")


def test_existing_bundle_needs_force_and_is_replaced(tmp_path):
    target = tmp_path / "b"
    write_bundle(target)
    old_created = manifest_dict(target)["created"]
    with pytest.raises(BundleError, match="already exists; pass --force"):
        write_bundle(target)
    folder = write_bundle(target, force=True, int8=True)
    assert load_bundle(folder).has("onnx_int8")
    assert manifest_dict(target)["created"] >= old_created
    assert sorted(os.listdir(tmp_path)) == ["b"]


def test_a_folder_that_is_not_a_bundle_is_never_replaced(tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("x")
    for force in (False, True):
        with pytest.raises(BundleError, match="not a model bundle"):
            check_target(precious, force)
    assert (precious / "thesis.tex").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="not a folder"):
        check_target(tmp_path / "file", True)
    (tmp_path / "emptydir").mkdir()
    write_bundle(tmp_path / "emptydir")  # an empty folder is fine
    load_bundle(tmp_path / "emptydir")


def test_failure_leaves_nothing_behind(tmp_path):
    target = tmp_path / "b"
    with pytest.raises(RuntimeError), BundleStage(target) as stage:
        stage.file("model.onnx").write_bytes(b"half")
        raise RuntimeError("export crashed")
    assert os.listdir(tmp_path) == []
    write_bundle(target)
    before = sha256_file(target / "model.onnx")
    with pytest.raises(RuntimeError), BundleStage(target, force=True) as stage:
        stage.file("model.onnx").write_bytes(b"half")
        raise RuntimeError("export crashed")
    assert sha256_file(target / "model.onnx") == before  # the old bundle is untouched
    assert sorted(os.listdir(tmp_path)) == ["b"]


def test_engine_entries_are_checked_and_failed_builds_removed(tmp_path):
    with BundleStage(tmp_path / "b") as stage:
        stage.file("model.onnx").write_bytes(b"m")
        models = {"onnx": stage.model_entry("model.onnx", opset=17, precision="fp32", inputs=IO_IN,
                                            outputs=IO_OUT)}
        before = stage.snapshot()
        assert before == {"model.onnx"}
        stage.file("engine.partial").write_bytes(b"half an engine")
        with pytest.raises(BundleError, match="was not written"):
            stage.engine_entries([engine_dict("missing.engine")])
        bad = engine_dict("engine.partial", sha256="0" * 64)
        with pytest.raises(BundleError, match="does not match the sha256"):
            stage.engine_entries([bad])
        assert stage.remove_new(before) == ["engine.partial"]
        folder = stage.commit(build_manifest(classes=CLASSES, feature_dim=16, snippet_seconds=0.64,
                                             receptive_radius=2, postprocess={}, models=models))
    assert sorted(os.listdir(folder)) == [MANIFEST, "model.onnx"]
    mask = os.umask(0)
    os.umask(mask)
    assert (folder / "model.onnx").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (folder).stat().st_mode & 0o777 == 0o777 & ~mask
    assert load_bundle(folder).postprocess == PostprocessConfig()


def test_engine_entry_from_dict_validates():
    e = EngineEntry.from_dict({**engine_dict(), "sha256": "a" * 64, "compute_capability": 8.7}, "t")
    assert e.compute_capability == "8.7" and e.dla_core is None
    with pytest.raises(BundleError, match="dla_core"):
        EngineEntry.from_dict({**engine_dict(), "sha256": "a" * 64, "dla_core": "zero"}, "t")


def test_runtime_bundle_imports_without_torch_or_onnx():
    code = ("import sys; import hamnet_deploy.runtime.bundle; "
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt') if m in sys.modules]; "
            "assert not bad, bad")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_accuracy_verified_reads_the_guard_record(built_bundle, tmp_path):
    """`Bundle.accuracy_verified`: only a record of this very file, within its --max-drop."""
    import json
    import shutil

    from hamnet_deploy.runtime.bundle import load_bundle

    folder = Path(shutil.copytree(built_bundle, tmp_path / "b"))
    sha = load_bundle(folder).model("onnx").sha256

    def with_record(record):
        data = json.loads((folder / "manifest.json").read_text())
        data["source"]["verify"] = record
        (folder / "manifest.json").write_text(json.dumps(data))
        return load_bundle(folder).accuracy_verified("onnx")

    ok, why = with_record({"max_drop": 1.0, "videos": 4, "subset": "test", "pytorch": {"average_mAP": 0.40},
                           "onnx": {"average_mAP": 0.395, "sha256": sha}})
    assert ok and "within 1 points of PyTorch (39.50 vs 40.00, on 4 test videos)" in why
    ok, why = with_record({"max_drop": 0.2, "pytorch": {"average_mAP": 0.40},
                           "onnx": {"average_mAP": 0.395, "sha256": sha}})
    assert not ok and "drop of 0.50 points" in why
    ok, why = with_record({"max_drop": 1.0, "pytorch": {"average_mAP": 0.40},
                           "onnx": {"average_mAP": 0.40, "sha256": "0" * 64}})
    assert not ok and "not the one --verify measured" in why
    for broken in (None, "x", {"max_drop": "1", "pytorch": {}, "onnx": {}},
                   {"max_drop": 1.0, "pytorch": {"average_mAP": "x"}, "onnx": {"sha256": sha}}):
        assert not with_record(broken)[0]
