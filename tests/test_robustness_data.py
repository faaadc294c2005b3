"""Issue 16: bad image files never crash the process, CMYK JPEGs, the pixel limit, skip_corrupt for every kind of bad
file (one warning), and damaged disk caches. All images are made in tmp_path."""
import io
import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torchvision.io import ImageReadMode, decode_image

import reprlab.data as D
from reprlab.data import (CorruptImageError, ImageDataset, ImageTooLargeError, MAX_IMAGE_PIXELS, cache, decode_image_file,
                          from_folder)
from reprlab.datasets import load_dataset
from reprlab.testing import make_image_folder

LIB = str(Path(D.__file__).resolve().parents[1])


# ---------------------------------------------------------------- helpers: PNG chunks, crafted files
def _chunk(kind: bytes, d: bytes) -> bytes:
    return struct.pack(">I", len(d)) + kind + d + struct.pack(">I", zlib.crc32(kind + d))


def _chunks(png: bytes) -> list:
    i, out = 8, []
    while i < len(png):
        n = struct.unpack_from(">I", png, i)[0]
        out.append([png[i + 4:i + 8], png[i + 8:i + 8 + n]]); i += 12 + n
    return out


def _png(chunks, bad_crc=()) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        _chunk(k, d)[:-4] + struct.pack(">I", zlib.crc32(k + d) ^ (k in bad_crc)) for k, d in chunks)


def _png_bytes(a, **kw) -> bytes:
    b = io.BytesIO(); Image.fromarray(a).save(b, "PNG", **kw); return b.getvalue()


def _rgb(h=16, w=12, seed=0):
    return np.random.RandomState(seed).randint(1, 256, (h, w, 3), dtype=np.uint8)


