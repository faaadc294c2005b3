"""Datasets registry: embedded archive extracted once, checksums, user registries and label maps, downloads (local server only)."""
import hashlib
import http.server
import io
import json
import shutil
import socket
import tarfile
import threading
import urllib.request
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from reprlab import datasets as D
from reprlab.data import DataError
from reprlab.datasets import UnknownDatasetError, data_dir, extract_archive, list_datasets, load_dataset, prepare_dataset
from reprlab.splits import make_split
from reprlab.testing import make_image_folder, make_imagewang, make_npz

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in ("REPRLAB_DATASETS", "REPRLAB_DATA_ROOT", "REPRLAB_DATA"): monkeypatch.delenv(k, raising=False)


def _user(tmp_path, monkeypatch, entries) -> Path:
    p = tmp_path / "user-datasets.json"
    p.write_text(json.dumps(entries))
    monkeypatch.setenv("REPRLAB_DATASETS", str(p))
    return p


def _tgz(src: Path, dest: Path, arcname: str) -> tuple[Path, str, int]:
    with tarfile.open(dest, "w:gz") as t: t.add(src, arcname=arcname)
    data = dest.read_bytes()
    return dest, hashlib.md5(data).hexdigest(), len(data)


# ---------------------------------------------------------------- the embedded default
@pytest.fixture(scope="module")
def wang_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return cache, load_dataset("cifar10-wang-mini", cache_dir=cache)


def test_embedded_counts_and_class_order(wang_cache):
    _, w = wang_cache
    assert {k: len(v) for k, v in w.items()} == {"unsup": 5000, "train": 600, "val": 1000}
    assert w["train"].classes == CIFAR == w["val"].classes
    assert w["train"].class_counts == {c: 60 for c in CIFAR} and w["val"].class_counts == {c: 100 for c in CIFAR}
    assert (w["unsup"].labels == -1).all()
    s = w["val"][999]
    assert s["image"].shape == (3, 32, 32) and f"/val/{CIFAR[s['label']]}/" in s["path"]


def test_embedded_extracted_once(wang_cache, monkeypatch):
    cache, _ = wang_cache
    target = cache / "datasets" / "cifar10-wang-mini"
    marker = target / D.MARKER
    mtime = marker.stat().st_mtime_ns
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: pytest.fail("re-extracted"))
    w = load_dataset("cifar10-wang-mini", cache_dir=cache, size=16)
    assert marker.stat().st_mtime_ns == mtime and w["train"][0]["image"].shape == (3, 16, 16)
    assert sorted(p.name for p in (cache / "datasets").iterdir()) == ["cifar10-wang-mini"]     # no temp folders
    assert json.loads(marker.read_text())["archive"].startswith("sha256:d2e4e7e5")


