"""reprlab.saliency_data: fixation CSVs, fixation / density maps (against a brute-force sum of Gaussians), the saliency
folder loader, the seeded split, user map folders, and the embedded scene-saliency archive."""
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

import reprlab.saliency_data as sd
from reprlab.data import CorruptImageError, DataError, decode_image_file
from reprlab.datasets import data_dir, load_dataset, prepare_dataset
from reprlab.saliency_data import (SaliencySet, default_sigma, density_map, fixation_map, load_map_folder, load_saliency,
                                   read_fixations, saliency_splits, save_map_folder)


def _caught(fn, *a, **kw):
    "Call fn, returning (result, list of warning messages)."
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn(*a, **kw)
    return out, [str(x.message) for x in w]


def make_saliency_folder(root, sizes=((40, 60), (30, 30), (50, 20), (64, 48)), seed=0, empty=("099",)):
    "images/NNN.jpg of the given (h, w) with k + 3 fixations for image k, plus images declared without fixations."
    root, rng = Path(root), np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = ["image,viewer,row,col,onset_s,duration_s"]
    for k, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{k + 1:03d}.jpg", quality=95)
        lines += [f"{k + 1:03d}.jpg,{j % 4},{rng.uniform(0, h):.2f},{rng.uniform(0, w):.2f},0.1,0.2" for j in range(k + 3)]
    for n in empty:
        Image.fromarray(np.full((10, 12, 3), 128, np.uint8)).save(root / "images" / f"{n}.png")
        lines.append(f"{n}.png,,,,,")
    (root / "fixations.csv").write_text("\n".join(lines) + "\n")
    return root


def brute_density(pixels, shape, sigma, truncate=None):
    """Normalised sum of (possibly anisotropic) Gaussians evaluated on the grid, one per fixated pixel (with repeats);
    `truncate`: each Gaussian is zero beyond `int(truncate * sigma + 0.5)` pixels along each axis (scipy's kernel)."""
    sr, sc = (sigma, sigma) if np.isscalar(sigma) else sigma
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    d = 0
    for r, c in pixels:
        g = np.exp(-(rr - r) ** 2 / (2 * sr ** 2) - (cc - c) ** 2 / (2 * sc ** 2))
        if truncate is not None: g *= (abs(rr - r) <= int(truncate * sr + 0.5)) & (abs(cc - c) <= int(truncate * sc + 0.5))
        d = d + g
    return d / d.sum()


def assert_brute(d, pixels, shape, sigma):
    "`d` is the truncated brute-force density to float32 precision, and the exact one up to the 4-sigma tails."
    np.testing.assert_allclose(d, brute_density(pixels, shape, sigma, truncate=4.0), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(d, brute_density(pixels, shape, sigma), atol=1e-3 * float(d.max()))


# ---------------------------------------------------------------- read_fixations
def test_read_fixations_parses_names_viewers_and_order(tmp_path):
    (tmp_path / "f.csv").write_text("image,row,col,viewer,extra\n"
                                    "b.jpg,1.5,2,3,x\n002,0,0,,y\na.png,4,5.25,0,z\nb.jpg,7,8,1,w\n\n")
    fx = read_fixations(tmp_path / "f.csv")
    assert list(fx) == ["002", "a", "b"]                     # sorted by name, stems
    np.testing.assert_array_equal(fx["b"], [[1.5, 2, 3], [7, 8, 1]])
    np.testing.assert_array_equal(fx["002"], [[0, 0, -1]])    # empty viewer: -1
    assert fx["a"].dtype == np.float64 and fx["a"].shape == (1, 3)
    (tmp_path / "g.csv").write_text("row,col,image\n1,2,x.jpg\n")   # no viewer column, other column order
    np.testing.assert_array_equal(read_fixations(tmp_path / "g.csv")["x"], [[1, 2, -1]])


@pytest.mark.parametrize("text, match", [
    ("image,row\n001.jpg,1\n", r"bad\.csv has no column\(s\) \['col'\]"),
    ("image,row,col\n001.jpg,1,2\n001.jpg,1,abc\n", r"bad\.csv line 3, column 'col': 'abc' is not a number"),
    ("image,row,col\n001.jpg,1,2\n002.jpg,-0.5,2\n", r"bad\.csv line 3, column 'row': -0.5 is negative"),
    ("image,row,col\n001.jpg,nan,2\n", r"line 2, column 'row': 'nan' is not a finite number"),
    ("image,row,col\n001.jpg,,2\n", r"line 2, column 'row': '' is not a number"),
    ("image,row,col\n,1,2\n", r"line 2, column 'image': the image name is empty"),
    ("image,row,col,viewer\n001.jpg,1,2,v1\n", r"line 2, column 'viewer': 'v1' is not a number"),
    ("image,row,col\n", r"no fixation rows"),
])
def test_read_fixations_bad_input_names_file_line_column(tmp_path, text, match):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=match): read_fixations(tmp_path / "bad.csv")


