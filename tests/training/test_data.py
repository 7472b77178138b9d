import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from hamnet_deploy.runtime.annotations import (
    Annotations,
    annotations_to_json,
    build_video,
    load_annotation_json,
)
from hamnet_deploy.runtime.errors import DataError
from hamnet_deploy.training.data import load_dataset, load_per_video, write_per_video
from hamnet_deploy.training.wtalc import load_wtalc, load_wtalc_annotations

CLASSES = ["Jump", "Run", "Throw"]
D = 8


def _videos(seed=0):
    """Raw tiny dataset: name -> (subset, duration, segments, labels, labels_all, features)."""
    rng = np.random.default_rng(seed)
    spec = [
        ("vid_a", "validation", 6.4, [[0.5, 2.0], [3.0, 4.5]], ["Jump", "Jump"], ["Jump"], 10),
        ("vid_b", "validation", 5.12, [[1.0, 3.25]], ["Run"], ["Run", "Throw"], 8),
        ("vid_c", "test", 3.84, [[0.0, 1.5], [2.0, 3.8]], ["Throw", "Run"], ["Run", "Throw"], 6),
    ]
    return {n: (sub, dur, seg, lab, lab_all, rng.standard_normal((T, D)).astype(np.float32))
            for n, sub, dur, seg, lab, lab_all, T in spec}


def _objects(items):
    arr = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        arr[i] = x
    return arr


def write_per_video_layout(root: Path, videos) -> Path:
    """annotations.json (via annotations_to_json) + videos/<name>.npy."""
    index = {c: i for i, c in enumerate(CLASSES)}
    ann = Annotations(list(CLASSES), {n: build_video(n, sub, dur, seg, lab, index)
                                      for n, (sub, dur, seg, lab, _, _) in videos.items()})
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "annotations.json").write_text(json.dumps(annotations_to_json(ann)))
    for n, v in videos.items():
        np.save(root / "videos" / f"{n}.npy", v[5])
    return root


def write_wtalc_layout(root: Path, videos, name="Tiny", sub="wtalc", **override) -> Path:
    """<Name>-I3D-JOINTFeatures.npy + <Name>-Annotations/, same formats as the real files."""
    folder = root / sub if sub else root
    ann = folder / f"{name}-Annotations"
    ann.mkdir(parents=True, exist_ok=True)
    vals = list(videos.values())
    files = {
        "classlist": np.array([c.encode() for c in CLASSES]),
        "videoname": np.array([n.encode() for n in videos]),
        "subset": np.array([v[0].encode() for v in vals]),
        "duration": np.array([[v[1]] for v in vals], dtype=np.float64),
        "labels": _objects([list(v[3]) for v in vals]),
        "labels_all": _objects([list(v[4]) for v in vals]),
        "segments": _objects([[list(s) for s in v[2]] for v in vals]),
    }
    files.update(override)
    for stem, arr in files.items():
        np.save(ann / f"{stem}.npy", arr, allow_pickle=True)
    feats = override.get("features", _objects([v[5] for v in vals]))
    np.save(folder / f"{name}-I3D-JOINTFeatures.npy", feats, allow_pickle=True)
    return root


def assert_same(a, b, labels=True):
    assert a.names == b.names and a.classes == b.classes and a.subsets == b.subsets
    assert len(a.features) == len(b.features)
    for x, y in zip(a.features, b.features, strict=True):
        assert x.dtype == y.dtype == np.float32 and x.shape == y.shape and x.tobytes() == y.tobytes()
    if labels:
        np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.durations, b.durations, atol=1e-6)
    for n in a.names:
        va, vb = a.annotations.videos[n], b.annotations.videos[n]
        np.testing.assert_allclose(va.segments, vb.segments, atol=1e-6)
        np.testing.assert_array_equal(va.labels, vb.labels)


# ---------------------------------------------------------------- real THUMOS14 timelines


def test_real_thumos_json_and_wtalc_annotations_agree(thumos_dir):
    js = load_annotation_json(thumos_dir / "thumos14-reduced.json")
    wt = load_wtalc_annotations(thumos_dir)  # folder holding the files directly
    for ann in (js, wt):
        assert len(ann.videos) == 412 and ann.num_classes == 20
        assert sum(len(v.labels) for v in ann.videos.values()) == 6365
    assert js.classes == wt.classes
    assert list(js.videos) == list(wt.videos)
    for name, v in js.videos.items():
        w = wt.videos[name]
        assert v.subset == w.subset and v.fps == w.fps
        assert v.duration == pytest.approx(w.duration, abs=5e-4)  # the JSON rounds to 3 decimals
        np.testing.assert_array_equal(v.segments, w.segments)
        np.testing.assert_array_equal(v.labels, w.labels)
    assert len(wt.names("validation")) == 200 and len(wt.names("test")) == 212