def test_embedded_archive_matches_registry_checksum():
    reg = json.loads((data_dir() / "datasets.json").read_text())["cifar10-wang-mini"]
    data = (data_dir() / reg["archive"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == reg["sha256"] == "d2e4e7e588d5a792118a18a00e37287c7b239766c33a437cd856b830929552a3"
    assert len(data) == reg["size"]


def test_corrupted_archive_copy_fails_checksum(tmp_path, monkeypatch):
    data = bytearray((data_dir() / "cifar10-wang-mini.tar.gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.tar.gz").write_bytes(bytes(data))
    builtin = json.loads((data_dir() / "datasets.json").read_text())["cifar10-wang-mini"]
    _user(tmp_path, monkeypatch, {"bad-mini": builtin | {"archive": "bad.tar.gz"}})
    with pytest.raises(DataError, match=r"bad.tar.gz failed its sha256 check.*expected d2e4e7e5"):
        load_dataset("bad-mini", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "datasets" / "bad-mini").exists()


def test_registry_found_from_REPRLAB_DATA(tmp_path, monkeypatch):
    "What a non-editable install sees: the registry and archive in another folder (setup.py data_files)."
    for f in ("datasets.json", "cifar10-wang-mini.tar.gz"): shutil.copy(data_dir() / f, tmp_path / f)
    monkeypatch.setenv("REPRLAB_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    assert prepare_dataset("cifar10-wang-mini", cache_dir=tmp_path / "c").name == "cifar10-wang-mini"
    setup = (Path(__file__).parents[1] / "setup.py").read_text()
    assert "data/cifar10-wang-mini.tar.gz" in setup and "data/datasets.json" in setup


def test_builtin_registry_entries():
    reg = json.loads((data_dir() / "datasets.json").read_text())
    names = [f"{b}{s}" for b in ("imagewang", "imagenette2", "imagewoof2") for s in ("", "-160", "-320")]
    assert set(names + ["cifar10", "cifar10-wang-mini"]) <= set(list_datasets())
    for n in names:
        e = reg[n]
        assert e["url"] == f"https://s3.amazonaws.com/fast-ai-imageclas/{n}.tgz" and e["folder"] == n
        assert len(e["md5"]) == 32 and int(e["size"]) > 10**7
        assert e["layout"] == ("imagewang" if n.startswith("imagewang") else "imagefolder")
    assert reg["imagenette2-160"]["md5"] == "c475f8f7617a200ba35b9facc48443c3"    # fastai/data/checks.txt
    assert reg["cifar10"]["torchvision"] == "CIFAR10"


# ---------------------------------------------------------------- names and user registries
def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownDatasetError, match=r"unknown dataset 'imagewof2-160'.*close: \['imagewoof2-160'"):
        load_dataset("imagewof2-160")
    with pytest.raises(KeyError): load_dataset("nope")


def test_user_registry_local_root_and_label_map(tmp_path, monkeypatch):
    lab = tmp_path / "lab"
    make_image_folder(lab / "spoof" / "train", classes=("Genuine", "Photo", "Screen", "junk"), n=3, size=8)
    make_image_folder(lab / "spoof" / "val", classes=("Genuine", "Screen"), n=2, size=8)
    _user(tmp_path, monkeypatch, {"spoof": {
        "root": "spoof", "layout": "imagefolder", "label_map": {"Genuine": "live", "Photo": "attack", "Screen": "attack", "junk": None}}})
    monkeypatch.setenv("REPRLAB_DATA_ROOT", str(lab))
    s = load_dataset("spoof", size=4)
    assert s["train"].classes == s["val"].classes == ["attack", "live"]
    assert s["train"].class_counts == {"attack": 6, "live": 3} and s["val"].class_counts == {"attack": 2, "live": 2}
    assert all("/junk/" not in p for p in s["train"].paths)
    for d in s.values():
        for i in range(len(d)):
            assert ("/Genuine/" in d.paths[i]) == (d.classes[d.labels[i]] == "live")
    assert s["train"][0]["image"].shape == (3, 4, 4)
    monkeypatch.delenv("REPRLAB_DATA_ROOT")                 # then relative to the registry file's folder
    with pytest.raises(FileNotFoundError, match="REPRLAB_DATA_ROOT"): load_dataset("spoof")
    shutil.move(lab / "spoof", tmp_path / "spoof")
    assert len(load_dataset("spoof")["train"]) == 9


def test_user_entry_wins_and_csv_npz_layouts(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "imgs", classes=("a", "b"), n=6, size=8)
    from reprlab.data import from_folder
    make_split(from_folder(root), root / "split", fractions=(0.5, 0.5))
    (tmp_path / "arr").mkdir(); make_npz(tmp_path / "arr" / "train.npz", n_per_class=3, size=8)
    _user(tmp_path, monkeypatch, {
        "cifar10": {"root": "imgs", "layout": "csv", "split_dir": "split"},
        "arr": {"root": "arr", "layout": "npz", "splits": {"train": "train.npz"}, "label_map": {"cat": "pet", "dog": "pet"}},
        "wang": {"root": "w", "layout": "imagewang"}})
    s = load_dataset("cifar10")                             # the user's entry replaced the built-in one
    assert list(s) == ["train", "test"] and len(s["train"]) == len(s["test"]) == 6
    a = load_dataset("arr", size=4, channels=1)
    assert a["train"].images.shape == (6, 1, 4, 4) and a["train"].classes == ["pet"]
    make_imagewang(tmp_path / "w", n_train=2, n_val=1, n_unsup=3, size=8)
    w = load_dataset("wang")
    assert len(w["unsup"]) == 3 and w["train"].classes == ["cat", "dog"]


def test_bad_registry_entries(tmp_path, monkeypatch):
    p = _user(tmp_path, monkeypatch, {"two": {"root": "x", "url": "http://x/y.tgz", "layout": "imagefolder"},
                                      "lay": {"root": "x", "layout": "coco"}})
    with pytest.raises(DataError, match=r"'two'.*exactly one of"): load_dataset("two")
    with pytest.raises(DataError, match=r"layout 'coco'"): load_dataset("lay")
    p.write_text("{not json")
    with pytest.raises(DataError, match="user-datasets.json is not valid JSON"): list_datasets()


# ---------------------------------------------------------------- downloads (local server only)
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "A local HTTP server on 127.0.0.1 serving a small Imagewang-layout .tgz (and a corrupted copy)."
    www = tmp_path_factory.mktemp("www")
    src = make_imagewang(tmp_path_factory.mktemp("src") / "toywang", n_train=3, n_val=2, n_unsup=4, size=8)
    path, md5, size = _tgz(src, www / "toywang.tgz", "toywang")
    bad = bytearray(path.read_bytes()); bad[size // 2] ^= 0xFF
    (www / "bad.tgz").write_bytes(bytes(bad))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(www)))
    th = threading.Thread(target=httpd.serve_forever, daemon=True); th.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", md5, size
    httpd.shutdown(); httpd.server_close()


def _entry(url, md5, size, **kw):
    return {"url": url, "md5": md5, "size": size, "layout": "imagewang", "folder": "toywang"} | kw


def _leftovers(cache: Path):
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.name.startswith(".") or p.suffix in (".part", ".partial"))


def test_download_verified_and_extracted(server, tmp_path, monkeypatch):
    base, md5, size = server
    _user(tmp_path, monkeypatch, {"toy": _entry(f"{base}/toywang.tgz", md5, size)})
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"not downloaded: call load_dataset\('toy', download=True\).*put that archive at .*downloads/toywang.tgz"):
        load_dataset("toy", cache_dir=cache)
    w = load_dataset("toy", download=True, cache_dir=cache, progress=False)
    assert {k: len(v) for k, v in w.items()} == {"train": 6, "val": 4, "unsup": 4}
    assert (cache / "datasets" / "downloads" / "toywang.tgz").stat().st_size == size
    assert _leftovers(cache) == ["datasets/toy/.reprlab-extracted.json"]
    w2 = load_dataset("toy", cache_dir=cache)              # no network needed any more
    assert w2["train"].paths == w["train"].paths


