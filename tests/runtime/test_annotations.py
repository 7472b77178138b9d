import json

import numpy as np
import pytest

from hamnet_deploy.runtime.annotations import annotations_to_json, load_annotation_json
from hamnet_deploy.runtime.errors import DataError


def test_real_thumos_timelines_load(thumos_dir):
    ann = load_annotation_json(thumos_dir / "thumos14-reduced.json")
    assert len(ann.videos) == 412
    assert sum(len(v.labels) for v in ann.videos.values()) == 6365
    assert ann.num_classes == 20
    assert len(ann.names("validation")) == 200 and len(ann.names("test")) == 212


def test_round_trip(thumos_dir, tmp_path):
    ann = load_annotation_json(thumos_dir / "thumos14-reduced.json")
    p = tmp_path / "a.json"
    p.write_text(json.dumps(annotations_to_json(ann)))
    again = load_annotation_json(p)
    assert again.classes == ann.classes
    v, w = ann.videos["video_test_0000004"], again.videos["video_test_0000004"]
    np.testing.assert_allclose(v.segments, w.segments)
    np.testing.assert_array_equal(v.labels, w.labels)


def _write(tmp_path, db, classes=("A", "B")):
    p = tmp_path / "ann.json"
    p.write_text(json.dumps({"classes": list(classes), "database": db}))
    return p


@pytest.mark.parametrize("segment,label,msg", [
    ([5.0, 2.0], "A", "reversed"),
    ([-1.0, 2.0], "A", "negative"),
    ([1.0, 2.0], "Z", "not in the class list"),
])
def test_bad_annotations(tmp_path, segment, label, msg):
    p = _write(tmp_path, {"v": {"subset": "test", "duration": 10, "annotations": [{"segment": segment, "label": label}]}})
    with pytest.raises(DataError, match=msg):
        load_annotation_json(p)


def test_duplicate_video_ids(tmp_path):
    p = tmp_path / "ann.json"
    p.write_text('{"classes": ["A"], "database": {"v": {"duration": 1}, "v": {"duration": 2}}}')
    with pytest.raises(DataError, match="appears twice"):
        load_annotation_json(p)


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_annotation_json(tmp_path / "nope.json")
    p = tmp_path / "bad.json"
    p.write_text('{"database": {')
    with pytest.raises(DataError, match="not valid JSON"):
        load_annotation_json(p)
