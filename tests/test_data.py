"""Image sources, decoding, the uint8 cache and bad input (each failure names the file, key or value)."""
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from reprlab.data import (CorruptImageError, DataError, ImageDataset, cache, channel_stats, decode_image_file, from_boxes,
                          from_csv, from_folder, from_npz, load_imagewang, relabel, resize_uint8, scan_folder, subset,
                          to_csv, unlabeled)
from reprlab.testing import make_image_folder, make_imagewang, make_npz


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "f", classes=("cat", "dog", "emu"), n=4)


# ---------------------------------------------------------------- sources
def test_folder_labels_follow_folders(folder):
    ds = from_folder(folder)
    assert ds.classes == ["cat", "dog", "emu"]
    assert ds.class_counts == {"cat": 4, "dog": 4, "emu": 4}
    for i in range(len(ds)):
        assert f"/{ds.classes[ds.labels[i]]}/" in ds.paths[i]
    s = ds[5]
    assert set(s) == {"image", "label", "index", "path"} and s["index"] == 5 and s["image"].shape == (3, 16, 16)


def test_imagewang_reuses_train_class_map(tmp_path):
    root = make_imagewang(tmp_path / "w", classes=("b", "a"), n_train=3, n_val=2, n_unsup=5)
    w = load_imagewang(root)
    assert w["train"].classes == ["a", "b"] == w["val"].classes
    assert len(w["unsup"]) == 5 and (w["unsup"].labels == -1).all()
    assert len(w["train"]) == 6 and len(w["val"]) == 4


def test_imagewang_val_class_unknown_to_train(tmp_path):
    root = make_imagewang(tmp_path / "w", classes=("a", "b"))
    make_image_folder(root / "val", classes=("zebra",), n=1)
    with pytest.raises(DataError, match="zebra"): load_imagewang(root)


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"): from_folder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"): load_imagewang(tmp_path / "nope")


def test_empty_class_folder(folder):
    (folder / "yak").mkdir()
    with pytest.raises(DataError, match="yak.*no image files"): from_folder(folder)


def test_non_image_files_ignored(folder):
    (folder / "cat" / "README.txt").write_text("hello")
    (folder / "cat" / ".DS_Store").write_bytes(b"\0\0")
    ds = from_folder(folder)
    assert len(ds) == 12 and not any(p.endswith((".txt", ".DS_Store")) for p in ds.paths)