def test_manually_placed_archive_is_verified(server, tmp_path, monkeypatch):
    base, md5, size = server
    _user(tmp_path, monkeypatch, {"toy": _entry("http://127.0.0.1:9/never-contacted.tgz", md5, size)})
    dl = tmp_path / "cache" / "datasets" / "downloads"; dl.mkdir(parents=True)
    urllib.request.urlretrieve(f"{base}/toywang.tgz", dl / "never-contacted.tgz")     # fetched "on another machine"
    assert len(load_dataset("toy", cache_dir=tmp_path / "cache")["val"]) == 4


@pytest.mark.parametrize("what", ["md5", "size"])
def test_download_wrong_checksum_leaves_nothing(server, tmp_path, monkeypatch, what):
    base, md5, size = server
    e = _entry(f"{base}/toywang.tgz", "0" * 32, size) if what == "md5" else _entry(f"{base}/toywang.tgz", md5, size + 1)
    _user(tmp_path, monkeypatch, {"toy": e})
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=("failed its md5 check" if what == "md5" else f"has {size} bytes, expected {size + 1}")):
        load_dataset("toy", download=True, cache_dir=cache, progress=False)
    assert not (cache / "datasets" / "toy").exists() and not (cache / "datasets" / "downloads" / "toywang.tgz").exists()
    assert _leftovers(cache) == []


def test_corrupted_download_and_bad_tar(server, tmp_path, monkeypatch):
    base, md5, size = server
    _user(tmp_path, monkeypatch, {"toy": _entry(f"{base}/bad.tgz", md5, size)})
    with pytest.raises(DataError, match="failed its md5 check"):
        load_dataset("toy", download=True, cache_dir=tmp_path / "c", progress=False)
    # an archive whose checksum is right but which is not a tar: a clear error, no half-extracted folder
    junk = tmp_path / "junk.tgz"; junk.write_bytes(b"not a tar at all")
    with pytest.raises(DataError, match="cannot extract"): extract_archive(junk, tmp_path / "x" / "t", "id")
    assert list((tmp_path / "x").iterdir()) == []


def test_unsafe_tar_member_refused(tmp_path):
    with tarfile.open(tmp_path / "evil.tgz", "w:gz") as t:
        info = tarfile.TarInfo("../../escaped.txt"); info.size = 2
        t.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataError, match="cannot extract"): extract_archive(tmp_path / "evil.tgz", tmp_path / "out" / "t", "id")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out" / "t").exists()


def test_offline_connection_refused_names_url(tmp_path, monkeypatch):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()     # nothing listens there
    url = f"http://127.0.0.1:{port}/x.tgz"
    _user(tmp_path, monkeypatch, {"gone": _entry(url, "0" * 32, 123)})
    with pytest.raises(DataError, match=rf"cannot download {url}: .*(refused|Errno).*put it at .*downloads/x.tgz"):
        load_dataset("gone", download=True, cache_dir=tmp_path / "c", progress=False)
    assert _leftovers(tmp_path / "c") == []


def test_torchvision_cifar10_absent_without_download(tmp_path):
    with pytest.raises(DataError, match=r"torchvision CIFAR10\) is not in .*download=True.*cifar-10-python.tar.gz"):
        load_dataset("cifar10", cache_dir=tmp_path)


def test_torchvision_cifar10_from_local_batches(tmp_path):
    "torchvision's CIFAR10 reads its pickled batches; a tiny fake set (md5 checks patched out) becomes uint8 NCHW arrays."
    import pickle
    import torchvision
    root = tmp_path / "datasets" / "cifar10" / "cifar-10-batches-py"; root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f, _ in torchvision.datasets.CIFAR10.train_list + torchvision.datasets.CIFAR10.test_list:
        with open(root / f, "wb") as fh:
            pickle.dump({"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "labels": [1, 9]}, fh)
    with open(root / "batches.meta", "wb") as fh: pickle.dump({"label_names": CIFAR}, fh)
    mp = pytest.MonkeyPatch()
    mp.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)     # the fake files have other md5s
    try: c = load_dataset("cifar10", cache_dir=tmp_path, channels=1)
    finally: mp.undo()
    assert len(c["train"]) == 10 and len(c["test"]) == 2 and c["train"].classes == CIFAR
    assert c["train"].images.shape == (10, 1, 32, 32) and c["test"].labels.tolist() == [1, 9]