def test_read_fixations_empty_lists_kept_and_said_once(tmp_path):
    (tmp_path / "f.csv").write_text("image,viewer,row,col\n001.jpg,0,1,1\n007.jpg,,,\n003.jpg,0,,\n")
    fx, msgs = _caught(read_fixations, tmp_path / "f.csv")
    assert list(fx) == ["001", "003", "007"] and fx["003"].shape == fx["007"].shape == (0, 3)
    assert len(msgs) == 1 and "2 image(s) have an empty fixation list" in msgs[0] and "003, 007" in msgs[0]
    assert _caught(read_fixations, tmp_path / "f.csv", warn=False)[1] == []
    with pytest.raises(FileNotFoundError, match="nope.csv"): read_fixations(tmp_path / "nope.csv")


# ---------------------------------------------------------------- maps
def test_fixation_map_floors_and_clips():
    pts = np.array([[0.99, 0.0, 5], [3.5, 2.999, 1], [3.0, 2.0, 0], [-2, 100, 0], [100, -1, 0]])   # (K, 3) accepted
    m = fixation_map(pts, (4, 6))
    assert m.dtype == np.bool_ and m.shape == (4, 6)
    assert {tuple(x) for x in np.argwhere(m)} == {(0, 0), (3, 2), (0, 5), (3, 0)}
    assert not fixation_map(np.zeros((0, 2)), (3, 3)).any()
    assert fixation_map(torch.tensor([[1.2, 1.7]]), (3, 3))[1, 1]
    with pytest.raises(ValueError, match="shape must be"): fixation_map(pts, (0, 3))
    with pytest.raises(ValueError, match=r"\(K, 2\)"): fixation_map(np.ones(3), (3, 3))


@pytest.mark.parametrize("sigma", [1.0, 2.5, (1.0, 3.0)])
def test_density_map_matches_brute_force_gaussians(sigma):
    rng = np.random.default_rng(1)
    shape = (23, 31)
    pts = np.concatenate([rng.uniform(0, [23, 31], (12, 2)), [[5.2, 5.9], [5.7, 5.1]]])   # a pixel fixated twice
    d = density_map(pts, shape, sigma=sigma)
    pix = [(int(r), int(c)) for r, c in pts]
    assert d.dtype == np.float32 and d.shape == shape and abs(float(d.sum()) - 1) < 1e-5
    assert_brute(d, pix, shape, sigma)


def test_density_map_default_sigma_and_config(monkeypatch):
    pts = np.array([[10.0, 20.0], [3.0, 4.0]])
    assert default_sigma((96, 128)) == pytest.approx(128 / 30) and default_sigma((60, 40), frac=0.1) == pytest.approx(6)
    assert_brute(density_map(pts, (30, 40)), [(10, 20), (3, 4)], (30, 40), 40 / 30)
    monkeypatch.setattr(sd, "SIGMA_FRAC", 0.1)
    assert_brute(density_map(pts, (30, 40)), [(10, 20), (3, 4)], (30, 40), 4.0)
    np.testing.assert_array_equal(density_map(pts, (30, 40), sigma=0) > 0, fixation_map(pts, (30, 40)))
    for bad in (-1, float("nan"), (1, 2, 3), "big"):
        with pytest.raises(ValueError, match="sigma must be"): density_map(pts, (30, 40), sigma=bad)


