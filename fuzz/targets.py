"""Fuzz targets: each takes arbitrary bytes and feeds them to one input path of the
package. The only exceptions a target may let out are the package's typed errors
(`runtime.errors.HamnetError` and its subclasses) - anything else is a finding. Some
targets also check properties of what comes back (an `AssertionError` is a finding too).

The same functions are driven by atheris (coverage-guided, `fuzz/run.py --engine
atheris`), by hypothesis (`fuzz/run.py --engine hypothesis`, and the short run in
`tests/reliability/test_fuzz_short.py`), and can replay a saved input:
`python fuzz/run.py --replay TARGET FILE`. What they are fed comes from fuzz/inputs.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from fuzz.inputs import (
    CLASSES,
    FEATURE_DIM,
    MIN_TOPK_RATIO,
    MODEL_BYTES,
    Draw,
    _content,
    _documented,
    _file,
    _json_bytes,
    annotation_seed,
    manifest_seed,
    npy_seeds,
    npz_seeds,
    results_csv_seed,
    results_seed,
    scratch,
)
from fuzz.settings_targets import target_overrides, target_postprocess_config, target_recipe


# --------------------------------------------------------------------------- #
#                                  targets                                    #
# --------------------------------------------------------------------------- #
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


def _draw_config(d: Draw) -> Any:
    from fuzz.inputs import DOCUMENTED
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


def _drawn(data: bytes, max_classes: int) -> tuple[Draw, Any, int] | None:
    """(the decoder, random post-processing settings, a class count), or None when the
    settings drawn are refused (a documented error)."""
    d = Draw(data)
    cfg = _draw_config(d)
    return None if cfg is None else (d, cfg, d.int(1, max_classes))


def target_localize(data: bytes) -> None:
    """`localize` on one video of random shape and values with random settings."""
    from hamnet_deploy.runtime.postprocess import localize

    drawn = _drawn(data, 5)
    if drawn is None:
        return
    d, cfg, C = drawn
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

    drawn = _drawn(data, 4)
    if drawn is None:
        return
    d, cfg, C = drawn
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
    "recipe": target_recipe,
    "overrides": target_overrides,
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