def _truncate(path):
    b = path.read_bytes(); path.write_bytes(b[: len(b) // 2])


def test_corrupt_and_truncated_jpeg_named(tmp_path):
    root = make_image_folder(tmp_path / "j", n=3, ext="jpg", size=32)
    _truncate(root / "dog" / "0001.jpg")
    with pytest.raises(CorruptImageError, match=r"dog/0001\.jpg.*truncated"): cache(from_folder(root))
    (root / "cat" / "0000.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(CorruptImageError, match=r"cat/0000\.jpg"): decode_image_file(root / "cat" / "0000.jpg")
    with pytest.warns(UserWarning, match="skipped 2 corrupt"):
        ds = cache(from_folder(root, skip_corrupt=True))
    assert len(ds) == 4 and len(ds.skipped) == 2 and ds.images.shape[0] == 4
    assert all("0001.jpg" not in p or "cat" in p for p in ds.paths)
    # labels still match the images that were kept
    assert ds.labels.tolist() == [0, 0, 1, 1]


def test_skip_corrupt_disk_cache_reused(tmp_path):
    root = make_image_folder(tmp_path / "j", n=3, ext="png")
    (root / "cat" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.warns(UserWarning): a = cache(from_folder(root, skip_corrupt=True), "disk", tmp_path / "c")
    with pytest.warns(UserWarning): b = cache(from_folder(root, skip_corrupt=True), "disk", tmp_path / "c")
    assert torch.equal(a.images, b.images) and a.paths == b.paths and len(a) == 5


def test_grayscale_to_three_channels_or_kept(tmp_path):
    root = make_image_folder(tmp_path / "g", n=2, channels=1)
    assert from_folder(root)[0]["image"].shape == (3, 16, 16)
    x1 = from_folder(root, channels=1)[0]["image"]
    assert x1.shape == (1, 16, 16)
    x3 = from_folder(root)[0]["image"]
    assert torch.equal(x3[0], x1[0]) and torch.equal(x3[1], x1[0])


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16bit_scaled_by_value(tmp_path, ext):
    a = np.array([[0, 257, 65535, 32896]], np.uint16)
    Image.fromarray(a).save(tmp_path / f"x.{ext}")
    x = decode_image_file(tmp_path / f"x.{ext}", channels=1)
    assert x.dtype == torch.uint8 and x[0, 0].tolist() == [0, 1, 255, 128]


def test_rgba_and_palette(tmp_path):
    Image.fromarray(np.full((4, 4, 4), 9, np.uint8), "RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).convert("P").save(tmp_path / "p.gif")
    assert decode_image_file(tmp_path / "a.png").shape == (3, 4, 4)
    assert decode_image_file(tmp_path / "p.gif").shape == (3, 4, 4)


def test_npz_source_and_errors(tmp_path):
    ds = from_npz(make_npz(tmp_path / "a.npz", n_per_class=3))
    z = np.load(tmp_path / "a.npz")
    assert torch.equal(ds.images, torch.from_numpy(z["images"]).permute(0, 3, 1, 2))
    assert ds.labels.tolist() == z["labels"].tolist() and ds.classes == ["cat", "dog"]
    np.savez(tmp_path / "b.npz", pixels=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"b\.npz.*no array 'images'.*pixels"): from_npz(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", images=np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(DataError, match="uint8"): from_npz(tmp_path / "c.npz")
    (tmp_path / "d.npz").write_text("garbage")
    with pytest.raises(DataError, match=r"d\.npz"): from_npz(tmp_path / "d.npz")


def test_csv_relative_paths_move_with_root(folder, tmp_path):
    ds = from_folder(folder)
    to_csv(ds, tmp_path / "list.csv")
    moved = tmp_path / "moved"
    folder.rename(moved)
    back = from_csv(tmp_path / "list.csv", moved)
    assert len(back) == len(ds) and back.labels.tolist() == ds.labels.tolist()
    assert all(p.startswith(str(moved)) for p in back.paths)
    assert torch.equal(back[3]["image"], decode_image_file(back.paths[3]))


def test_csv_extra_columns_are_sample_fields(folder, tmp_path):
    (tmp_path / "l.csv").write_text("path,label,identity\ncat/0000.png,cat,alice\ndog/0001.png,dog,bob\nemu/0000.png,,carol\n")
    ds = from_csv(tmp_path / "l.csv", folder)
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 1, -1]
    assert ds[1]["identity"] == "bob"


def test_csv_missing_column_and_outside_root(folder, tmp_path):
    (tmp_path / "l.csv").write_text("file,label\ncat/0000.png,cat\n")
    with pytest.raises(DataError, match=r"l\.csv.*\['path'\]"): from_csv(tmp_path / "l.csv", folder)
    (tmp_path / "o.csv").write_text("path,label\n../../secret.png,cat\n")
    with pytest.raises(DataError, match=r"o\.csv row 2.*outside the root"): from_csv(tmp_path / "o.csv", folder)
    (tmp_path / "a.csv").write_text(f"path,label\n{folder}/cat/0000.png,cat\n")
    with pytest.raises(DataError, match="outside the root"): from_csv(tmp_path / "a.csv", folder)
    with pytest.raises(FileNotFoundError, match="none.csv"): from_csv(tmp_path / "none.csv", folder)


def test_box_crops(folder, tmp_path):
    (tmp_path / "b.csv").write_text("path,x0,y0,x1,y1,label\n"
                                    "cat/0000.png,0,0,4,4,cat\ncat/0000.png,2,3,12,9,cat\n"
                                    "dog/0000.png,1,1,3,3,dog\ndog/0001.png,0,0,16,16,dog\n")
    ds = from_boxes(tmp_path / "b.csv", folder, mode="largest", min_size=4)
    assert len(ds) == 2 and ds.labels.tolist() == [0, 1]
    full = decode_image_file(folder / "cat" / "0000.png")
    assert torch.equal(ds[0]["image"], full[:, 3:9, 2:12])
    assert len(from_boxes(tmp_path / "b.csv", folder, mode="all")) == 4
    assert len(from_boxes(tmp_path / "b.csv", folder, mode="all", min_size=4)) == 3
    (tmp_path / "bad.csv").write_text("path,x0,y0,x1,y1\ncat/0000.png,5,0,2,4\n")
    with pytest.raises(DataError, match="row 2"): from_boxes(tmp_path / "bad.csv", folder)


def test_label_map_merge_rename_drop(tmp_path):
    a = from_folder(make_image_folder(tmp_path / "a", classes=("Genuine", "Print", "Replay"), n=2))
    b = from_folder(make_image_folder(tmp_path / "b", classes=("Live", "Mask"), n=2))
    ra = relabel(a, {"Genuine": "live", "Print": "attack", "Replay": None})
    rb = relabel(b, {"Live": "live", "Mask": "attack"})
    assert ra.classes == rb.classes == ["attack", "live"]
    assert ra.labels.tolist() == [1, 1, 0, 0] and rb.labels.tolist() == [1, 1, 0, 0]
    assert len(ra) == 4
    with pytest.raises(KeyError, match="Replay"): relabel(b, {"Replay": None})
    with pytest.raises(KeyError, match="Mask"): relabel(b, {"Live": "live"}, strict=True)


def test_cache_memory_matches_decoding_and_disk(folder, tmp_path):
    ds = from_folder(folder)
    ref = torch.stack([decode_image_file(p) for p in ds.paths])
    assert torch.equal(cache(from_folder(folder)).images, ref)
    d = cache(from_folder(folder), "disk", tmp_path / "c")
    assert torch.equal(d.images, ref)
    files = sorted(os.listdir(tmp_path / "c" / "images"))
    assert len([f for f in files if f.endswith(".npy")]) == 1 and not [f for f in files if f.endswith(".tmp")]
    # a changed file invalidates the key
    make_image_folder(folder, classes=("cat",), n=1, seed=9)
    cache(from_folder(folder), "disk", tmp_path / "c")
    assert len([f for f in os.listdir(tmp_path / "c" / "images") if f.endswith(".npy")]) == 2


def test_cache_needs_one_size(tmp_path):
    root = make_image_folder(tmp_path / "s", classes=("a",), n=1, size=16)
    make_image_folder(tmp_path / "s", classes=("b",), n=1, size=(20, 24))
    with pytest.raises(DataError, match="size="): cache(from_folder(root))
    ds = cache(from_folder(root, size=12))
    assert ds.images.shape == (2, 3, 12, 12)


def test_resize_short_side_and_center_crop():
    x = torch.arange(2 * 8 * 4, dtype=torch.uint8).reshape(2, 8, 4)
    assert resize_uint8(x, 4).shape == (2, 4, 4)
    assert resize_uint8(x, (2, 2)).shape == (2, 2, 2)
    assert resize_uint8(x, (8, 4)) is x


def test_subset_and_unlabeled(folder):
    ds = cache(from_folder(folder))
    s = subset(ds, [0, 11])
    assert s.labels.tolist() == [0, 2] and torch.equal(s.images, ds.images[[0, 11]])
    u = unlabeled(ds, s)
    assert len(u) == 14 and (u.labels == -1).all() and u.images.shape[0] == 14


def test_channel_stats_match_numpy(folder):
    ds = cache(from_folder(folder))
    x = ds.images.numpy().astype(np.float64) / 255
    mean, std = channel_stats(ds, batch_size=5)
    np.testing.assert_allclose(mean, x.mean((0, 2, 3)), atol=1e-9)
    np.testing.assert_allclose(std, x.std((0, 2, 3)), atol=1e-9)
    m2, s2 = channel_stats(from_folder(folder), batch_size=7)   # decoding path, same numbers
    np.testing.assert_allclose(m2, mean, atol=1e-12); np.testing.assert_allclose(s2, std, atol=1e-12)


def test_bad_constructor_args(folder):
    with pytest.raises(ValueError, match="channels"): from_folder(folder, channels=2)
    with pytest.raises(ValueError, match="labels"): ImageDataset(["a.png"], labels=[0, 1])
    with pytest.raises(ValueError, match="size"): from_folder(folder, size=(1, 2, 3))


# ---------------------------------------------------------------- real data (skipped without ../shared)
def test_real_cifar_npz(shared):
    ds = from_npz(shared / "cifar10-test.npz")
    assert ds.images.shape == (5000, 3, 32, 32) and ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    assert np.bincount(ds.labels).tolist() == [500] * 10


def test_real_cifar_stats_match_readme(shared):
    mean, std = channel_stats(from_npz(shared / "cifar10-train.npz"))
    np.testing.assert_allclose(mean, [0.4921, 0.4826, 0.4479], atol=6e-5)
    np.testing.assert_allclose(std, [0.2456, 0.2434, 0.2606], atol=6e-5)


def test_real_cifar_folder_decodes_like_pil(cifar_folder):
    ds = from_folder(cifar_folder / "train")
    assert len(ds) == 1000 and ds.classes[3] == "cat"
    ds = cache(ds, num_workers=2)
    for i in (0, 517, 999):
        ref = torch.from_numpy(np.array(Image.open(ds.paths[i]).convert("RGB"))).permute(2, 0, 1)
        # libjpeg-turbo through torchvision vs PIL's libjpeg: same decoder family, at most off by rounding
        assert (ds.images[i].int() - ref.int()).abs().max() <= 2


def test_decoding_leaves_the_global_rng_alone(tmp_path):
    "The weights a seed gives must not depend on whether images were decoded in this run (first run vs disk cache) or shown with a bar."
    from reprlab.data import cache, from_folder
    from reprlab.testing import make_image_folder
    root = make_image_folder(tmp_path / "f", classes=("a", "b"), n=5, size=8)
    for progress in (False, True):
        torch.manual_seed(0)
        cache(from_folder(root), progress=progress)
        after = torch.rand(3)
        torch.manual_seed(0)
        assert torch.equal(after, torch.rand(3)), progress