def test_density_map_torch_fallback_equals_scipy(monkeypatch):
    pts = np.random.default_rng(2).uniform(0, 40, (20, 2))
    ref = density_map(pts, (40, 40), sigma=(2.0, 3.5))
    monkeypatch.setitem(sys.modules, "scipy.ndimage", None)      # `from scipy.ndimage import ...` -> ImportError
    with pytest.raises(ImportError): from scipy.ndimage import gaussian_filter  # noqa: F401
    np.testing.assert_allclose(density_map(pts, (40, 40), sigma=(2.0, 3.5)), ref, atol=1e-7)


def test_density_map_empty_is_uniform_and_said():
    u, msgs = _caught(density_map, np.zeros((0, 3)), (4, 5))
    np.testing.assert_array_equal(u, np.full((4, 5), 1 / 20, np.float32))
    assert len(msgs) == 1 and "uniform" in msgs[0]
    assert _caught(density_map, [], (4, 5), warn=False)[1] == []


# ---------------------------------------------------------------- load_saliency / SaliencySet
def test_load_saliency_folder(tmp_path):
    root = make_saliency_folder(tmp_path / "sal")
    s, msgs = _caught(load_saliency, root, size=(24, 32), progress=False)
    assert s.names == ["001", "002", "003", "004", "099"] and s.root == root
    assert s.images.dtype == torch.uint8 and s.images.shape == (5, 3, 24, 32) and s.size == (24, 32)
    assert s.orig_sizes == [(40, 60), (30, 30), (50, 20), (64, 48), (10, 12)]
    assert [len(p) for p in s.points] == [3, 4, 5, 6, 0]
    assert len(msgs) == 1 and "1 image(s)" in msgs[0] and "099" in msgs[0]        # no fixations: listed once
    fx = read_fixations(root / "fixations.csv", warn=False)
    for i, n in enumerate(s.names[:4]):
        h0, w0 = s.orig_sizes[i]
        np.testing.assert_allclose(s.points[i], fx[n][:, :2] * [24 / h0, 32 / w0])
        np.testing.assert_array_equal(s.viewers[i], fx[n][:, 2].astype(int))
        ref = TF.resize(decode_image_file(root / "images" / f"{n}.jpg"), [24, 32], antialias=True)
        assert torch.equal(s.images[i], ref)                                     # aspect ratio ignored, no crop
    fm = s.fixation_maps()
    assert fm.dtype == torch.bool and fm.shape == (5, 24, 32) and not fm[4].any()
    for i in range(5): np.testing.assert_array_equal(fm[i].numpy(), fixation_map(s.points[i], (24, 32)))
    dm, msgs = _caught(s.density_maps, sigma=2.0)
    assert dm.dtype == torch.float32 and len(msgs) == 1 and "099" in msgs[0]
    torch.testing.assert_close(dm.sum((1, 2)), torch.ones(5))
    np.testing.assert_allclose(dm[1].numpy(), density_map(s.points[1], (24, 32), 2.0))
    assert "5 images at 24x32, 18 fixations" in repr(s)


def test_load_saliency_limit_stray_outside_and_subset(tmp_path):
    root = make_saliency_folder(tmp_path / "sal", empty=())
    with open(root / "fixations.csv", "a") as f: f.write("123.jpg,0,1,1,0,0\n001.jpg,0,39.5,70,0,0\n")   # stray; col > width
    s, msgs = _caught(load_saliency, root, size=(20, 20), limit=2, progress=False)
    assert s.names == ["001", "002"] and len(s) == 2
    assert len(msgs) == 2 and "123" in msgs[0] and "ignored" in msgs[0] and "outside" in msgs[1] and "001" in msgs[1]
    assert s.fixation_maps()[0, 19, 19]                                           # the outside point clipped
    t = s.subset(np.array([False, True]))
    assert t.names == ["002"] and torch.equal(t.images[0], s.images[1]) and t.orig_sizes == [(30, 30)]
    t.points[0][:] = -1
    assert (s.points[1] >= 0).all()                                              # a copy
    assert s.subset([1, 0]).names == ["002", "001"]
    with pytest.raises(IndexError): s.subset([2])
    with pytest.raises(ValueError, match="limit"): load_saliency(root, limit=0)


