"""Inputs of the fuzz targets (fuzz/targets.py): `Draw` decodes arbitrary bytes into
shapes, values and settings (NaN, infinities, empty and very long inputs included),
seed files and documents for the byte targets (a seed mutated at the byte level, or a
JSON seed with one value replaced), and scratch files to load them from."""

from __future__ import annotations

import atexit
import csv
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hamnet_deploy.runtime.errors import HamnetError

CLASSES = ["Alpha", "Beta", "Gamma"]
FEATURE_DIM = 4
MIN_TOPK_RATIO = float(os.environ.get("HAMNET_FUZZ_MIN_TOPK_RATIO", "0.01"))
"""Smallest top-k ratio the post-processing targets draw; ratios below 1 must be refused
with a ConfigError by PostprocessConfig (they once crashed np.partition)."""

BIG = 10 ** 400
"""An integer no float can hold (json writes and reads it as a 401-digit literal)."""
TEXTS = ("", "1", "-1", "0.5", "1e999", "-1e999", "nan", "inf", "1" * 400, "-" + "9" * 400, "1e23", "0x10",
         "abc", "true", "none", "[0.1,0.5]", "[", "{}", '{"a": 1}', "1,2,3", ",", "\udcff", "\x00", "é",
         "soft", "hard", "softmax", "1_000", " 7 ", "2e-400")
"""Values a `--set key=VALUE` might carry (command-line text: non-UTF-8 bytes arrive as
surrogate escapes)."""

_SPECIAL = (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308, 5e-324, 1e-300, 3.5e38, -3.5e38, 1.0)


DOCUMENTED: tuple[type[BaseException], ...] = (HamnetError,)
"""What a target may raise: the typed errors of runtime/errors.py."""


def _documented(fn: Any) -> Any:
    """`fn()`, or None when it raised one of the DOCUMENTED errors."""
    try:
        return fn()
    except DOCUMENTED:
        return None


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
    if kind == 5:  # also numbers no float holds, and text that was not UTF-8 (surrogate escapes)
        return d.choice([0, 1, -1, 2, 17, 10**6, 0.5, 1.5, -0.5, 3, 1e-9, BIG, -BIG, 2**63, 2**64,
                         "\udcff", "a\ud800b", "1" * 400])
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
    return json.dumps(obj, indent=1).encode("utf-8", "surrogateescape")


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
