"""Inputs that used to get a misleading message (or none), and bundles whose model
would load weights the manifest does not checksum."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tests.helpers import cli, one_line_error


def _edited_bundle(src: Path, dst: Path, **fields) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.update(fields)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_onnx_external_data_is_never_loaded(built_bundle, tiny_data, tmp_path):
    """A bundle whose model.onnx (checksum updated) keeps its weights in an external
    file that no checksum covers: detect and the in-place export refuse it; editing the
    weights file cannot change what runs."""
    import onnx

    bundle = Path(shutil.copytree(built_bundle, tmp_path / "b"))
    model = onnx.load(str(bundle / "model.onnx"))
    onnx.save_model(model, str(bundle / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["models"]["onnx"]["sha256"] = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    video = sorted((tiny_data / "videos").iterdir())[0]
    one_line_error(cli("detect", video, "--model", bundle, "--backend", "onnxruntime"), "external data files")
    one_line_error(cli("detect", video, "--model", bundle), "external data files")
    one_line_error(cli("export", bundle, "--int8-cpu", "--calib", tiny_data), "external data files")
    assert not (bundle / "model.int8.onnx").exists()


def test_a_manifest_with_fewer_class_names_than_the_model_outputs(built_bundle, tiny_data, tmp_path):
    classes = json.loads((built_bundle / "manifest.json").read_text())["classes"]
    bundle = _edited_bundle(built_bundle, tmp_path / "b", classes=classes[:-1], num_classes=len(classes) - 1)
    video = sorted((tiny_data / "videos").iterdir())[0]
    line = one_line_error(cli("detect", video, "--model", bundle),
                          f"lists {len(classes) - 1} class names but model.onnx outputs {len(classes)} classes")
    assert str(bundle / "manifest.json") in line and "re-export the bundle" in line


def test_an_unusable_hamnet_cache_is_named(tmp_path, monkeypatch):
    from hamnet_deploy.export.tensorrt_build import default_timing_cache
    from hamnet_deploy.runtime.errors import ConfigError

    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HAMNET_CACHE", str(blocker))
    one_line_error(cli("train", "--epochs", 1, "--out", tmp_path / "run"),
                   "($HAMNET_CACHE): a file is in the way; set HAMNET_CACHE to a writable folder")
    try:
        default_timing_cache("NVIDIA H100", "9.0", "10.3.0")
    except ConfigError as exc:
        assert "HAMNET_CACHE" in str(exc)
    else:
        raise AssertionError("the TensorRT timing cache went around the cache check")


def test_results_files_that_are_not_what_eval_reads(tiny_data, tmp_path):
    ann = tiny_data / "annotations.json"
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    one_line_error(cli("eval", listed, "-a", ann), 'a JSON list; a results file is the ActivityNet object {"results"')
    listed.write_bytes(b"\xef\xbb\xbf[{}]")  # a UTF-8 byte-order mark: read as text, still a list
    one_line_error(cli("eval", listed, "-a", ann), "a JSON list")
    utf16 = tmp_path / "utf16.json"
    utf16.write_bytes('{"results": {}}'.encode("utf-16"))
    one_line_error(cli("eval", utf16, "-a", ann), "is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"results": {}}).encode())
    for empty in (bom, tmp_path / "empty.csv"):
        if empty.suffix == ".csv":
            empty.write_text("video,label,score,t_start,t_end\n")
        result = cli("eval", empty, "-a", ann)
        assert result.exit_code == 0, result.output
        assert "warning:" in result.output and "holds no detections: every AP is 0" in result.output