def test_load_saliency_bad_folders(tmp_path):
    root = make_saliency_folder(tmp_path / "sal")
    (root / "images" / "003.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(CorruptImageError, match=r"003\.jpg"): load_saliency(root, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"): load_saliency(tmp_path / "nope")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no image files"): load_saliency(tmp_path / "empty")
    shutil.copy(root / "images" / "001.jpg", root / "images" / "001.png")
    with pytest.raises(DataError, match="001"): load_saliency(root)
    with pytest.raises(ValueError, match="images must be a uint8"):
        SaliencySet(["a"], torch.zeros(1, 3, 4, 4), [(4, 4)], [np.zeros((0, 2))])
    with pytest.raises(ValueError, match="one per image"):
        SaliencySet(["a", "b"], torch.zeros(1, 3, 4, 4, dtype=torch.uint8), [(4, 4)], [np.zeros((0, 2))])


def test_load_saliency_registry_name(tmp_path, monkeypatch):
    make_saliency_folder(tmp_path / "lab" / "my-sal")
    (tmp_path / "user.json").write_text(json.dumps({"my-sal": {"root": "my-sal", "layout": "saliency"}}))
    monkeypatch.setenv("REPRLAB_DATASETS", str(tmp_path / "user.json"))
    monkeypatch.setenv("REPRLAB_DATA_ROOT", str(tmp_path / "lab"))
    s, _ = _caught(load_saliency, "my-sal", size=(8, 8), progress=False)
    assert len(s) == 5
    im = sd.load_saliency_images(tmp_path / "lab" / "my-sal", n_test=1, n_val=1)
    assert {k: len(v) for k, v in im.items()} == {"train": 3, "val": 1, "test": 1}
    assert sorted(sum((v.extras["name"] for v in im.values()), [])) == s.names
    with pytest.raises(ValueError, match="leaves no training image"): load_dataset("my-sal")   # 80 + 40 of 5


# ---------------------------------------------------------------- splits
def test_saliency_splits_fixed_seeded_order_free():
    names = [f"{i:03d}" for i in range(1, 401)]
    sp = saliency_splits(names)
    assert {k: len(v) for k, v in sp.items()} == {"train": 280, "val": 40, "test": 80}
    np.testing.assert_array_equal(np.sort(np.concatenate(list(sp.values()))), np.arange(400))
    assert all((np.diff(v) > 0).all() for v in sp.values())
    perm = np.random.default_rng(5).permutation(400)
    shuffled = [names[i] for i in perm]
    sp2 = saliency_splits(shuffled)
    for k in sp: assert {shuffled[i] for i in sp2[k]} == {names[i] for i in sp[k]}
    for k in sp: np.testing.assert_array_equal(saliency_splits(names)[k], sp[k])      # deterministic
    assert set(saliency_splits(names, seed=1)["test"]) != set(sp["test"])
    assert len(saliency_splits(names[:10], n_test=3, n_val=0)["val"]) == 0
    with pytest.raises(ValueError, match="leaves no training image"): saliency_splits(names[:10], n_test=5, n_val=5)
    with pytest.raises(ValueError, match="unique"): saliency_splits(["a", "b", "a", "c"], 1, 1)
    with pytest.raises(ValueError, match="n_val must be"): saliency_splits(names, n_val=-1)


