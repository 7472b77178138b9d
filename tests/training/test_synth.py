import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from hamnet_deploy.cli import app
from hamnet_deploy.runtime.annotations import load_annotation_json
from hamnet_deploy.runtime.errors import ConfigError
from hamnet_deploy.training.synth import (
    ROLE_BACKGROUND,
    ROLE_CORE,
    ROLE_DISTRACTOR,
    ROLE_PHASE,
    WTALC_NAME,
    SynthConfig,
    dataset_stats,
    generate_dataset,
    load_structure,
    make_timelines,
    snippet_roles,
)


def _features(folder, ann):
    return {n: np.load(folder / "videos" / f"{n}.npy", allow_pickle=False) for n in ann.videos}


def _same_annotations(a, b):
    assert a.classes == b.classes and list(a.videos) == list(b.videos)
    for n, v in a.videos.items():
        w = b.videos[n]
        assert (v.subset, v.duration) == (w.subset, w.duration)
        np.testing.assert_array_equal(v.segments, w.segments)
        np.testing.assert_array_equal(v.labels, w.labels)


# ---------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    cfg = SynthConfig(videos=8, dim=16, seed=5)
    a = generate_dataset(tmp_path / "a", cfg, workers=1)
    b = generate_dataset(tmp_path / "b", cfg, workers=3)  # thread count does not matter
    _same_annotations(a, b)
    fa, fb = _features(tmp_path / "a", a), _features(tmp_path / "b", b)
    assert all(fa[n].tobytes() == fb[n].tobytes() for n in fa)
    for name in ("annotations.json", "synth_config.json", "synth_structure.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

    c = generate_dataset(tmp_path / "c", SynthConfig(videos=8, dim=16, seed=6))
    fc = _features(tmp_path / "c", c)
    assert [v.duration for v in c.videos.values()] != [v.duration for v in a.videos.values()]
    shared = set(fa) & set(fc)
    assert all(fa[n].shape != fc[n].shape or fa[n].tobytes() != fc[n].tobytes() for n in shared)


def test_strengths_change_features_not_timelines(tmp_path):
    a = generate_dataset(tmp_path / "a", SynthConfig(videos=4, dim=16, seed=2))
    b = generate_dataset(tmp_path / "b", SynthConfig(videos=4, dim=16, seed=2, core_strength=2.0))
    _same_annotations(a, b)
    assert load_structure(tmp_path / "a") == load_structure(tmp_path / "b")
    fa, fb = _features(tmp_path / "a", a), _features(tmp_path / "b", b)
    assert all(fa[n].shape == fb[n].shape and not np.array_equal(fa[n], fb[n]) for n in fa)


# ---------------------------------------------------------------- timelines


def test_parametric_statistics_are_thumos_like():
    ann = make_timelines(SynthConfig(videos=60, dim=8, seed=0))
    st = dataset_stats(ann)
    assert st["videos"] == 60
    assert set(st["per_split"]) == {"validation", "test"} and min(st["per_split"].values()) >= 20
    assert 0.2 <= st["foreground_fraction"] <= 0.4
    assert 10 <= st["instances_per_video"] <= 22
    assert 1.05 <= st["classes_per_video"] <= 1.5
    assert 200 <= st["mean_snippets"] <= 480
    assert ann.classes == [f"Class{c:02d}" for c in range(20)]
    for v in ann.videos.values():
        seg = v.segments
        assert 60 <= v.duration <= 600 and v.fps == 25.0
        assert 1 <= len(np.unique(v.labels)) <= 3 and len(seg) >= 1
        lengths = seg[:, 1] - seg[:, 0]
        assert lengths.min() >= 0.95 and lengths.max() <= 10.05
        assert seg[0, 0] >= 0 and seg[-1, 1] <= v.duration
        assert (seg[1:, 0] >= seg[:-1, 1]).all()  # sorted, no overlaps
    # the class of each video's first slot cycles, so every class is in both splits
    for subset in ("validation", "test"):
        seen = {int(c) for n in ann.names(subset) for c in ann.videos[n].labels}
        assert seen == set(range(20))


def test_feature_files_match_durations(tmp_path):
    ann = generate_dataset(tmp_path, SynthConfig(videos=12, dim=8, seed=1))
    again = load_annotation_json(tmp_path / "annotations.json")
    _same_annotations(ann, again)
    for name, v in again.videos.items():
        x = np.load(tmp_path / "videos" / f"{name}.npy")
        assert x.dtype == np.float32 and x.shape == (math.ceil(v.duration / 0.64), 8)
        assert np.isfinite(x).all()
    rec = json.loads((tmp_path / "synth_config.json").read_text())
    assert SynthConfig.from_dict(rec["config"]) == SynthConfig(videos=12, dim=8, seed=1)


def test_real_timelines_reproduce_thumos(tmp_path, thumos_dir):
    path = thumos_dir / "thumos14-reduced.json"
    src = load_annotation_json(path)
    ann = generate_dataset(tmp_path / "all", SynthConfig(dim=8, videos=0, timelines=str(path)))
    assert len(ann.videos) == 412 and sum(len(v.labels) for v in ann.videos.values()) == 6365
    assert ann.classes == src.classes and list(ann.videos) == list(src.videos)
    for n, v in src.videos.items():
        w = ann.videos[n]
        assert w.subset == v.subset and w.duration == v.duration and w.fps == 25.0
        np.testing.assert_array_equal(w.segments, v.segments)
        np.testing.assert_array_equal(w.labels, v.labels)
        x = np.load(tmp_path / "all" / "videos" / f"{n}.npy", mmap_mode="r")
        assert x.shape == (math.ceil(v.duration / 0.64), 8)  # [0, duration) only

    # a subset keeps both splits, is deterministic, and its videos equal the full set's
    cfg = SynthConfig(dim=8, videos=20, timelines=str(path), seed=0)
    sub = generate_dataset(tmp_path / "sub", cfg)
    assert list(make_timelines(cfg).videos) == list(sub.videos)
    assert len(sub.videos) == 20 and dataset_stats(sub)["per_split"] == {"validation": 10, "test": 10}
    assert list(sub.videos) == [n for n in src.videos if n in sub.videos]  # file order kept
    for n in sub.videos:
        full = np.load(tmp_path / "all" / "videos" / f"{n}.npy")
        assert np.load(tmp_path / "sub" / "videos" / f"{n}.npy").tobytes() == full.tobytes()
    with pytest.raises(ConfigError, match="has only 412 videos"):
        make_timelines(SynthConfig(dim=8, videos=500, timelines=str(path)))


# ---------------------------------------------------------------- W-TALC layout


def test_wtalc_layout_matches_per_video_files(tmp_path):
    ann = generate_dataset(tmp_path, SynthConfig(videos=7, dim=12, seed=4), wtalc=True)
    folder = tmp_path / "wtalc" / f"{WTALC_NAME}-Annotations"
    # our own generated files: pickle is fine here
    load = {p.stem: np.load(p, allow_pickle=True) for p in folder.glob("*.npy")}
    assert set(load) == {"classlist", "videoname", "subset", "duration", "labels", "labels_all", "segments"}
    feats = np.load(tmp_path / "wtalc" / f"{WTALC_NAME}-I3D-JOINTFeatures.npy", allow_pickle=True)
    V = len(ann.videos)
    for stem in ("classlist", "videoname", "subset"):
        assert load[stem].dtype.kind == "S"
    assert load["duration"].dtype == np.float64 and load["duration"].shape == (V, 1)
    for stem in ("labels", "labels_all", "segments"):
        assert load[stem].dtype == object and load[stem].shape == (V,)
    assert feats.dtype == object and feats.shape == (V,)
    assert [c.decode() for c in load["classlist"]] == ann.classes
    names = [n.decode() for n in load["videoname"]]
    assert names == list(ann.videos)
    per_video = _features(tmp_path, ann)
    for i, n in enumerate(names):
        v = ann.videos[n]
        assert load["subset"][i].decode() == v.subset and load["duration"][i, 0] == v.duration
        assert isinstance(load["labels"][i], list) and all(isinstance(s, str) for s in load["labels"][i])
        assert load["labels"][i] == [ann.classes[c] for c in v.labels]
        assert sorted(load["labels_all"][i]) == sorted({ann.classes[c] for c in v.labels})
        assert load["segments"][i] == v.segments.tolist()
        assert feats[i].dtype == np.float32 and feats[i].tobytes() == per_video[n].tobytes()


def test_regenerating_removes_stale_files(tmp_path):
    generate_dataset(tmp_path, SynthConfig(videos=10, dim=8), wtalc=True)
    ann = generate_dataset(tmp_path, SynthConfig(videos=4, dim=8))
    assert sorted(p.stem for p in (tmp_path / "videos").glob("*.npy")) == sorted(ann.videos)
    assert not (tmp_path / "wtalc").exists()


# ---------------------------------------------------------------- what the design relies on


def test_cores_are_more_discriminative_than_phases(tmp_path):
    """Nearest-class-mean on single snippets (class means from the train split, accuracy
    on the test split): cores are easy, phases are harder but still carry the class."""
    ann = generate_dataset(tmp_path, SynthConfig(videos=60, dim=128, seed=1))
    structure = load_structure(tmp_path)["videos"]
    feats = _features(tmp_path, ann)
    data = {ROLE_CORE: [], ROLE_PHASE: []}
    for name, v in ann.videos.items():
        entry = structure[name]
        roles = snippet_roles(entry, entry["T"])
        x = feats[name] - feats[name][roles == ROLE_BACKGROUND].mean(axis=0)  # remove the scene
        cls = np.full(entry["T"], -1)
        for (s0, _, _, e0), c in zip(entry["instances"], v.labels, strict=True):
            cls[s0:e0] = c
        for role, rows in data.items():
            m = roles == role
            rows.append((x[m], cls[m], np.full(int(m.sum()), v.subset == "test")))
    C = ann.num_classes
    acc, means = {}, {}
    for role, rows in data.items():
        x, y, test = (np.concatenate(r) for r in zip(*rows, strict=True))
        mu = np.stack([x[~test & (y == c)].mean(axis=0) for c in range(C)])
        pred = np.argmax(x[test] @ mu.T - 0.5 * (mu ** 2).sum(axis=1), axis=1)
        acc[role], means[role] = float((pred == y[test]).mean()), mu
    assert acc[ROLE_CORE] > 0.9
    assert 4.0 / C < acc[ROLE_PHASE] < acc[ROLE_CORE] - 0.1
    # the class-specific signal (class mean minus the mean over classes) is much stronger in the cores
    spread = {r: np.linalg.norm(mu - mu.mean(axis=0), axis=1).mean() for r, mu in means.items()}
    assert spread[ROLE_CORE] > 1.25 * spread[ROLE_PHASE]


def test_structure_roles(tmp_path):
    ann = generate_dataset(tmp_path, SynthConfig(videos=6, dim=8, seed=3))
    st = load_structure(tmp_path)
    assert st["snippet_seconds"] == 0.64
    saw_distractor = False
    run_up = follow_through = 0
    for name, v in ann.videos.items():
        e = st["videos"][name]
        inst = np.array(e["instances"])
        assert len(inst) == len(v.labels)
        s0, cs, ce, e0 = inst.T
        assert ((s0 <= cs) & (cs < ce) & (ce <= e0) & (e0 <= e["T"])).all()
        roles = snippet_roles(e, e["T"])
        fg = np.zeros(e["T"], bool)
        for a, b in zip(s0, e0, strict=True):
            fg[a:b] = True
        assert (fg == np.isin(roles, [ROLE_CORE, ROLE_PHASE])).all()
        saw_distractor |= bool((roles == ROLE_DISTRACTOR).any())
        core_share = (roles == ROLE_CORE).sum() / fg.sum()
        assert 0.35 < core_share < 0.65
        run_up += int((cs - s0).sum())
        follow_through += int((e0 - ce).sum())
    assert saw_distractor
    assert run_up > 2 * follow_through  # the core sits late in the instance


def test_distractors_look_like_a_run_up_only_in_the_background(tmp_path):
    """distractor_group_strength adds the phase group direction at distractor snippets only."""
    base = {"videos": 6, "dim": 16, "seed": 3, "smoothing": (1.0,)}
    a = generate_dataset(tmp_path / "a", SynthConfig(**base, distractor_group_strength=0.0))
    generate_dataset(tmp_path / "b", SynthConfig(**base, distractor_group_strength=0.5))
    st = load_structure(tmp_path / "a")["videos"]
    assert st == load_structure(tmp_path / "b")["videos"]
    fa, fb = _features(tmp_path / "a", a), _features(tmp_path / "b", a)
    for name in a.videos:
        roles = snippet_roles(st[name], st[name]["T"])
        changed = np.abs(fb[name] - fa[name]).max(axis=1) > 1e-6
        assert (changed == (roles == ROLE_DISTRACTOR)).all()
        rows = fb[name][changed] - fa[name][changed]
        if len(rows):  # one direction per burst, of per-dimension amplitude 0.5
            assert 0.3 < float(np.sqrt((rows ** 2).mean())) < 0.7


@pytest.mark.parametrize("kwargs,match", [
    ({"videos": 1}, "at least 2 videos"),
    ({"dim": 7}, "even number"),
    ({"num_classes": 0}, "at least 1 class"),
    ({"seed": -1}, "seed"),
    ({"foreground_min": 0.5, "foreground_max": 0.3}, "foreground_min"),
    ({"smoothing": (0.5, 0.5)}, "odd number"),
    ({"core_strength": -1.0}, "core_strength"),
    ({"distractor_group_strength": -0.1}, "distractor_group_strength"),
    ({"core_position_min": 0.8, "core_position_max": 0.5}, "core_position_min"),
    ({"timelines": "/nonexistent/t.json"}, "file not found"),
])
def test_bad_settings(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        generate_dataset(tmp_path, SynthConfig(**{"dim": 8, **kwargs}))


# ---------------------------------------------------------------- command line


def test_cli_success_and_refusals(tmp_path, thumos_dir):
    runner = CliRunner()
    out = tmp_path / "s"
    r = runner.invoke(app, ["synth", str(out), "--videos", "6", "--dim", "8", "--seed", "2", "--wtalc"])
    assert r.exit_code == 0, r.output
    assert "wrote 6 videos" in r.output and "next: hamnet" in r.output
    assert len(list((out / "videos").glob("*.npy"))) == 6
    assert (out / "wtalc" / f"{WTALC_NAME}-I3D-JOINTFeatures.npy").is_file()
    assert json.loads((out / "synth_config.json").read_text())["config"]["seed"] == 2

    r = runner.invoke(app, ["synth", str(out), "--videos", "6", "--dim", "8"])
    assert r.exit_code == 2 and "not empty" in r.output and "--force" in r.output
    r = runner.invoke(app, ["synth", str(out), "--videos", "4", "--dim", "8", "--force"])
    assert r.exit_code == 0, r.output
    assert len(list((out / "videos").glob("*.npy"))) == 4

    for args, match in [(["--videos", "1"], "synth setting videos=1"), (["--dim", "9"], "synth setting dim=9"),
                        (["--classes", "0"], "synth setting num_classes=0"),
                        (["--timelines", str(tmp_path / "none.json")], "file not found"),
                        (["--timelines", str(thumos_dir / "thumos14-reduced.json"), "--classes", "5"],
                         "cannot be combined")]:
        r = runner.invoke(app, ["synth", str(tmp_path / "new"), *args])
        assert r.exit_code == 2, (args, r.output)
        assert match in r.output and "Traceback" not in r.output
    assert not (tmp_path / "new").exists()


def test_cli_timelines_subset(tmp_path, thumos_dir):
    r = CliRunner().invoke(app, ["synth", str(tmp_path / "t"), "--timelines",
                                 str(thumos_dir / "thumos14-reduced.json"), "--videos", "9", "--dim", "8"])
    assert r.exit_code == 0, r.output
    ann = load_annotation_json(tmp_path / "t" / "annotations.json")
    assert len(ann.videos) == 9 and set(ann.subsets()) == {"validation", "test"}
    assert "BaseballPitch" in ann.classes


# ---------------------------------------------------------------- embedded cache


def test_embedded_cache_is_keyed_by_the_generator_settings(tmp_path, monkeypatch):
    from hamnet_deploy.training.embedded import config_hash, embedded_dataset

    monkeypatch.setenv("HAMNET_CACHE", str(tmp_path))
    a = embedded_dataset(dim=8, videos=4, seed=0)
    assert embedded_dataset(dim=8, videos=4, seed=0) == a  # reused, not regenerated
    b = embedded_dataset(dim=8, videos=4, seed=0, overrides={"core_strength": 0.7})
    assert a != b and a.parent == b.parent == tmp_path
    assert a.name.startswith("synth-d8-v4-s0-") and a.name.endswith(config_hash(SynthConfig(dim=8, videos=4)))
    rec = json.loads((b / "synth_config.json").read_text())
    assert rec["config"]["core_strength"] == 0.7 and rec["config"]["dim"] == 8