# ---------------------------------------------------------------- both layouts


def test_both_layouts_load_equal(tmp_path):
    videos = _videos()
    write_per_video_layout(tmp_path, videos)
    write_wtalc_layout(tmp_path, videos)
    per = load_dataset(tmp_path)  # both present: the per-video layout wins (no pickle)
    assert per.layout == "per-video"
    wt = load_dataset(tmp_path / "wtalc")
    assert wt.layout == "wtalc"
    assert_same(per, wt, labels=False)
    # video labels: per-video layout from segments; W-TALC from labels_all by default
    np.testing.assert_array_equal(per.labels, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    np.testing.assert_array_equal(wt.labels, [[1, 0, 0], [0, 1, 1], [0, 1, 1]])
    assert_same(per, load_wtalc(tmp_path, video_labels="segments"))
    explicit = load_dataset(annotation_file=tmp_path / "annotations.json", features_dir=tmp_path / "videos")
    assert_same(per, explicit)
    assert_same(per, load_dataset(tmp_path / "annotations.json"))
    assert_same(wt, load_dataset(tmp_path / "wtalc" / "Tiny-I3D-JOINTFeatures.npy"))
    assert per.feature_dim == D and per.num_classes == 3 and len(per) == 3
    np.testing.assert_array_equal(per.lengths, [10, 8, 6])
    np.testing.assert_allclose(per.durations, [6.4, 5.12, 3.84])


def test_subsets_and_select(tmp_path):
    ds = load_dataset(write_per_video_layout(tmp_path, _videos()))
    np.testing.assert_array_equal(ds.subset_indices("validation"), [0, 1])
    np.testing.assert_array_equal(ds.subset_indices(["test"]), [2])
    test = ds.select("test")
    assert test.names == ["vid_c"] and test.annotations.names() == ["vid_c"]
    assert test.features[0] is ds.features[2]
    np.testing.assert_array_equal(test.labels, ds.labels[2:])
    assert load_dataset(tmp_path, subset="validation").names == ["vid_a", "vid_b"]
    with pytest.raises(DataError, match="no video is in subset.*'test', 'validation'"):
        ds.select("training")


def test_wtalc_converts_to_per_video(tmp_path):
    wt = load_dataset(write_wtalc_layout(tmp_path / "src", _videos(), sub=""), allow_pickle_layout=True)
    write_per_video(wt, tmp_path / "out")
    assert_same(wt, load_dataset(tmp_path / "out"), labels=False)


def test_generated_synthetic_dataset_loads_the_same_both_ways(tmp_path):
    import hamnet_deploy.training.synth as synth
    synth.generate_dataset(tmp_path, synth.SynthConfig(videos=6, dim=16, seed=3), wtalc=True)
    per = load_dataset(tmp_path)
    wt = load_dataset(tmp_path / "wtalc")
    assert (per.layout, wt.layout) == ("per-video", "wtalc")
    assert len(per) == 6 and per.feature_dim == 16
    assert_same(per, wt)


# ---------------------------------------------------------------- bad inputs


def test_pickle_layout_can_be_refused(tmp_path):
    write_wtalc_layout(tmp_path, _videos())
    with pytest.raises(DataError, match="W-TALC layout.*refused"):
        load_dataset(tmp_path, allow_pickle_layout=False)


def test_nothing_there(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="no dataset found"):
        load_dataset(tmp_path)
    (tmp_path / "annotations.json").write_text("{}")
    with pytest.raises(DataError, match="no videos/ folder"):
        load_dataset(tmp_path)


def test_missing_feature_file(tmp_path):
    write_per_video_layout(tmp_path, _videos())
    (tmp_path / "videos" / "vid_b.npy").unlink()
    with pytest.raises(DataError, match=r"vid_b\.npy: feature file of video 'vid_b' not found"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("stem", ["segments", "classlist", "videoname"])
def test_missing_wtalc_annotation_file(tmp_path, stem):
    write_wtalc_layout(tmp_path, _videos())
    (tmp_path / "wtalc" / "Tiny-Annotations" / f"{stem}.npy").unlink()
    with pytest.raises(DataError, match=rf"{stem}\.npy: file not found"):
        load_dataset(tmp_path)


def test_missing_wtalc_annotation_folder(tmp_path):
    videos = _videos()
    write_wtalc_layout(tmp_path, videos)
    shutil.rmtree(tmp_path / "wtalc" / "Tiny-Annotations")
    with pytest.raises(DataError, match="Tiny-Annotations: annotation folder not found"):
        load_dataset(tmp_path)


def test_mismatched_counts(tmp_path):
    videos = _videos()
    feats = _objects([v[5] for v in videos.values()][:2])
    write_wtalc_layout(tmp_path, videos, features=feats)
    with pytest.raises(DataError, match="holds 2 feature arrays but .*videoname.npy lists 3 videos"):
        load_dataset(tmp_path)
    write_wtalc_layout(tmp_path, videos, subset=np.array([b"test", b"test"]))
    with pytest.raises(DataError, match=r"subset\.npy: 2 entries but videoname\.npy lists 3 videos"):
        load_wtalc_annotations(tmp_path / "wtalc" / "Tiny-Annotations")


def test_wrong_feature_dim(tmp_path):
    videos = _videos()
    sub, dur, seg, lab, la, f = videos["vid_b"]
    videos["vid_b"] = (sub, dur, seg, lab, la, np.zeros((8, D + 3), np.float32))
    write_per_video_layout(tmp_path, videos)
    with pytest.raises(DataError, match=r"vid_b\.npy: features are 11-D but 8-D are expected"):
        load_dataset(tmp_path)
    write_wtalc_layout(tmp_path, videos)
    with pytest.raises(DataError, match=r"JOINTFeatures\.npy: video 'vid_b': features are 11-D but 8-D are expected"):
        load_dataset(tmp_path / "wtalc")
    with pytest.raises(DataError, match=r"vid_a.*8-D but 2048-D are expected"):
        load_dataset(write_per_video_layout(tmp_path / "ok", _videos()), feature_dim=2048)


@pytest.mark.parametrize("bad", [np.zeros((6, D), np.int32), np.zeros(6, np.float32),
                                 np.zeros((2, 3, D), np.float32)])
def test_features_not_2d_float(tmp_path, bad):
    videos = _videos()
    videos["vid_c"] = videos["vid_c"][:5] + (bad,)
    write_per_video_layout(tmp_path, videos)
    with pytest.raises(DataError, match=r"vid_c.*features must be a 2-D floating array"):
        load_dataset(tmp_path)
    write_wtalc_layout(tmp_path, videos)
    with pytest.raises(DataError, match=r"video 'vid_c': features must be a 2-D floating array"):
        load_dataset(tmp_path / "wtalc")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_features(tmp_path, value):
    videos = _videos()
    videos["vid_a"][5][3, 2] = value
    videos["vid_a"][5][7, 0] = value
    write_per_video_layout(tmp_path, videos)
    with pytest.raises(DataError, match=r"vid_a.*2 of 10 snippets hold NaN or infinity \(first: snippet 3\)"):
        load_dataset(tmp_path)
    write_wtalc_layout(tmp_path, videos)
    with pytest.raises(DataError, match=r"video 'vid_a': 2 of 10 snippets hold NaN or infinity \(first: snippet 3\)"):
        load_dataset(tmp_path / "wtalc")


def test_zero_snippets(tmp_path):
    videos = _videos()
    videos["vid_b"] = videos["vid_b"][:5] + (np.zeros((0, D), np.float32),)
    write_per_video_layout(tmp_path, videos)
    with pytest.raises(DataError, match=r"vid_b.*no snippets \(T = 0\)"):
        load_dataset(tmp_path)
    write_wtalc_layout(tmp_path, videos)
    with pytest.raises(DataError, match=r"video 'vid_b': no snippets \(T = 0\)"):
        load_dataset(tmp_path / "wtalc")


def test_label_not_in_class_list(tmp_path):
    videos = _videos()
    vals = list(videos.values())
    labels = _objects([list(v[3]) for v in vals])
    labels[1] = ["Swim"]
    write_wtalc_layout(tmp_path, videos, labels=labels)
    with pytest.raises(DataError, match="video 'vid_b': label 'Swim' is not in the class list"):
        load_dataset(tmp_path)
    labels_all = _objects([list(v[4]) for v in vals])
    labels_all[2] = ["Run", "Swim"]
    write_wtalc_layout(tmp_path, videos, labels_all=labels_all)
    with pytest.raises(DataError, match=r"labels_all\.npy: video 'vid_c': label 'Swim' is not in the class list"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("segment,msg", [([4.0, 2.0], "reversed"), ([-1.0, 2.0], "negative")])
def test_bad_segments(tmp_path, segment, msg):
    videos = _videos()
    segs = _objects([[list(s) for s in v[2]] for v in videos.values()])
    segs[0] = [[0.5, 2.0], segment]
    write_wtalc_layout(tmp_path, videos, segments=segs)
    with pytest.raises(DataError, match=f"video 'vid_a': segment .* is {msg}"):
        load_dataset(tmp_path)
    write_per_video_layout(tmp_path / "pv", videos)
    js = json.loads((tmp_path / "pv" / "annotations.json").read_text())
    js["database"]["vid_a"]["annotations"][1]["segment"] = segment
    (tmp_path / "pv" / "annotations.json").write_text(json.dumps(js))
    with pytest.raises(DataError, match=f"video 'vid_a': segment .* is {msg}"):
        load_dataset(tmp_path / "pv")


def test_malformed_wtalc_segments(tmp_path):
    videos = _videos()
    segs = _objects([[list(s) for s in v[2]] for v in videos.values()])
    segs[1] = [[1.0, 2.0, 3.0]]
    write_wtalc_layout(tmp_path, videos, segments=segs)
    with pytest.raises(DataError, match=r"segments\.npy: video 'vid_b': segments must be a list of \[start, end\]"):
        load_dataset(tmp_path)


def test_duplicate_video_names(tmp_path):
    write_wtalc_layout(tmp_path, _videos(), videoname=np.array([b"vid_a", b"vid_b", b"vid_a"]))
    with pytest.raises(DataError, match="video 'vid_a' appears twice"):
        load_dataset(tmp_path)


def _corrupt(path: Path, kind: str) -> None:
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:-9])
    elif kind == "header":
        path.write_bytes(path.read_bytes()[:20])
    elif kind == "object":
        np.save(path, _objects([np.zeros((3, D), np.float32)]), allow_pickle=True)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(np.zeros((3, D), np.float32)))
    elif kind == "garbage":
        path.write_bytes(b"not a numpy file")
    elif kind == "npz":
        with open(path, "wb") as fh:
            np.savez(fh, x=np.zeros((3, D), np.float32))