# ---------------------------------------------------------------- map folders
def test_map_folder_round_trip_atomic(tmp_path):
    maps = torch.rand(4, 9, 13, generator=torch.Generator().manual_seed(0))
    maps /= maps.amax((1, 2), keepdim=True)                                       # max 1, as models output
    maps[3] = 0                                                                   # an all-zero map stays zero
    names = ["001", "002", "003", "004"]
    folder = save_map_folder(tmp_path, "itti", names, maps)
    assert folder == tmp_path / "itti" and sorted(p.name for p in folder.iterdir()) == [f"{n}.png" for n in names]
    with Image.open(folder / "001.png") as im: assert im.mode == "L" and np.asarray(im).max() == 255
    got, kept = load_map_folder(tmp_path, "itti", names, (9, 13))
    assert kept == names and got.dtype == torch.float32 and got.shape == (4, 9, 13)
    assert float((got - maps).abs().max()) <= 0.5 / 255 + 1e-6
    save_map_folder(tmp_path, "np", ["a"], 3 * maps[:1].numpy().astype(np.float64))   # scaled to max 255 too
    assert float((load_map_folder(tmp_path, "np", ["a"], (9, 13))[0] - maps[:1]).abs().max()) <= 0.5 / 255 + 1e-6
    with pytest.raises(ValueError, match=r"finite and >= 0; not so for b"): save_map_folder(tmp_path, "x", ["a", "b"], np.stack([np.ones((2, 2)), -np.ones((2, 2))]))
    with pytest.raises(ValueError, match="N = 3 names"): save_map_folder(tmp_path, "x", ["a", "b", "c"], np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match="path separator"): save_map_folder(tmp_path, "x", ["../a"], np.ones((1, 4, 4)))


def test_map_folder_missing_maps_listed_error_or_skip(tmp_path):
    names = [f"{i:03d}" for i in range(1, 13)]
    save_map_folder(tmp_path, "t", names[:2], np.ones((2, 5, 5)))
    with pytest.raises(DataError, match=r"map folder .*t has no map for 10 of 12 image\(s\).*003, 004, .*\(10 in all\).*on_missing='skip'"):
        load_map_folder(tmp_path, "t", names, (5, 5))
    (got, kept), msgs = _caught(load_map_folder, tmp_path, "t", names, (5, 5), on_missing="skip")
    assert kept == ["001", "002"] and got.shape == (2, 5, 5) and len(msgs) == 1 and "skipped" in msgs[0]
    (got, kept), _ = _caught(load_map_folder, tmp_path, "t", ["009"], (5, 5), on_missing="skip")
    assert kept == [] and got.shape == (0, 5, 5)
    with pytest.raises(DataError, match=r"map folder .*nope does not exist.*\['t'\]"): load_map_folder(tmp_path, "nope", names, (5, 5))
    with pytest.raises(ValueError, match="on_missing"): load_map_folder(tmp_path, "t", names, (5, 5), on_missing="ignore")


