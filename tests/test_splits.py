"""Splits made once: stratified, grouped by identity, seeded, exported to CSVs that read back to the same samples."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reprlab.data import DataError, ImageDataset, cache, from_csv, from_folder
from reprlab.splits import leave_one_class_out, make_split, normalize_fractions, read_split, split_indices
from reprlab.testing import make_image_folder

CLASSES = ("live", "mask", "print", "replay")
N_PER = {"live": 40, "mask": 10, "print": 20, "replay": 30}


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    "A CSV source with an identity and a camera column: 20 people, each in every class, in an ImageFolder tree."
    tmp = tmp_path_factory.mktemp("faces")
    root = tmp / "images"
    for k, c in enumerate(CLASSES):
        make_image_folder(root, classes=(c,), n=N_PER[c], size=4, seed=k)
    with open(tmp / "faces.csv", "w", newline="") as f:
        w = csv.writer(f); w.writerow(["path", "label", "identity", "camera"])
        for c in CLASSES:
            for i in range(N_PER[c]): w.writerow([f"{c}/{i:04d}.png", c, f"id{i % 20:02d}", f"cam{i % 3}"])
    return tmp / "faces.csv", root


@pytest.fixture
def ds(faces):
    return from_csv(*faces)


def _ids(d):
    return set(d.extras["identity"])


# ---------------------------------------------------------------- drawing
def test_stratified_proportions_per_class(ds, tmp_path):
    sp = make_split(ds, tmp_path / "s", fractions=(0.7, 0.1, 0.2), seed=3)
    assert {k: len(v) for k, v in sp.items()} == {"train": 70, "val": 10, "test": 20}
    for name, f in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        for c, n in sp[name].class_counts.items():
            assert abs(n - f * N_PER[c]) <= 1, (name, c, n)
    allp = sorted(p for d in sp.values() for p in d.paths)
    assert len(set(allp)) == len(ds) and allp == sorted(str(Path(p).resolve()) for p in ds.paths)


def test_zero_fraction_omits_split_and_dict_names(ds, tmp_path):
    sp = make_split(ds, tmp_path / "a", fractions=(0.9, 0, 0.1))
    assert list(sp) == ["train", "test"] and not (tmp_path / "a" / "val.csv").exists()
    sp = make_split(ds, tmp_path / "b", fractions={"fit": 0.5, "calib": 0.25, "holdout": 0.25})
    assert list(sp) == ["fit", "calib", "holdout"] and (tmp_path / "b" / "calib.csv").exists()


def test_grouped_no_identity_in_two_splits(ds, tmp_path):
    sp = make_split(ds, tmp_path / "g", group="identity", seed=0)
    ids = {k: _ids(d) for k, d in sp.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert sum(len(v) for v in ids.values()) == 20
    assert sum(len(d) for d in sp.values()) == len(ds)
    for d in sp.values():  # every identity appears in every class, so stratification keeps all classes
        assert all(n > 0 for n in d.class_counts.values())
    meta = json.loads((tmp_path / "g" / "split.json").read_text())
    assert meta["group"] == "identity" and meta["splits"]["test"]["groups"] == len(ids["test"])


def test_grouped_folds_whole_groups_and_balanced_classes():
    "Groups of 3 of one label each: whole groups per split, 0.2 realised in whole groups, both labels in the test split."
    y = np.repeat([0, 1], [30, 30]); g = np.arange(60) // 3
    sp = split_indices(y, (0.8, 0.2), groups=g, seed=5)
    assert set(g[sp["train"]]).isdisjoint(g[sp["test"]]) and len(sp["train"]) + len(sp["test"]) == 60
    assert len(sp["test"]) == 12 and np.bincount(y[sp["test"]]).tolist() == [6, 6]


def test_unstratified_and_unlabeled(tmp_path):
    root = make_image_folder(tmp_path / "f", classes=("a", "b"), n=10, size=4)
    d = from_folder(root)
    d.labels[:5] = -1
    sp = make_split(d, tmp_path / "s", fractions=(0.5, 0.5), stratify=False, seed=1)
    assert sum(len(v) for v in sp.values()) == 20
    sp2 = make_split(d, tmp_path / "s2", fractions=(0.5, 0.5), seed=1)
    assert (sp2["test"].labels == -1).sum() in (2, 3)          # the unlabeled stratum is split too
    meta = json.loads((tmp_path / "s2" / "split.json").read_text())
    assert meta["splits"]["test"]["unlabeled"] == (sp2["test"].labels == -1).sum()


def test_seeded_determinism(ds, tmp_path):
    a = make_split(ds, tmp_path / "a", group="identity", seed=7)
    b = make_split(ds, tmp_path / "b", group="identity", seed=7)
    c = make_split(ds, tmp_path / "c", group="identity", seed=8)
    for k in a: assert a[k].paths == b[k].paths
    assert (tmp_path / "a" / "test.csv").read_bytes() == (tmp_path / "b" / "test.csv").read_bytes()
    assert any(a[k].paths != c[k].paths for k in a)
    u, v, w = (make_split(ds, tmp_path / n, seed=s) for n, s in (("u", 7), ("v", 7), ("w", 8)))
    assert u["val"].paths == v["val"].paths and u["val"].paths != w["val"].paths


# ---------------------------------------------------------------- files
def test_round_trip_same_samples(ds, tmp_path):
    sp = make_split(ds, tmp_path / "s", group="identity", seed=1)
    back = read_split(tmp_path / "s", ds.root)
    assert list(back) == list(sp)
    for k in sp:
        assert back[k].paths == sp[k].paths
        assert np.array_equal(back[k].labels, sp[k].labels) and back[k].classes == sp[k].classes == ds.classes
        assert back[k].extras == sp[k].extras
        assert back[k][0]["image"].equal(sp[k][0]["image"])


def test_round_trip_folder_source_moved_root_and_shared_cache(tmp_path):
    root = make_image_folder(tmp_path / "f", classes=("a", "b", "c"), n=6, size=4)
    ds = cache(from_folder(root))
    sp = make_split(ds, tmp_path / "s", fractions=(0.5, 0.5))
    assert sp["test"].images is not None                                 # subsets share the decoded cache
    back = read_split(tmp_path / "s", root)
    for k in sp: assert back[k].paths == sp[k].paths and np.array_equal(back[k].labels, sp[k].labels)
    shutil.copytree(root, tmp_path / "moved")                            # paths are relative to the root
    moved = read_split(tmp_path / "s", tmp_path / "moved")
    assert [p.replace(str(tmp_path / "moved"), "") for p in moved["train"].paths] == \
           [p.replace(str(root.resolve()), "") for p in sp["train"].paths]


def test_class_absent_from_a_split_keeps_index(tmp_path):
    root = make_image_folder(tmp_path / "f", classes=("a", "b", "c"), n=4, size=4)
    ds = from_folder(root)
    sp = make_split(ds, tmp_path / "s", fractions=(0.5, 0.5), stratify=False, seed=0)
    back = read_split(tmp_path / "s", root)
    assert back["test"].classes == ["a", "b", "c"] == back["train"].classes


def test_made_once_same_settings_reused_other_refused(ds, tmp_path):
    sp = make_split(ds, tmp_path / "s", seed=2)
    mtime = (tmp_path / "s" / "split.json").stat().st_mtime_ns
    again = make_split(ds, tmp_path / "s", seed=2)
    assert (tmp_path / "s" / "split.json").stat().st_mtime_ns == mtime
    for k in sp: assert again[k].paths == sp[k].paths
    with pytest.raises(DataError, match=r"seed: 2 -> 3.*overwrite=True"): make_split(ds, tmp_path / "s", seed=3)
    with pytest.raises(DataError, match="fractions"): make_split(ds, tmp_path / "s", seed=2, fractions=(0.6, 0.2, 0.2))
    new = make_split(ds, tmp_path / "s", seed=3, fractions=(0.5, 0.5), overwrite=True)
    assert list(new) == ["train", "test"] and not (tmp_path / "s" / "val.csv").exists()


def test_changed_dataset_refused(ds, tmp_path):
    make_split(ds, tmp_path / "s", seed=2)
    ds.labels[0] = 1
    with pytest.raises(DataError, match="fingerprint"): make_split(ds, tmp_path / "s", seed=2)


def test_edited_or_incomplete_split(ds, tmp_path):
    make_split(ds, tmp_path / "s")
    with open(tmp_path / "s" / "val.csv", "a") as f: f.write("live/0000.png,live,id00,cam0\n")
    with pytest.raises(DataError, match="val.csv changed after make_split"): read_split(tmp_path / "s", ds.root)
    assert len(read_split(tmp_path / "s", ds.root, verify=False)["val"]) == 11
    (tmp_path / "s" / "split.json").unlink()                              # as after a crash mid-write
    with pytest.raises(FileNotFoundError, match="no complete split"): read_split(tmp_path / "s", ds.root)
    with pytest.raises(DataError, match="no split.json"): make_split(ds, tmp_path / "s")
    assert len(make_split(ds, tmp_path / "s", overwrite=True)["val"]) == 10


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("fractions,msg", [((0.8, 0.1, 0.2), "sum to 1.1"), ((0.8, 0.3, -0.1), "negative"),
                                           ((0.5, 0.2, 0.2, 0.1), "2 .* or 3"), ({"split": 1.0}, "other than 'split'"),
                                           ({"a/b": 1.0}, "plain file name")])
def test_bad_fractions(fractions, msg):
    with pytest.raises(ValueError, match=msg): normalize_fractions(fractions)


def test_missing_group_column_names_close_match(ds, tmp_path):
    with pytest.raises(DataError, match=r"'identiy'.*\['identity', 'camera'\].*close: \['identity'\]"):
        make_split(ds, tmp_path / "s", group="identiy")


def test_too_few_to_stratify_names_the_class(tmp_path):
    root = make_image_folder(tmp_path / "f", classes=("common", "rare"), n=5, size=4)
    (root / "rare" / "0002.png").unlink(); (root / "rare" / "0003.png").unlink(); (root / "rare" / "0004.png").unlink()
    ds = from_folder(root)
    with pytest.raises(DataError, match=r"'rare' has 2 .*stratify=False"): make_split(ds, tmp_path / "s")
    assert sum(len(d) for d in make_split(ds, tmp_path / "s", stratify=False).values()) == 7


def test_split_too_small_for_classes(tmp_path):
    y = np.repeat(np.arange(10), 5)
    with pytest.raises(DataError, match="cannot stratify split 'val'"): split_indices(y, (0.9, 0.05, 0.05))


def test_array_dataset_and_paths_outside_root(tmp_path):
    import torch
    with pytest.raises(ValueError, match="file-backed"):
        make_split(ImageDataset(images=torch.zeros(4, 3, 2, 2, dtype=torch.uint8)), tmp_path / "s")
    root = make_image_folder(tmp_path / "f", classes=("a", "b"), n=4, size=4)
    with pytest.raises(DataError, match="outside the root"): make_split(from_folder(root), tmp_path / "s", root=root / "a")


# ---------------------------------------------------------------- leave one class out
def test_leave_one_class_out(ds):
    folds = list(leave_one_class_out(ds, always=("live",), test_fraction=0.25, seed=0))
    assert [c for c, _, _ in folds] == ["mask", "print", "replay"]
    live = ds.classes.index("live")
    live_test = None
    for c, tr, te in folds:
        k = ds.classes.index(c)
        assert not (tr.labels == k).any() and (te.labels == k).sum() == N_PER[c]
        assert set(te.labels.tolist()) == {k, live} and (te.labels == live).sum() == 10 and (tr.labels == live).sum() == 30
        assert not set(tr.paths) & set(te.paths)
        assert len(tr) + len(te) == len(ds)
        assert tr.classes == te.classes == ds.classes
        lt = [p for p, y in zip(te.paths, te.labels) if y == live]
        assert live_test is None or lt == live_test                   # the same live split in every fold
        live_test = lt
    other = [te for _, _, te in leave_one_class_out(ds, always="live", test_fraction=0.25, seed=1)][0]
    assert [p for p, y in zip(other.paths, other.labels) if y == live] != live_test


def test_leave_one_class_out_without_always_and_errors(ds):
    folds = list(leave_one_class_out(ds))
    assert len(folds) == 4 and all(len(te) == N_PER[c] for c, _, te in folds)
    with pytest.raises(KeyError, match="close: \\['live'\\]"): next(leave_one_class_out(ds, always=["liv"]))
    with pytest.raises(ValueError, match="test_fraction"): next(leave_one_class_out(ds, always=["live"], test_fraction=1.0))