def _bad_pngs() -> dict:
    "PNGs that each killed the process in torchvision's decode_png (checked by hand: segfault, rc 139)."
    a = _rgb(); good = _png_bytes(a); c = _chunks(good)
    ihdr, idat = c[0][1], c[1][1]; raw = zlib.decompress(idat)
    bf = bytearray(raw); bf[0] = 7
    flip = bytearray(idat); flip[len(flip) // 2] ^= 0xFF
    return {
        "taller_ihdr": _png([[b"IHDR", ihdr[:4] + struct.pack(">I", 64) + ihdr[8:]], *c[1:]]),   # "Not enough image data"
        "short_idat": _png([c[0], [b"IDAT", idat[: len(idat) // 2]], c[2]]),
        "bad_filter": _png([c[0], [b"IDAT", zlib.compress(bytes(bf))], c[2]]),
        "broken_deflate": _png([c[0], [b"IDAT", bytes(flip)], c[2]]),
        "wider_ihdr": _png([[b"IHDR", struct.pack(">I", 48) + ihdr[4:]], *c[1:]]),
    }


def _interlaced_gray(a: np.ndarray, drop_last_pass: bool = False) -> bytes:
    "An Adam7-interlaced 8-bit gray PNG of `a`, written by hand (PIL cannot write interlaced PNGs)."
    h, w = a.shape
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    raw = b"".join(b"\0" + a[y, x0::dx].tobytes() for i, (x0, y0, dx, dy) in enumerate(passes)
                   if not (drop_last_pass and i == 6) and x0 < w for y in range(y0, h, dy))
    return _png([[b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 1)], [b"IDAT", zlib.compress(raw)], [b"IEND", b""]])


def _huge_gray_png(path: Path, w: int, h: int):
    "A valid all-zero 8-bit gray PNG of w x h pixels, deflated row block by row block (small on disk)."
    c, block, parts = zlib.compressobj(9), bytes(w + 1) * 100, []
    for _ in range(h // 100): parts.append(c.compress(block))
    parts.append(c.flush())
    path.write_bytes(_png([[b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)], [b"IDAT", b"".join(parts)], [b"IEND", b""]]))


def _jpeg_bytes(a, mode=None, **kw) -> bytes:
    b = io.BytesIO(); im = Image.fromarray(a); (im.convert(mode) if mode else im).save(b, "JPEG", **kw); return b.getvalue()


def _huge_header_jpeg(w=60000, h=60000) -> bytes:
    "A small JPEG whose frame header (SOF0) claims w x h: libjpeg-turbo would allocate h*w*3 bytes for it."
    d = bytearray(_jpeg_bytes(_rgb(8, 8)))
    i = d.index(b"\xff\xc0"); d[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(d)


def _run(code: str, timeout=120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=LIB, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)


# ---------------------------------------------------------------- 1. PNGs that crashed libpng-in-torchvision
def test_bad_pngs_raise_corrupt_image_error_naming_the_file(tmp_path):
    for name, data in _bad_pngs().items():
        (tmp_path / f"{name}.png").write_bytes(data)
        with pytest.raises(CorruptImageError, match=rf"{name}\.png"): decode_image_file(tmp_path / f"{name}.png")
    with pytest.raises(CorruptImageError, match=r"taller_ihdr\.png: the image data is incomplete.*12x64"):
        decode_image_file(tmp_path / "taller_ihdr.png")


def test_bad_pngs_do_not_kill_the_process(tmp_path):
    for name, data in _bad_pngs().items(): (tmp_path / f"{name}.png").write_bytes(data)
    r = _run("import sys\nfrom pathlib import Path\nfrom reprlab.data import decode_image_file, CorruptImageError\n"
             f"for p in sorted(Path({str(tmp_path)!r}).glob('*.png')):\n"
             "    try: decode_image_file(p); print('decoded', p.name)\n"
             "    except CorruptImageError as e: print('error', p.name)\n"
             "print('survived')")
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])        # was -11 (SIGSEGV) with torchvision's decode_png
    assert r.stdout.split()[-1] == "survived" and r.stdout.count("error ") == 5, r.stdout


def test_png_edge_cases_kept(tmp_path):
    # a genuinely black last row is not mistaken for missing data; interlaced PNGs are checked too
    a = _rgb(); a[-1] = 0
    (tmp_path / "black_last_row.png").write_bytes(_png_bytes(a))
    assert torch.equal(decode_image_file(tmp_path / "black_last_row.png"), torch.from_numpy(a).permute(2, 0, 1))
    g = np.random.RandomState(1).randint(1, 256, (11, 9), dtype=np.uint8)
    (tmp_path / "inter.png").write_bytes(_interlaced_gray(g))
    assert torch.equal(decode_image_file(tmp_path / "inter.png", channels=1)[0], torch.from_numpy(g))
    (tmp_path / "inter_short.png").write_bytes(_interlaced_gray(g, drop_last_pass=True))
    with pytest.raises(CorruptImageError, match="inter_short.png.*incomplete"): decode_image_file(tmp_path / "inter_short.png")


def test_valid_pngs_decode_as_torchvision_did(tmp_path):
    "PNGs now go to PIL: every mode gives what the torchvision path gave, but palettes (16-bit colour: within 1 level)."
    rs = np.random.RandomState(2)
    rgba = rs.randint(0, 256, (6, 5, 4), dtype=np.uint8)
    files = {"rgb": Image.fromarray(rgba[..., :3]), "rgba": Image.fromarray(rgba, "RGBA"),
             "gray": Image.fromarray(rgba[..., 0]), "la": Image.fromarray(rgba[..., :2].copy(), "LA"),
             "bw": Image.fromarray(rgba[..., 0] > 128), "pal": Image.fromarray(rgba[..., :3]).convert("P"),
             "g16": Image.fromarray((rgba[..., 0].astype(np.uint16) * 257 + 100))}
    pt = Image.fromarray(rgba[..., :3]).convert("P"); pt.info["transparency"] = 3; files["pal_trns"] = pt
    for name, im in files.items(): im.save(tmp_path / f"{name}.png")
    for name in files:                                  # the old path: torchvision, 16-bit scaled, alpha dropped
        p = tmp_path / f"{name}.png"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")             # torchvision 0.29 deprecates its image decoders
            tv = decode_image(torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
        if tv.dtype == torch.uint16: tv = D._scale16(tv)
        tv = tv[:1] if tv.shape[0] == 2 else tv[:3]
        if name.startswith("pal"):                      # torchvision gave the palette indices as gray: now the colours
            assert tv.shape[0] == 1
            tv = torch.from_numpy(np.array(Image.open(p).convert("RGBA"))[..., :3]).permute(2, 0, 1)
        for ch in (1, 3):
            want = tv.expand(3, -1, -1) if ch == 3 and tv.shape[0] == 1 else tv
            if ch == 1 and want.shape[0] == 3: want = D.TF.rgb_to_grayscale(want)
            with warnings.catch_warnings():
                warnings.simplefilter("error")          # no per-file PIL note (palette transparency, ...) escapes
                assert torch.equal(decode_image_file(p, channels=ch), want.contiguous()), (name, ch)
    # 16-bit colour (written by hand: PIL cannot): PIL reads v >> 8, the torchvision path rounded v * 255 / 65535
    v = rs.randint(0, 65536, (6, 5, 3)).astype(">u2")
    raw = b"".join(b"\0" + row.tobytes() for row in v)
    (tmp_path / "rgb16.png").write_bytes(_png([[b"IHDR", struct.pack(">IIBBBBB", 5, 6, 16, 2, 0, 0, 0)],
                                               [b"IDAT", zlib.compress(raw)], [b"IEND", b""]]))
    got = decode_image_file(tmp_path / "rgb16.png").permute(1, 2, 0).numpy().astype(int)
    assert np.abs(got - np.round(v.astype(int) * 255 / 65535)).max() <= 1


# ---------------------------------------------------------------- 2. CMYK JPEGs
def test_cmyk_jpeg_matches_pil_rgb_conversion(tmp_path):
    cmyk = np.zeros((16, 16, 4), np.uint8); cmyk[..., 3] = 128                 # K=128: RGB 127 after PIL's conversion
    cmyk[8:, :, 0] = 200; cmyk[:, 8:, 2] = 60
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "k.jpg", quality=95)
    (tmp_path / "rnd.jpg").write_bytes(_jpeg_bytes(_rgb(), "CMYK"))
    for name in ("k.jpg", "rnd.jpg"):
        with Image.open(tmp_path / name) as im:
            assert im.mode == "CMYK"
            ref = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
        x = decode_image_file(tmp_path / name)
        assert torch.equal(x, ref), (name, (x.int() - ref.int()).abs().max())  # exact: same libjpeg, PIL's conversion
        assert torch.equal(decode_image_file(tmp_path / name, channels=1), D.TF.rgb_to_grayscale(ref))
    assert abs(int(decode_image_file(tmp_path / "k.jpg")[:, 0, 0].float().mean()) - 127) <= 2


# ---------------------------------------------------------------- 3. the pixel limit
def test_max_pixels_small_limit(tmp_path):
    a = _rgb(20, 20)
    Image.fromarray(a).save(tmp_path / "x.png"); Image.fromarray(a).save(tmp_path / "x.jpg"); Image.fromarray(a).save(tmp_path / "x.bmp")
    for ext in ("png", "jpg", "bmp"):
        p = tmp_path / f"x.{ext}"
        with pytest.raises(ImageTooLargeError, match=rf"x\.{ext}: it is 20x20 = 400 pixels, above the limit max_pixels=100.*max_pixels=None") as e:
            decode_image_file(p, max_pixels=100)
        assert e.value.size == (20, 20) and e.value.limit == 100 and isinstance(e.value, CorruptImageError)
        assert decode_image_file(p, max_pixels=400).shape == decode_image_file(p, max_pixels=None).shape == (3, 20, 20)
    with pytest.raises(ValueError, match="max_pixels"): decode_image_file(tmp_path / "x.png", max_pixels=0)
    ds = ImageDataset([tmp_path / "x.png"], max_pixels=100)
    assert ds.max_pixels == 100 and ImageDataset([tmp_path / "x.png"]).max_pixels == MAX_IMAGE_PIXELS == 178_956_970
    with pytest.raises(ImageTooLargeError): cache(ds)
    assert D.subset(ImageDataset([tmp_path / "x.png"], max_pixels=None), [0]).max_pixels is None


def test_max_pixels_checked_before_any_decoder_runs(tmp_path, monkeypatch):
    _huge_gray_png(tmp_path / "huge.png", 20000, 10000)                        # 200 M pixels, ~0.2 MB on disk
    (tmp_path / "huge.jpg").write_bytes(_huge_header_jpeg())                   # claims 60000 x 60000 (10.8 GB as RGB)
    assert (tmp_path / "huge.png").stat().st_size < 1_000_000

    def boom(*a, **k): raise AssertionError("a decoder ran on an image above the limit")
    monkeypatch.setattr(D, "decode_image", boom); monkeypatch.setattr(Image.Image, "load", boom)
    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                         # no DecompressionBombWarning escapes
        with pytest.raises(ImageTooLargeError, match=r"huge\.png: it is 20000x10000 = 200,000,000 pixels.*178,956,970"):
            decode_image_file(tmp_path / "huge.png")
        with pytest.raises(ImageTooLargeError, match=r"huge\.jpg: it is 60000x60000"): decode_image_file(tmp_path / "huge.jpg")


def test_huge_png_refused_without_allocating(tmp_path):
    _huge_gray_png(tmp_path / "huge.png", 20000, 10000)
    r = _run("import re\nfrom reprlab.data import decode_image_file, ImageTooLargeError\n"
             "hwm = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
             f"before = hwm()\ntry: decode_image_file({str(tmp_path / 'huge.png')!r})\n"
             "except ImageTooLargeError: print('refused', hwm() - before)")
    assert r.returncode == 0 and r.stdout.startswith("refused"), (r.stdout, r.stderr[-2000:])
    assert int(r.stdout.split()[1]) < 20_000                                     # kB of peak memory added (200 MB if decoded)


def test_pil_bomb_check_replaced_by_ours(tmp_path, monkeypatch):
    "PIL's own check (warning above Image.MAX_IMAGE_PIXELS, error above twice that) never escapes: our limit decides."
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)                          # PIL: warn > 100, refuse > 200 pixels
    Image.fromarray(_rgb(12, 12)).save(tmp_path / "warn.bmp"); Image.fromarray(_rgb(20, 20)).save(tmp_path / "err.bmp")
    Image.fromarray(_rgb(20, 20)).save(tmp_path / "err.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_image_file(tmp_path / "warn.bmp").shape == (3, 12, 12)
        for name in ("err.bmp", "err.png"):
            assert decode_image_file(tmp_path / name, max_pixels=None).shape == (3, 20, 20)
            with pytest.raises(ImageTooLargeError, match=rf"{name}: it is 20x20 = 400 pixels, above the limit max_pixels=300"):
                decode_image_file(tmp_path / name, max_pixels=300)
    assert Image.MAX_IMAGE_PIXELS == 100                                         # restored after the unlimited read


# ---------------------------------------------------------------- 4. skip_corrupt: every kind of bad file, one warning
def _bad_folder(root: Path) -> list[str]:
    make_image_folder(root, classes=("a", "b"), n=3, ext="png", size=16)
    trunc = _jpeg_bytes(_rgb(64, 64))
    bad = {"a/trunc.jpg": trunc[: len(trunc) // 2], "a/tall.png": _bad_pngs()["taller_ihdr"],
           "b/huge.jpg": _huge_header_jpeg(), "b/empty.png": b"", "b/text.png": b"hello, not an image\n"}
    for rel, data in bad.items(): (root / rel).write_bytes(data)
    Image.fromarray(_rgb(16, 16)).convert("CMYK").save(root / "b" / "cmyk.jpg")  # fine: kept
    return sorted(str(root / r) for r in bad)


def _one_warning(fn):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn()
    assert len(w) == 1, [str(x.message) for x in w]
    msg = str(w[0].message)
    assert "\n" not in msg
    return out, msg


def test_skip_corrupt_every_kind_one_warning(tmp_path):
    root = tmp_path / "f"; bad = _bad_folder(root)
    with pytest.raises(CorruptImageError): cache(from_folder(root))
    ds, msg = _one_warning(lambda: cache(from_folder(root, skip_corrupt=True)))
    assert sorted(ds.skipped) == bad and len(ds) == 7 and ds.images.shape == (7, 3, 16, 16)
    assert msg.startswith("skipped 5 corrupt image(s) in f") and all(p in msg for p in bad)
    for why in ("truncated", "incomplete", "60000x60000", "empty", "not an image"): assert why in msg
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    i = next(k for k, p in enumerate(ds.paths) if p.endswith("cmyk.jpg"))
    assert torch.equal(ds[i]["image"], decode_image_file(root / "b" / "cmyk.jpg"))


def test_skip_corrupt_disk_cache_and_reuse_one_line(tmp_path):
    root = tmp_path / "f"; bad = _bad_folder(root)
    a, m1 = _one_warning(lambda: cache(from_folder(root, skip_corrupt=True), "disk", tmp_path / "c", num_workers=1))
    b, m2 = _one_warning(lambda: cache(from_folder(root, skip_corrupt=True), "disk", tmp_path / "c"))
    assert torch.equal(a.images, b.images) and a.paths == b.paths and sorted(b.skipped) == bad
    assert all(p in m2 for p in bad) and "recorded when the disk cache" in m2 and "60000x60000" in m2
    assert json.loads(next((tmp_path / "c" / "images").glob("*.json")).read_text())["skipped"] == a.skipped
    with pytest.raises(CorruptImageError):             # without skip_corrupt the cache is not reused to hide them
        cache(from_folder(root), "disk", tmp_path / "c")
    assert not list((tmp_path / "c" / "images").glob(".*.tmp"))         # and no half-written temp file is left


def test_load_dataset_passes_skip_corrupt_and_max_pixels(tmp_path, monkeypatch):
    for s in ("train", "val"): _bad_folder(tmp_path / "mine" / s)
    (tmp_path / "reg.json").write_text(json.dumps({"mine": {"root": "mine", "layout": "imagefolder"}}))
    monkeypatch.setenv("REPRLAB_DATASETS", str(tmp_path / "reg.json")); monkeypatch.setenv("REPRLAB_DATA_ROOT", str(tmp_path))
    d = load_dataset("mine", skip_corrupt=True, max_pixels=10**6)
    assert d["train"].skip_corrupt and d["val"].max_pixels == 10**6
    tr, msg = _one_warning(lambda: cache(d["train"]))
    assert len(tr) == 7 and len(tr.skipped) == 5


# ---------------------------------------------------------------- 5. a damaged disk cache is rebuilt, with one warning
@pytest.mark.parametrize("damage", ["truncated_npy", "broken_json", "wrong_shape", "empty_npy"])
def test_damaged_disk_cache_rebuilt(tmp_path, damage):
    root = make_image_folder(tmp_path / "f", classes=("a",), n=4, ext="png", size=16)
    ref = cache(from_folder(root)).images.clone()
    cache(from_folder(root), "disk", tmp_path / "c")
    npy = next((tmp_path / "c" / "images").glob("*.npy")); meta = npy.with_suffix(".json")
    new = tmp_path / "new"
    if damage == "truncated_npy": new.write_bytes(npy.read_bytes()[:-500])
    elif damage == "empty_npy": new.write_bytes(b"")
    elif damage == "wrong_shape": np.save(new.with_suffix(".npy"), np.zeros((3, 3, 16, 16), np.uint8)); new = new.with_suffix(".npy")
    if damage == "broken_json": meta.write_text('{"skipped": [')
    else: os.replace(new, npy)              # a new file: the maps other datasets hold of the old one stay valid
    ds, msg = _one_warning(lambda: cache(from_folder(root), "disk", tmp_path / "c"))
    assert str(npy) in msg and "rebuilding it" in msg
    assert torch.equal(ds.images, ref)
    assert torch.equal(cache(from_folder(root), "disk", tmp_path / "c").images, ref)   # the rebuilt file is reused, silently