def test_map_folder_sizes_colour_formats_corrupt(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(d / "a.png")                                        # colour, 20x30
    Image.fromarray(rng.integers(0, 256, (10, 16), dtype=np.uint8)).save(d / "b.png")   # grey, 10x16
    Image.fromarray((np.arange(10 * 16).reshape(10, 16) * 400).astype(np.uint16)).save(d / "c.png")  # 16-bit
    np.save(d / "e.npy", np.full((10, 16), 4.0)); np.save(d / "f.npy", np.full((10, 16), 0.25))
    Image.fromarray(np.full((10, 16), 200, np.uint8)).save(d / "g.jpg", quality=100)
    names = ["a", "b", "c", "e", "f", "g"]
    (maps, kept), msgs = _caught(load_map_folder, tmp_path, "m", names, (10, 16))
    assert kept == names and maps.shape == (6, 10, 16) and float(maps.min()) >= 0 and float(maps.max()) <= 1
    assert len(msgs) == 2                                                         # one for sizes, one for colour
    assert "1 map(s)" in msgs[0] and "a.png is 20x30" in msgs[0] and "resized to 10x16" in msgs[0]
    assert "converted to grey" in msgs[1] and "a.png" in msgs[1]
    grey = np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255
    ref = TF.resize(torch.from_numpy(grey)[None], [10, 16], antialias=True)[0]
    torch.testing.assert_close(maps[0], ref.clamp(0, 1))
    with Image.open(d / "b.png") as im: torch.testing.assert_close(maps[1].numpy(), np.asarray(im, np.float32) / 255)
    np.testing.assert_allclose(maps[2].numpy(), np.arange(160).reshape(10, 16) * 400 / 65535, atol=1e-6)
    assert float(maps[3].max()) == 1 and float(maps[4].max()) == 0.25           # npy: /max only when above 1
    assert abs(float(maps[5].mean()) - 200 / 255) < 2 / 255
    # with the images' own sizes as the reference, an original-size map is not reported
    (_, _), msgs = _caught(load_map_folder, tmp_path, "m", ["a", "b"], (10, 16), image_sizes=[(20, 30), (10, 16)])
    assert [m for m in msgs if "not the size" in m] == []
    (_, _), msgs = _caught(load_map_folder, tmp_path, "m", ["a", "b"], (10, 16), image_sizes=[(20, 30), (12, 16)])
    assert any("1 map(s)" in m and "b.png is 10x16, its image 12x16" in m for m in msgs)
    (d / "h.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(CorruptImageError, match=r"h\.png"): load_map_folder(tmp_path, "m", ["h"], (10, 16))
    np.save(d / "i.npy", -np.ones((3, 3)))
    with pytest.raises(DataError, match=r"i\.npy has negative"): load_map_folder(tmp_path, "m", ["i"], (10, 16))


# ---------------------------------------------------------------- the embedded archive
ARCHIVE = Path(__file__).parents[1] / "data" / "scene-saliency.tar.gz"


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    if not ARCHIVE.is_file(): pytest.skip(f"{ARCHIVE} is not there (the embedded scene-saliency archive)")
    # a fresh clone sees only data/: the registry and the archive, no ../shared
    d = tmp_path_factory.mktemp("clone-data")
    for f in ("datasets.json", "scene-saliency.tar.gz"): shutil.copy(data_dir() / f, d / f)
    mp = pytest.MonkeyPatch()
    mp.setenv("REPRLAB_DATA", str(d)); mp.delenv("REPRLAB_DATASETS", raising=False)
    cache = tmp_path_factory.mktemp("cache")
    try: yield prepare_dataset("scene-saliency", cache_dir=cache, progress=False), cache
    finally: mp.undo()


def test_real_archive_registered_and_complete(real_root):
    real_root, _ = real_root
    reg = json.loads((data_dir() / "datasets.json").read_text())["scene-saliency"]
    assert reg["sha256"] == "28cfb53bcb7cad7f91d78771cfe658ecc65dc659ff1a13571afd75b0a06149ce"
    assert reg["size"] == ARCHIVE.stat().st_size and reg["layout"] == "saliency"
    assert "data/scene-saliency.tar.gz" in (Path(__file__).parents[1] / "setup.py").read_text()   # ships with pip install
    fx = read_fixations(real_root / "fixations.csv")
    assert list(fx) == [f"{i:03d}" for i in range(1, 401)]
    counts = np.array([len(v) for v in fx.values()])
    assert 85 <= counts.mean() <= 90 and counts.min() >= 54
    assert set(np.unique(np.concatenate([v[:, 2] for v in fx.values()]))) == set(range(12))
    assert sorted(p.stem for p in (real_root / "images").iterdir()) == list(fx)
    s, msgs = _caught(load_saliency, real_root, limit=25, progress=False)
    assert msgs == [] and len(s) == 25 and s.images.shape == (25, 3, 96, 128) and s.names[-1] == "025"
    for i, (h0, w0) in enumerate(s.orig_sizes):
        assert max(h0, w0) <= 512 and (s.points[i] < [96, 128]).all()
    dm = s.density_maps()
    torch.testing.assert_close(dm.sum((1, 2)), torch.ones(25))


def test_real_archive_load_dataset_splits(real_root):
    root, cache = real_root
    assert prepare_dataset("scene-saliency", cache_dir=cache) == root                   # extracted once
    spl = load_dataset("scene-saliency", cache_dir=cache)
    assert {k: len(v) for k, v in spl.items()} == {"train": 280, "val": 40, "test": 80}
    x = spl["test"][0]["image"]
    assert x.dtype == torch.uint8 and x.shape[0] == 3
