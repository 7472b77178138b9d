"""Finding and checking feature files (runtime.feature_files): every bad file is a
DataError naming the file and the reason; nothing is ever unpickled."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from hamnet_deploy.runtime.errors import DataError
from hamnet_deploy.runtime.feature_files import (
    find_feature_files,
    load_features,
    video_id,
)

D = 8


def feats(t=10, d=D, seed=0):
    return np.random.default_rng(seed).normal(size=(t, d)).astype(np.float32)


def test_good_npy_and_npz(tmp_path):
    x = feats()
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", x)  # a single array, any name
    np.savez(tmp_path / "c.npz", other=np.zeros(3), features=x)  # the `features` key
    np.save(tmp_path / "d.npy", x.astype(np.float64))
    np.save(tmp_path / "e.npy", x.astype(np.float16))
    for name in ("a.npy", "b.npz", "c.npz", "d.npy"):
        got = load_features(tmp_path / name, D)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, x)
    assert load_features(tmp_path / "e.npy").shape == (10, D)


def write_bad(folder, pickled_marker):
    x = feats()
    np.save(folder / "truncated.npy", x)
    data = (folder / "truncated.npy").read_bytes()
    (folder / "truncated.npy").write_bytes(data[: len(data) - 50])
    np.save(folder / "wrong_dim.npy", feats(d=D + 1))
    nan = x.copy()
    nan[3, 2] = np.nan
    np.save(folder / "has_nan.npy", nan)
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = x, pickled_marker
    np.save(folder / "pickled.npy", obj, allow_pickle=True)


class Marker:
    """Unpickling this would call __reduce__'s callable."""

    def __reduce__(self):
        return (pytest.fail, ("a feature file was unpickled",))


@pytest.mark.parametrize("name, needle", [
    ("truncated.npy", "truncated or corrupt"),
    ("wrong_dim.npy", "9-D but 8-D are expected"),
    ("has_nan.npy", "NaN or infinity"),
    ("pickled.npy", "object array, refused"),
])
def test_bad_files_name_the_file_and_reason(tmp_path, name, needle):
    write_bad(tmp_path, Marker())
    with pytest.raises(DataError, match=needle) as info:
        load_features(tmp_path / name, D)
    assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)


def test_more_bad_shapes_and_formats(tmp_path):
    cases = {
        "ints.npy": np.arange(20).reshape(10, 2),
        "vector.npy": np.zeros(5, np.float32),
        "cube.npy": np.zeros((2, 3, D), np.float32),
        "empty.npy": np.zeros((0, D), np.float32),
        "inf.npy": np.full((3, D), np.inf, np.float32),
        "huge.npy": np.full((3, D), 1e300),  # finite as float64, infinite as float32
    }
    for name, arr in cases.items():
        np.save(tmp_path / name, arr)
    np.savez(tmp_path / "two.npz", a=feats(), b=feats())
    (tmp_path / "pickle.npy").write_bytes(pickle.dumps(feats()))
    (tmp_path / "text.npy").write_text("hello")
    (tmp_path / "zero.npy").write_bytes(b"")
    (tmp_path / "badzip.npz").write_bytes(b"PK\x03\x04garbage")
    needles = {"ints.npy": "2-D floating", "vector.npy": "2-D floating", "cube.npy": "2-D floating",
               "empty.npy": "T = 0", "inf.npy": "NaN or infinity", "huge.npy": "NaN or infinity",
               "two.npz": "none is named 'features'", "pickle.npy": "a pickle, refused",
               "text.npy": "not a NumPy", "zero.npy": "empty file", "badzip.npz": "truncated or corrupt"}
    for name, needle in needles.items():
        with pytest.raises(DataError, match=needle):
            load_features(tmp_path / name, None if name == "ints.npy" else D)


def test_npz_with_an_object_array_is_refused(tmp_path):
    obj = np.empty(1, dtype=object)
    obj[0] = Marker()
    np.savez(tmp_path / "obj.npz", features=obj)
    with pytest.raises(DataError, match="object array, refused"):
        load_features(tmp_path / "obj.npz", D)


def test_find_files_folders_globs_and_missing(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "sub").mkdir()
    (tmp_path / "empty").mkdir()
    for name in ("f/b.npy", "f/a.npz", "f/sub/c.npy", "x.npy"):
        np.save(tmp_path / name, feats()) if name.endswith(".npy") else np.savez(tmp_path / name, feats())
    (tmp_path / "f" / "notes.txt").write_text("-")
    files, missing = find_feature_files([tmp_path / "f", str(tmp_path / "*.npy"), tmp_path / "x.npy",
                                         tmp_path / "nope.npy", str(tmp_path / "*.npz"), tmp_path / "empty",
                                         tmp_path / "f" / "notes.txt"])
    assert [p.name for p in files] == ["a.npz", "b.npy", "x.npy"]  # folder sorted; x.npy once
    reasons = {m.path: m.reason for m in missing}
    assert reasons[str(tmp_path / "nope.npy")] == "no such file or folder"
    assert "matches no" in reasons[str(tmp_path / "*.npz")]
    assert "no .npy or .npz" in reasons[str(tmp_path / "empty")]
    assert "not a .npy" in reasons[str(tmp_path / "f" / "notes.txt")]
    deep, _ = find_feature_files([tmp_path / "f"], recursive=True)
    assert [p.name for p in deep] == ["a.npz", "b.npy", "c.npy"]
    globbed, _ = find_feature_files([str(tmp_path / "**" / "*.npy")])
    assert sorted(p.name for p in globbed) == ["b.npy", "c.npy", "x.npy"]


def test_video_ids(tmp_path):
    assert video_id(tmp_path / "video_test_0000004.npy") == "video_test_0000004"
    assert video_id("a/v.1.npz") == "v.1"


def test_bytes_are_read_with_the_same_checks_as_files(tmp_path):
    """What Ray Data hands an actor (a file's bytes) goes through the one reader."""
    from hamnet_deploy.runtime.feature_files import load_feature_bytes, load_features

    x = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    np.savez_compressed(tmp_path / "b.npz", features=x)
    for name in ("a.npy", "b.npz"):
        data = (tmp_path / name).read_bytes()
        assert np.array_equal(load_feature_bytes(data, f"s3://bucket/{name}", 4), load_features(tmp_path / name, 4))
    np.save(tmp_path / "o.npy", np.array([object()], dtype=object), allow_pickle=True)
    for data, needle in ((b"", "empty file"), (b"\x80\x04junk", "a pickle, refused"),
                         ((tmp_path / "o.npy").read_bytes(), "object array"),
                         ((tmp_path / "a.npy").read_bytes()[:90], "truncated or corrupt")):
        with pytest.raises(DataError, match=needle):
            load_feature_bytes(data, "s3://bucket/x.npy", 4)
    with pytest.raises(DataError, match="s3://bucket/x.npy: features are 4-D but 5-D"):
        load_feature_bytes((tmp_path / "a.npy").read_bytes(), "s3://bucket/x.npy", 5)