@pytest.mark.parametrize("kind,msg", [
    ("truncated", "truncated or corrupt"),
    ("header", "truncated or corrupt"),
    ("object", "holds an object array, refused"),
    ("pickle", "a pickle, refused"),
    ("garbage", "not a NumPy .npy/.npz file"),
    ("npz", r"\.npz holds 1 array .*none is named 'features'|loaded"),
])
def test_corrupt_or_pickled_npy(tmp_path, kind, msg):
    """The training loader reads feature files with detect's reader: same checks, same messages."""
    write_per_video_layout(tmp_path, _videos())
    _corrupt(tmp_path / "videos" / "vid_b.npy", kind)
    if kind == "npz":  # an .npz with its one array is read as detect reads it
        assert load_dataset(tmp_path).features[1].shape == (3, D)
        return
    with pytest.raises(DataError, match=rf"vid_b\.npy: .*{msg}"):
        load_dataset(tmp_path)


def test_corrupt_wtalc_file(tmp_path):
    write_wtalc_layout(tmp_path, _videos())
    p = tmp_path / "wtalc" / "Tiny-I3D-JOINTFeatures.npy"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(DataError, match=r"Tiny-I3D-JOINTFeatures\.npy: cannot read .*truncated or corrupt"):
        load_dataset(tmp_path)


def test_video_id_cannot_escape_features_folder(tmp_path):
    write_per_video_layout(tmp_path, _videos())
    js = json.loads((tmp_path / "annotations.json").read_text())
    js["database"]["../evil"] = js["database"].pop("vid_c")
    (tmp_path / "annotations.json").write_text(json.dumps(js))
    with pytest.raises(DataError, match="cannot be used as a feature file name"):
        load_per_video(tmp_path / "annotations.json", tmp_path / "videos")


def test_several_wtalc_datasets_need_a_name(tmp_path):
    videos = _videos()
    write_wtalc_layout(tmp_path, videos, name="One", sub="")
    write_wtalc_layout(tmp_path, videos, name="Two", sub="")
    with pytest.raises(DataError, match="several W-TALC datasets"):
        load_dataset(tmp_path)
    assert load_dataset(tmp_path, name="Two").source.endswith("Two-I3D-JOINTFeatures.npy")
