"""Fuzz targets: each takes arbitrary bytes and feeds them to one input path of the
package. The only exceptions a target may let out are the package's typed errors
(`runtime.errors.HamnetError` and its subclasses) - anything else is a finding. Some
targets also check properties of what comes back (an `AssertionError` is a finding too).

The same functions are driven by atheris (coverage-guided, `fuzz/run.py --engine
atheris`), by hypothesis (`fuzz/run.py --engine hypothesis`, and the short run in
`tests/reliability/test_fuzz_short.py`), and can replay a saved input:
`python fuzz/run.py --replay TARGET FILE`.

Byte targets (the file loaders) get the bytes as a file's content, or - when the
first byte says so - a seed file mutated at the byte level or, for JSON, a seed
document with one value replaced by an arbitrary JSON value. Structured targets
(post-processing, evaluation) decode the bytes with `Draw` into shapes, values and
settings, including NaN, infinities, empty and very long inputs.
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.errors import HamnetError

DOCUMENTED: tuple[type[BaseException], ...] = (HamnetError,)
"""What a target may raise: the typed errors of runtime/errors.py."""

CLASSES = ["Alpha", "Beta", "Gamma"]
FEATURE_DIM = 4
MIN_TOPK_RATIO = float(os.environ.get("HAMNET_FUZZ_MIN_TOPK_RATIO", "0.01"))
"""Smallest top-k ratio the post-processing targets draw; ratios below 1 must be refused
with a ConfigError by PostprocessConfig (they once crashed np.partition)."""

_SPECIAL = (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308, 5e-324, 1e-300, 3.5e38, -3.5e38, 1.0)


# --------------------------------------------------------------------------- #
#                             decoding the bytes                              #
# --------------------------------------------------------------------------- #
class Draw:
    """Deterministic values from a byte string (zeros once it runs out), like
    atheris.FuzzedDataProvider but usable without atheris."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0

    def raw(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk + b"\0" * (n - len(chunk))

    def rest(self) -> bytes:
        chunk = self.data[self.pos:]
        self.pos = len(self.data)
        return chunk

    def int(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""
        span = hi - lo + 1
        width = max(1, (span.bit_length() + 7) // 8)
        return lo + int.from_bytes(self.raw(width), "little") % span

    def bool(self) -> bool:
        return self.int(0, 1) == 1

    def choice(self, seq: Any) -> Any:
        return seq[self.int(0, len(seq) - 1)]

    def float(self, lo: float = -10.0, hi: float = 10.0, special: bool = True) -> float:
        if special and self.int(0, 7) == 0:
            return float(self.choice(_SPECIAL))
        frac = self.int(0, 2**32 - 1) / (2**32 - 1)
        return lo + (hi - lo) * frac

    def array(self, shape: tuple[int, ...], lo: float, hi: float, special: bool = True) -> np.ndarray:
        """float64 array: values from up to 256 drawn uint16s tiled over `shape` (cheap
        for long inputs), a few specials sprinkled in when `special`."""
        n = int(np.prod(shape)) if shape else 1
        k = min(max(n, 1), 256)
        base = np.frombuffer(self.raw(2 * k), dtype="<u2").astype(np.float64) / 65535.0
        flat = np.resize(lo + (hi - lo) * base, n) if n else np.zeros(0)
        if special and n:
            for _ in range(self.int(0, 3)):
                flat[self.int(0, n - 1)] = self.choice(_SPECIAL)
        return flat.reshape(shape)


def _json_value(d: Draw, depth: int = 0) -> Any:
    """An arbitrary JSON value (what a hand-edited file might hold)."""
    kind = d.int(0, 9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return d.bool()
    if kind == 2:
        return d.int(-(2**63), 2**64)
    if kind == 3:
        v = d.float(-1e6, 1e6)
        return v if math.isfinite(v) else d.choice([1e308, -1e308, 0.0])
    if kind == 4:
        return d.choice(["", "test", "validation", "Alpha", "soft", "hard", "none", "../x", "/abs",
                         "model.onnx", "nan", "1e999", "\x00", "é", "Beta", "fp32", "-1"])
    if kind == 5:
        return d.choice([0, 1, -1, 2, 17, 10**6, 0.5, 1.5, -0.5, 3, 1e-9])
    if kind == 6:
        return d.choice([[0, 1], [1, 0], [], [0.1, 0.5, 0.9], [-1, 2], ["a", "b"], {}])
    if kind in (7, 8):
        return [_json_value(d, depth + 1) for _ in range(d.int(0, 3))]
    return {d.choice(["a", "segment", "label", "file", "score", "epoch", "", "x"]): _json_value(d, depth + 1)
            for _ in range(d.int(0, 3))}


def _json_paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _json_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:8]):
            out += _json_paths(v, (*prefix, i))
    return out


def _json_mutate(doc: Any, d: Draw) -> Any:
    """`doc` with a few values (or keys) replaced, removed or duplicated."""
    doc = json.loads(json.dumps(doc))
    for _ in range(d.int(1, 3)):
        paths = _json_paths(doc)
        path = d.choice(paths)
        if not path:
            doc = _json_value(d)
            continue
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
        except (KeyError, IndexError, TypeError):
            continue
        last = path[-1]
        op = d.int(0, 3)
        if op == 0 and isinstance(parent, dict):
            parent.pop(last, None)
        elif op == 1 and isinstance(parent, list):
            parent.append(json.loads(json.dumps(parent[last])))
        else:
            parent[last] = _json_value(d)
    return doc


def _byte_mutate(seed: bytes, d: Draw) -> bytes:
    """A seed with byte-level edits: flips, truncation, insertion, overwrites."""
    out = bytearray(seed)
    for _ in range(d.int(1, 4)):
        op = d.int(0, 4)
        pos = d.int(0, max(len(out), 1) - 1) if out else 0
        if op == 0 and out:
            out[pos] ^= 1 << d.int(0, 7)
        elif op == 1:
            del out[d.int(0, len(out)):]
        elif op == 2:
            out[pos:pos] = d.raw(d.int(1, 16))
        elif op == 3 and out:
            out[pos:pos + 8] = d.raw(8)
        else:  # an interesting integer, little endian (header lengths, sizes)
            out[pos:pos + 4] = d.choice([b"\xff\xff\xff\x7f", b"\0\0\0\0", b"\xff\xff", b"\x01\x00"])
    return bytes(out)


# --------------------------------------------------------------------------- #
#                                   seeds                                     #
# --------------------------------------------------------------------------- #
def _npy(arr: np.ndarray, allow_pickle: bool = False, version: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    if version is None:
        np.save(buf, arr, allow_pickle=allow_pickle)
    else:
        from numpy.lib import format as npy_format

        npy_format.write_array(buf, arr, version=version, allow_pickle=allow_pickle)
    return buf.getvalue()


def _npz(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _feature_array() -> np.ndarray:
    return np.linspace(-1, 1, 5 * FEATURE_DIM, dtype=np.float32).reshape(5, FEATURE_DIM)


def npy_seeds() -> list[bytes]:
    x = _feature_array()
    return [_npy(x), _npy(x.astype(np.float16)), _npy(x.astype(">f8")), _npy(np.asfortranarray(x)),
            _npy(x.astype(np.int32)), _npy(x[:, 0]), _npy(x[None]), _npy(x[:0]), _npy(x[:1]),
            _npy(x, version=(2, 0)), _npy(np.array([x], dtype=object), allow_pickle=True),
            _npy(np.zeros((3, 2), dtype=[("a", "<f4"), ("b", "<i4")]))]


def npz_seeds() -> list[bytes]:
    x = _feature_array()
    return [_npz(features=x), _npz(True, features=x), _npz(a=x), _npz(a=x, b=x), _npz(),
            _npz(True, features=x.astype(np.float64)), _npz(features=np.array([x], dtype=object))]


def annotation_seed() -> dict[str, Any]:
    return {"classes": list(CLASSES), "database": {
        "v1": {"subset": "test", "duration": 30.0, "fps": 25.0,
               "annotations": [{"segment": [1.0, 4.5], "label": "Alpha"},
                               {"segment": [10.0, 12.0], "label": "Beta"}]},
        "v2": {"subset": "validation", "duration": 12.8, "annotations": []},
        "v3": {"subset": "test", "duration": 8.0, "annotations": [{"segment": [0.0, 8.0], "label": "Gamma"}]}}}


def results_seed() -> dict[str, Any]:
    return {"version": "VERSION 1.3", "results": {
        "v1": [{"label": "Alpha", "score": 0.9, "segment": [1.2, 4.0]},
               {"label": "Beta", "score": 0.4, "segment": [9.0, 12.5]}],
        "v3": [{"label": "Gamma", "score": 0.7, "segment": [0.5, 7.5]}],
        "zz": [{"label": "Alpha", "score": 0.1, "segment": [0.0, 1.0]}]}}


def results_csv_seed() -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("video", "label", "score", "t_start", "t_end"))
    w.writerow(("v1", "Alpha", "0.9", "1.2", "4.0"))
    w.writerow(("v3", "Gamma", "0.7", "0.5", "7.5"))
    return buf.getvalue().encode()


MODEL_BYTES = b"not really an onnx model, but the checksums only need bytes"


def manifest_seed() -> dict[str, Any]:
    import hashlib

    from hamnet_deploy.runtime.postprocess import PostprocessConfig

    sha = hashlib.sha256(MODEL_BYTES).hexdigest()
    spec_in = [{"name": "features", "dtype": "float32", "shape": ["batch", "T", FEATURE_DIM]}]
    spec_out = [{"name": "cas", "dtype": "float32", "shape": ["batch", "T", len(CLASSES) + 1]},
                {"name": "attention", "dtype": "float32", "shape": ["batch", "T", 1]}]
    return {"format_version": 1, "package_version": "0", "created": "", "classes": list(CLASSES),
            "num_classes": len(CLASSES), "feature_dim": FEATURE_DIM, "snippet_seconds": 0.64,
            "receptive_radius": 2, "postprocess": PostprocessConfig().to_dict(),
            "models": {"onnx": {"file": "model.onnx", "sha256": sha, "opset": 17, "precision": "fp32",
                                "inputs": spec_in, "outputs": spec_out}},
            "engines": [{"file": "model.engine", "sha256": sha, "precision": "fp16", "tensorrt_version": "10.3.0",
                         "gpu_name": "NVIDIA H100", "compute_capability": "9.0",
                         "profile": {"min_t": 1, "opt_t": 512, "max_t": 4096, "max_batch": 4}, "dla_core": None}],
            "config": {}, "source": {}}


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=1).encode()


# --------------------------------------------------------------------------- #
#                               scratch files                                 #
# --------------------------------------------------------------------------- #
_SCRATCH: list[Path] = []


def scratch() -> Path:
    """A per-process scratch folder, removed at exit."""
    if not _SCRATCH:
        # fuzz/run.py names one for atheris children (libFuzzer exits without running atexit)
        parent = os.environ.get("HAMNET_FUZZ_SCRATCH") or None
        path = Path(tempfile.mkdtemp(prefix="hamnet-fuzz-", dir=parent))
        _SCRATCH.append(path)
        atexit.register(shutil.rmtree, path, True)
    return _SCRATCH[0]


def _file(name: str, content: bytes) -> Path:
    path = scratch() / name
    path.write_bytes(content)
    return path


def _content(data: bytes, seeds: list[bytes], json_seeds: list[Any] = ()) -> bytes:
    """File content from fuzz bytes: raw (mode 0), a byte-mutated seed (1) or a
    JSON-mutated seed (2)."""
    d = Draw(data)
    mode = d.int(0, 3)
    if mode == 0 or not seeds:
        return d.rest()
    if mode == 3 and json_seeds:
        return _json_bytes(_json_mutate(d.choice(list(json_seeds)), d))
    seed = d.choice(seeds)
    return seed if mode == 2 else _byte_mutate(seed, d)


# --------------------------------------------------------------------------- #
#                                  targets                                    #
# --------------------------------------------------------------------------- #
def _documented(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except DOCUMENTED:
        return None


def target_npy(data: bytes) -> None:
    """`.npy` feature files: `runtime.feature_files.load_features`, the one reader of
    `hamnet detect` and of the per-video training layout."""
    from hamnet_deploy.runtime.feature_files import load_features

    path = _file("video.npy", _content(data, npy_seeds()))
    for dim in (None, FEATURE_DIM):
        out = _documented(lambda dim=dim: load_features(path, dim))
        if out is not None:
            assert out.dtype == np.float32 and out.ndim == 2 and out.shape[0] >= 1
            assert np.isfinite(out).all()


def target_npz(data: bytes) -> None:
    """`.npz` feature files through `runtime.feature_files.load_features`."""
    from hamnet_deploy.runtime.feature_files import load_features

    path = _file("video.npz", _content(data, npz_seeds()))
    out = _documented(lambda: load_features(path, None))
    if out is not None:
        assert out.dtype == np.float32 and out.ndim == 2 and out.shape[0] >= 1 and np.isfinite(out).all()


def target_annotations(data: bytes) -> None:
    """The annotation JSON loader, then an evaluation against its own ground truth."""
    from hamnet_deploy.runtime.annotations import annotations_to_json, load_annotation_json
    from hamnet_deploy.runtime.detections import Detections
    from hamnet_deploy.runtime.evaluation import evaluate_detection

    seed = annotation_seed()
    path = _file("annotations.json", _content(data, [_json_bytes(seed)], [seed]))
    ann = _documented(lambda: load_annotation_json(path))
    if ann is None:
        return
    json.dumps(annotations_to_json(ann))
    rows = [(name, int(c), float(s), float(e)) for name, v in ann.videos.items()
            for (s, e), c in zip(v.segments, v.labels, strict=True)]
    if rows:
        dets = Detections.from_arrays(ann.classes, np.array([r[0] for r in rows], dtype=object),
                                      [r[1] for r in rows], [1.0] * len(rows), [r[2] for r in rows],
                                      [r[3] for r in rows])
        res = _documented(lambda: evaluate_detection(ann, dets))
        if res is not None:
            scored = res.ap[:, ~np.isnan(res.ap[0])]
            assert np.allclose(scored, 1.0), "the ground truth as predictions must score AP 1"


def target_results(data: bytes) -> None:
    """The results reader (ActivityNet JSON or CSV), then evaluation of what it read."""
    from hamnet_deploy.runtime.annotations import Annotations, build_video
    from hamnet_deploy.runtime.detections import read_results
    from hamnet_deploy.runtime.evaluation import evaluate_detection

    seed = results_seed()
    content = _content(data, [_json_bytes(seed), results_csv_seed()], [seed])
    path = _file("results.json" if content.lstrip()[:1] == b"{" else "results.csv", content)
    dets = _documented(lambda: read_results(path, CLASSES))
    if dets is None:
        return
    assert np.isfinite(dets.score).all() and (dets.t_end >= dets.t_start).all()
    index = {c: i for i, c in enumerate(CLASSES)}
    gt = Annotations(list(CLASSES))
    for name, v in annotation_seed()["database"].items():
        gt.videos[name] = build_video(name, v["subset"], v["duration"], [a["segment"] for a in v["annotations"]],
                                      [a["label"] for a in v["annotations"]], index)
    res = _documented(lambda: evaluate_detection(gt, dets, subset="test"))
    if res is not None:
        scored = res.ap[:, ~np.isnan(res.ap[0])]
        assert ((scored >= 0) & (scored <= 1 + 1e-9)).all()


def target_manifest(data: bytes) -> None:
    """A bundle's manifest.json through `runtime.bundle.load_bundle` (checksums, file
    names that must stay inside the bundle, post-processing settings)."""
    from hamnet_deploy.runtime.bundle import load_bundle
    from hamnet_deploy.runtime.manifest import MANIFEST

    folder = scratch() / "bundle"
    folder.mkdir(exist_ok=True)
    for p in folder.iterdir():
        if p.is_file() or p.is_symlink():
            p.unlink()
    (folder / "model.onnx").write_bytes(MODEL_BYTES)
    (folder / "model.engine").write_bytes(MODEL_BYTES)
    seed = manifest_seed()
    (folder / MANIFEST).write_bytes(_content(data, [_json_bytes(seed)], [seed]))
    bundle = _documented(lambda: load_bundle(folder))
    if bundle is None:
        return
    _documented(lambda: bundle.postprocess)
    root = folder.resolve()
    for kind in bundle.kinds:
        path = bundle.model_path(kind).resolve()
        assert path.is_relative_to(root), f"{path} is outside the bundle"
    for engine in bundle.engines:
        assert bundle.engine_path(engine).resolve().is_relative_to(root)


def target_postprocess_config(data: bytes) -> None:
    """`PostprocessConfig.from_dict` on arbitrary mappings; what it accepts round-trips."""
    from hamnet_deploy.runtime.postprocess import PostprocessConfig

    d = Draw(data)
    base = PostprocessConfig().to_dict()
    keys = [*base, "unknown", ""]
    raw: Any = {}
    for _ in range(d.int(0, 6)):
        raw[d.choice(keys)] = _json_value(d)
    if d.int(0, 15) == 0:
        raw = _json_value(d)
    cfg = _documented(lambda: PostprocessConfig.from_dict(raw))
    if cfg is not None:
        again = PostprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg


def _draw_config(d: Draw) -> Any:
    from hamnet_deploy.runtime.postprocess import PostprocessConfig

    nms = d.choice(["soft", "hard", "none"])
    thresholds = tuple(d.float(-0.2, 1.2, special=d.int(0, 7) == 0) for _ in range(d.int(1, 12)))
    try:
        return PostprocessConfig(
            topk_ratio=max(MIN_TOPK_RATIO, d.choice([10.0, 20.0, 1.0, 2.5, 1e9, 0.3, 0.5, 0.9,
                                                     math.exp(d.float(math.log(0.01), math.log(50.0), special=False))])),
            class_threshold=d.choice([0.2, 0.0, 1.0, d.float(0, 1, special=False)]),
            action_thresholds=thresholds, outer_ratio=d.choice([0.25, 0.0, 3.0, d.float(0, 2, special=False)]),
            score_weight=d.choice([0.2, 0.0, -1.0, 1e6]), nms=nms,
            nms_sigma=d.choice([0.3, 1e-9, 5.0]), nms_iou=d.choice([0.5, 1e-6, 1.0]),
            legacy_nms_length=d.bool(), max_detections=d.choice([None, 1, 3, 100]),
            snippet_seconds=d.choice([0.64, 1e-6, 1.0, 1e6]))
    except DOCUMENTED:
        return None


def _draw_video(d: Draw, num_classes: int | None) -> tuple[Any, Any, Any, bool]:
    """(cas, attention, duration, sane): `sane` when the values are what a real model
    gives (finite logits of reasonable size, attention in [0, 1], matching shapes)."""
    size = d.int(0, 15)
    if size == 0:
        T = d.choice([0, 1, 2])
    elif size < 12:
        T = d.int(1, 64)
    elif size < 15:
        T = d.int(65, 2000)
    else:
        T = d.choice([10_000, 100_000])
    C1 = (num_classes + 1) if num_classes is not None and d.int(0, 7) else d.int(0, 6)
    special = d.int(0, 3) == 0
    scale = d.choice([1.0, 5.0, 30.0, 1e30])
    cas = d.array((T, C1), -scale, scale, special)
    att = d.array((T,), 0.0, 1.0, special)
    shape_kind = d.int(0, 9)
    sane = not special and scale < 1e6 and C1 >= 2 and T >= 1
    if shape_kind == 0:
        att = att[:, None]
    elif shape_kind == 1:
        att = np.resize(att, (T, 2)) if T else att
        sane = sane and T == 0
    elif shape_kind == 2:
        att = np.append(att, 0.5)
        sane = False
    elif shape_kind == 3:
        att = att * d.choice([-1.0, 2.0, 1e300])
        sane = False
    dtype = d.choice([np.float64, np.float32, np.float64, np.float16, np.int64, np.bool_, object, np.complex64])
    if dtype is not np.float64:
        sane = sane and dtype in (np.float32,)
        with np.errstate(all="ignore"):
            cas = cas.astype(dtype)
    duration = d.choice([None, None, 10.0, 0.64, 1e9, 0.0, -1.0, math.nan, "abc", T * 0.64 + 1.0])
    if duration is not None and not (isinstance(duration, float) and math.isfinite(duration) and duration > 0):
        sane = False
    return cas, att, duration, sane


def _check_detections(dets: Any, videos: list[tuple[str, Any]], num_classes: int) -> None:
    assert len(dets.classes) == num_classes
    assert np.isfinite(dets.score).all(), "non-finite detection score from sane inputs"
    assert np.isfinite(dets.t_start).all() and np.isfinite(dets.t_end).all()
    assert (dets.t_end > dets.t_start).all() and (dets.t_start >= 0).all()
    assert ((dets.label >= 0) & (dets.label < num_classes)).all()
    limits = dict(videos)
    for v, e in zip(dets.video.tolist(), dets.t_end.tolist(), strict=True):
        if limits.get(v) is not None:
            assert e <= limits[v] + 1e-9


def target_localize(data: bytes) -> None:
    """`localize` on one video of random shape and values with random settings."""
    from hamnet_deploy.runtime.postprocess import localize

    d = Draw(data)
    cfg = _draw_config(d)
    if cfg is None:
        return
    C = d.int(1, 5)
    cas, att, duration, sane = _draw_video(d, C)
    classes = CLASSES[:1] * C if d.int(0, 7) == 0 else [f"c{i}" for i in range(C)]
    if d.int(0, 7) == 0:
        classes = None
    dets = _documented(lambda: localize(cas, att, cfg, video="v", duration=duration, classes=classes))
    if dets is not None and sane and np.asarray(cas).shape[1] == C + 1:
        _check_detections(dets, [("v", duration)], C)


def target_localize_many(data: bytes) -> None:
    """`localize_many` on a few videos, equal to `localize` one at a time."""
    from hamnet_deploy.runtime.detections import Detections
    from hamnet_deploy.runtime.postprocess import localize, localize_many

    d = Draw(data)
    cfg = _draw_config(d)
    if cfg is None:
        return
    C = d.int(1, 4)
    items, all_sane = [], True
    for i in range(d.int(0, 4)):
        cas, att, duration, sane = _draw_video(d, C)
        all_sane = all_sane and sane and np.asarray(cas).shape[1] == C + 1
        items.append((f"v{i}", cas, att, duration))
    classes = [f"c{i}" for i in range(C)]
    dets = _documented(lambda: localize_many(items, cfg, classes=classes))
    if dets is None or not all_sane:
        return
    _check_detections(dets, [(v, dur) for v, _, _, dur in items], C)
    one = Detections.concatenate([localize(c, a, cfg, video=v, duration=dur, classes=classes)
                                  for v, c, a, dur in items], classes)
    assert len(one) == len(dets) and list(one.video) == list(dets.video)
    np.testing.assert_array_equal(one.label, dets.label)
    np.testing.assert_allclose(one.score, dets.score, rtol=1e-12, atol=1e-12)


def target_evaluate(data: bytes) -> None:
    """`evaluate_detection` on random ground truth, detections, thresholds, subsets,
    exclusions and Ambiguous regions."""
    from hamnet_deploy.runtime.annotations import Annotations, build_video
    from hamnet_deploy.runtime.detections import Detections
    from hamnet_deploy.runtime.evaluation import evaluate_detection

    d = Draw(data)
    C = d.int(1, 4)
    classes = [f"c{i}" for i in range(C)]
    index = {c: i for i, c in enumerate(classes)}
    gt = Annotations(list(classes))
    for v in range(d.int(0, 4)):
        n = d.int(0, 6)
        starts = [d.float(0, 100, special=False) for _ in range(n)]
        segs = [[s, s + d.choice([d.float(0, 30, special=False), 1e-9, 0.0, -1.0])] for s in starts]
        labels = [d.choice(classes) for _ in range(n)]
        video = _documented(lambda v=v, segs=segs, labels=labels: build_video(
            f"v{v}", d.choice(["test", "validation"]), 120.0, segs, labels, index))
        if video is not None:
            gt.videos[video.name] = video
    n = d.int(0, 40)
    names = [*gt.videos, "unknown"]
    sane = True
    starts = d.array((n,), -10, 110, special=False)
    lengths = d.array((n,), 0, 40, special=d.int(0, 5) == 0)
    scores = d.array((n,), 0, 1, special=d.int(0, 5) == 0)
    if not (np.isfinite(lengths).all() and np.isfinite(scores).all()):
        sane = False
    with np.errstate(all="ignore"):
        ends = starts + lengths
    dets = _documented(lambda: Detections.from_arrays(
        classes, np.array([d.choice(names) for _ in range(n)], dtype=object),
        [d.int(0, C - 1) for _ in range(n)], scores, starts, ends))
    if dets is None:
        return
    thresholds = d.choice([(0.5,), (0.1, 0.3, 0.5, 0.7), (1.0,), (1e-9, 1.0), (0.0,), (math.nan,), (2.0,), ()])
    subset = d.choice([None, "test", "validation", "nope"])
    exclude = [d.choice(names) for _ in range(d.int(0, 2))]
    ambiguous = None
    if d.bool():
        ambiguous = {d.choice(names): d.array((d.int(0, 3), 2), 0, 120, special=False) for _ in range(d.int(0, 2))}
    res = _documented(lambda: evaluate_detection(gt, dets, thresholds, subset=subset, exclude=exclude,
                                                 ambiguous=ambiguous))
    if res is None:
        return
    assert res.ap.shape == (len(res.thresholds), C)
    if sane:
        scored = res.ap[:, ~np.isnan(res.ap[0])]
        assert ((scored >= 0) & (scored <= 1 + 1e-9)).all(), res.ap
        m = res.map
        assert np.all(np.isnan(m) | ((m >= 0) & (m <= 1 + 1e-9)))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "npy": target_npy,
    "npz": target_npz,
    "annotations": target_annotations,
    "results": target_results,
    "manifest": target_manifest,
    "postprocess_config": target_postprocess_config,
    "localize": target_localize,
    "localize_many": target_localize_many,
    "evaluate": target_evaluate,
}


def seeds(name: str) -> list[bytes]:
    """Starting inputs for a target (atheris corpus; hypothesis examples)."""
    d0, d1, d2, d3 = b"\x00", b"\x01", b"\x02", b"\x03"
    if name == "npy":
        return [d0 + s for s in npy_seeds()] + [d2 + bytes([i]) for i in range(len(npy_seeds()))]
    if name == "npz":
        return [d0 + s for s in npz_seeds()] + [d2 + bytes([i]) for i in range(len(npz_seeds()))]
    if name in ("annotations", "results", "manifest"):
        return [d2, d2 + d1, d1 + b"\x05\x00\x01", d3 + b"\x01\x02\x03", d3 + b"\x07\x01\x00\x04"]
    return [b"", bytes(range(256)), b"\x07" * 64, b"\xff" * 64, b"\x01\x02\x03\x04" * 16]
