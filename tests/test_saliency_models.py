"The classic saliency models of reprlab.saliency_models on hand-checkable images, against OpenCV contrib and scikit-image where installed, and compute_maps' cache."
from __future__ import annotations

import functools
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

import reprlab.saliency_models as sm
from reprlab.saliency_models import (CLASSIC_MODELS, centre_bias, classic_model, classic_model_names, compute_maps,
                                     frequency_tuned, itti_koch, spectral_residual)

needs_cv2 = pytest.mark.skipif(not sm._has_cv2_saliency(), reason="cv2.saliency missing: pip install reprlab[saliency]")


def scene(seed=0, H=96, W=128):
    "A natural-looking image: 1/f colour noise (a textured background) with a few flat-coloured discs."
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(H)[:, None], np.fft.fftfreq(W)[None, :]
    amp = 1 / np.maximum(np.hypot(fy, fx), 1 / max(H, W))
    noise = np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((3, H, W)))).real
    noise = noise.mean(0, keepdims=True) * 0.7 + noise * 0.3
    img = ((noise - noise.min()) / np.ptp(noise) * 160 + 40).transpose(1, 2, 0)
    yy, xx = np.mgrid[:H, :W]
    for _ in range(rng.integers(2, 5)):
        r, c, rad = rng.integers(10, H - 10), rng.integers(10, W - 10), rng.integers(4, 12)
        img[(yy - r) ** 2 + (xx - c) ** 2 <= rad ** 2] = rng.integers(0, 256, 3)
    return img.clip(0, 255).astype(np.uint8)


def disc(img, r, c, rad, colour):
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
    img[(yy - r) ** 2 + (xx - c) ** 2 <= rad ** 2] = colour
    return img


def peak(m):
    return np.unravel_index(int(np.argmax(m)), m.shape)


def dist(a, b):
    return float(np.hypot(a[0] - b[0], a[1] - b[1]))


def odd_one_out(odd, other, ground=128):
    "A 3x4 grid of discs on a grey ground, all `other` but the one at (48, 80), `odd`."
    img = np.full((96, 128, 3), ground, np.uint8)
    for i in range(3):
        for j in range(4): disc(img, 16 + 32 * i, 16 + 32 * j, 7, odd if (i, j) == (1, 2) else other)
    return img


# ---------------------------------------------------------------- every model: the map contract and bad input

@pytest.mark.parametrize("name", classic_model_names())
def test_map_contract(name):
    img = scene(3, 75, 101)                                             # odd sizes
    m = classic_model(name)(img)
    assert m.dtype == np.float32 and m.shape == (75, 101)
    assert np.isfinite(m).all() and m.min() >= 0 and m.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(classic_model(name)(torch.from_numpy(img).permute(2, 0, 1)), m)   # CHW tensor == HWC array
    tiny = classic_model(name)(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert tiny.shape == (8, 8) and np.isfinite(tiny).all()


@pytest.mark.parametrize("name", ["spectral_residual", "frequency_tuned", "itti_koch"])
def test_flat_image_gives_zeros(name):
    for value in (0, 77, 255):
        m = classic_model(name)(np.full((48, 64, 3), value, np.uint8))
        np.testing.assert_array_equal(m, np.zeros((48, 64), np.float32))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 32, 32), np.uint8), r"image: array of shape \(3, 32, 32\), expected an RGB image \(H, W, 3\)"),
    (torch.zeros(32, 32, 3, dtype=torch.uint8), r"image: tensor of shape \(32, 32, 3\), expected an RGB image \(3, H, W\)"),
    (np.zeros((32, 32, 3), np.float32), r"image: dtype float32, expected uint8"),
    (torch.zeros(3, 32, 32), r"image: dtype torch.float32, expected torch.uint8"),
    (np.zeros((4, 32, 3), np.uint8), r"image: 4x32 pixels, expected at least 8"),
    ([[0, 1, 2]], r"image: list, expected a uint8 tensor"),
])
def test_bad_images(bad, match):
    for fn in (spectral_residual, frequency_tuned, itti_koch):
        with pytest.raises(ValueError, match=match): fn(bad)


def test_bad_parameters():
    img = scene(0)
    with pytest.raises(ValueError, match=r"width: 4, expected an integer >= 8"): spectral_residual(img, width=4)
    with pytest.raises(ValueError, match=r"sigma: -1, expected a number >= 0"): spectral_residual(img, sigma=-1)
    with pytest.raises(ValueError, match=r"sigma: nan"): frequency_tuned(img, sigma=float("nan"))
    with pytest.raises(ValueError, match=r"centres: empty"): itti_koch(img, centres=())
    with pytest.raises(ValueError, match=r"deltas: 0, expected an integer >= 1"): itti_koch(img, deltas=(0, 3))
    with pytest.raises(ValueError, match=r"side: 16, expected an integer >= 32"): itti_koch(img, side=16)
    with pytest.raises(ValueError, match=r"sigma: 0, expected a number > 0"): centre_bias((10, 10), sigma=0)
    with pytest.raises(ValueError, match=r"shape: \(10, 0\), expected \(H, W\)"): centre_bias((10, 0))


# ---------------------------------------------------------------- spectral residual

def test_spectral_residual_blob_on_uniform_and_periodic_ground():
    ground = np.full((96, 128, 3), 60, np.uint8)
    assert dist(peak(spectral_residual(disc(ground.copy(), 30, 90, 5, 230))), (30, 90)) <= 3
    stripes = ground.copy(); stripes[:, np.arange(128) // 4 % 2 == 0] = 140          # period 8 px
    assert dist(peak(spectral_residual(disc(stripes.copy(), 60, 40, 5, 250))), (60, 40)) <= 4
    checks = ground.copy(); checks[(np.add.outer(np.arange(96) // 6, np.arange(128) // 6) % 2) == 1] = 120
    assert dist(peak(spectral_residual(disc(checks, 70, 100, 5, 250))), (70, 100)) <= 4   # a checkerboard ground


def test_spectral_residual_follows_the_paper_listing():
    "An image already 64 px wide is not resized: the map is the MATLAB listing's, step by step (3x3 average wrapped)."
    img = scene(5, 48, 64)
    g = img.astype(np.float64) @ np.array([0.2989, 0.5870, 0.1140]) / 255
    f = np.fft.fft2(g)
    log_amp = np.log(np.abs(f))
    residual = log_amp - ndimage.uniform_filter(log_amp, 3, mode="wrap")
    s = ndimage.gaussian_filter(np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(f)))) ** 2, 2.5, mode="reflect")
    ref = (s - s.min()) / (s.max() - s.min())
    np.testing.assert_allclose(spectral_residual(img), ref, atol=2e-5)


@needs_cv2
def test_spectral_residual_matches_opencv():
    "In OpenCV's configuration (64x64, a ~5 px blur) ours correlates with cv2.saliency's; with the paper's, less so."
    imgs = [scene(s) for s in range(6)]
    ref = [sm.spectral_residual_cv2(a) for a in imgs]
    r_cv2 = [np.corrcoef(spectral_residual(a, height=64, sigma=1.5).ravel(), b.ravel())[0, 1] for a, b in zip(imgs, ref)]
    r_paper = [np.corrcoef(spectral_residual(a).ravel(), b.ravel())[0, 1] for a, b in zip(imgs, ref)]
    assert min(r_cv2) > 0.8, r_cv2
    assert np.mean(r_paper) > 0.6, r_paper                               # the aspect-keeping resize moves the fine detail


# ---------------------------------------------------------------- OpenCV's fine-grained

@needs_cv2
def test_fine_grained_bright_box():
    img = np.full((96, 128, 3), 30, np.uint8); img[30:50, 60:90] = 220
    m = sm.fine_grained(img)
    assert m.dtype == np.float32 and m.shape == (96, 128) and m.max() == 1
    r, c = peak(m)
    assert 26 <= r < 54 and 56 <= c < 94                                 # on the box or its rim
    assert m[30:50, 60:90].mean() > 2.5 * m.mean()


def test_without_opencv_the_registry_drops_its_models(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)                        # `import cv2` now raises ImportError
    assert not sm._has_cv2_saliency()
    monkeypatch.setattr(sm, "CLASSIC_MODELS", sm._registry(sm._has_cv2_saliency()))   # what the import builds then
    assert sm.classic_model_names() == ["spectral_residual", "frequency_tuned", "itti_koch", "centre_bias"]
    assert sm.classic_model_names(available_only=False) == [*sm.classic_model_names(), "fine_grained", "spectral_residual_cv2"]
    for call in (lambda: sm.classic_model("fine_grained"), lambda: sm.fine_grained(scene(0)),
                 lambda: sm.compute_maps("spectral_residual_cv2", [scene(0)], progress=False)):
        with pytest.raises(ImportError, match=r"pip install reprlab\[saliency\]"): call()
    plain = type(sys)("cv2"); plain.__version__ = "4.9.0"                 # a cv2 without the contrib modules
    monkeypatch.setitem(sys.modules, "cv2", plain)
    with pytest.raises(ImportError, match=r"reprlab\[saliency\].*cv2 4.9.0 has no contrib modules"): sm.fine_grained(scene(0))


# ---------------------------------------------------------------- frequency-tuned

def test_lab_fallback_matches_skimage():
    rgb2lab = pytest.importorskip("skimage.color", reason="scikit-image not installed").rgb2lab
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rgb[0, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [1, 1, 1], [10, 10, 10], [128, 128, 128]]
    np.testing.assert_allclose(sm._rgb2lab_np(rgb), rgb2lab(rgb / 255), atol=1e-3)


def test_frequency_tuned_against_the_formula_and_by_hand(monkeypatch):
    img = scene(2)
    lab = sm._rgb2lab_np(img)
    ref = np.linalg.norm(ndimage.gaussian_filter(lab, (1, 1, 0)) - lab.mean((0, 1)), axis=-1)
    np.testing.assert_allclose(frequency_tuned(img), ref / ref.max(), atol=1e-4)
    red = np.full((96, 128, 3), 128, np.uint8); red[20:40, 70:100] = (220, 20, 20)
    m = frequency_tuned(red)
    f = 600 / (96 * 128)                                                 # the square's share of the pixels
    np.testing.assert_allclose(m[25:35, 75:95], 1.0, atol=1e-5)          # (1 - f) D from the mean colour
    np.testing.assert_allclose(m[60:, :50], f / (1 - f), atol=1e-5)     # f D
    r, c = peak(m); assert 20 <= r < 40 and 70 <= c < 100
    monkeypatch.setitem(sys.modules, "skimage.color", None)              # the fallback gives the same map
    np.testing.assert_allclose(frequency_tuned(red), m, atol=1e-4)


# ---------------------------------------------------------------- Itti-Koch

def test_itti_normalisation_operator():
    one = np.zeros((9, 9)); one[4, 4] = 3.0
    np.testing.assert_allclose(sm._itti_normalise(one + 1), one / 3)     # min-max, a single peak kept at weight 1
    two = np.zeros((9, 9)); two[2, 2] = two[6, 6] = 1.0
    np.testing.assert_array_equal(sm._itti_normalise(two), 0)            # two equal peaks: weight (1 - 1)^2
    three = two.copy(); three[6, 6] = 0.5; three[4, 8] = 0.05             # 0.05 < the 0.1 floor: not a local maximum
    np.testing.assert_allclose(sm._itti_normalise(three), three * 0.25)


def test_pyramid_keeps_nine_levels_on_small_images():
    x = np.random.default_rng(0).random((2, 96, 128))
    levels = sm._pyramid(x, 8)
    assert [lv.shape[-2:] for lv in levels] == [(96, 128), (48, 64), (24, 32), (12, 16), (6, 8), (6, 8), (6, 8), (6, 8), (6, 8)]
    np.testing.assert_allclose([lv.mean() for lv in levels], x.mean(), atol=0.02)   # blurs preserve the mean
    assert all(a.std() > b.std() for a, b in zip(levels[4:], levels[5:]))          # and keep smoothing past the cap


@pytest.mark.parametrize("odd, other", [((220, 30, 30), (30, 200, 30)), ((30, 200, 30), (220, 30, 30)),
                                        ((40, 40, 230), (230, 230, 40))])
def test_itti_koch_odd_colour_pops_out(odd, other):
    m = itti_koch(odd_one_out(odd, other))
    assert dist(peak(m), (48, 80)) <= 10
    others = [m[16 + 32 * i, 16 + 32 * j] for i in range(3) for j in range(4) if (i, j) != (1, 2)]
    assert m[48, 80] > 2 * max(others)


def test_itti_koch_bright_blob_and_size_independence():
    img = disc(np.full((96, 128, 3), 40, np.uint8), 70, 30, 6, 230)
    m = itti_koch(img)
    assert dist(peak(m), (70, 30)) <= 8
    big = np.asarray(torch.nn.functional.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None].float(), scale_factor=2.5,
                                                     mode="nearest")[0].permute(1, 2, 0).byte())
    m_big = itti_koch(big)                                               # the same scene at 240x320: the same map, scaled
    assert dist(np.array(peak(m_big)) / 2.5, (70, 30)) <= 8
    small = sm._resize(m_big, (96, 128))
    assert np.corrcoef(small.ravel(), m.ravel())[0, 1] > 0.9


# ---------------------------------------------------------------- centre bias

def test_centre_bias_by_hand():
    m = centre_bias((41, 61), sigma=10 / 41)                             # 10 px down the rows, 61 * 10 / 41 across
    assert m.dtype == np.float32 and m[20, 30] == 1 and peak(m) == (20, 30)
    np.testing.assert_array_equal(m, m[::-1]); np.testing.assert_array_equal(m, m[:, ::-1])
    rr, cc = np.mgrid[:41, :61]
    ref = np.exp(-0.5 * ((rr - 20) / 10) ** 2 - 0.5 * ((cc - 30) / (61 * 10 / 41)) ** 2)
    np.testing.assert_allclose(m, ref, rtol=1e-5, atol=1e-7)
    even = centre_bias((40, 64))                                          # even sides: the four centre pixels share the peak
    np.testing.assert_array_equal(even, even[::-1, ::-1])
    assert even[19, 31] == even[20, 32] == 1
    iso = centre_bias((41, 91), 0.2, isotropic=True)
    sigma = 0.2 * np.sqrt(41 * 91)
    np.testing.assert_allclose(iso[20, 45 + 12], np.exp(-0.5 * (12 / sigma) ** 2), rtol=1e-6)
    assert iso[20, 45 + 12] == pytest.approx(iso[20 + 12, 45], abs=1e-7)
    np.testing.assert_array_equal(centre_bias(torch.zeros(3, 41, 61, dtype=torch.uint8), 10 / 41), m)


# ---------------------------------------------------------------- registry and compute_maps

def test_registry():
    names = classic_model_names()
    assert names[:4] == ["spectral_residual", "frequency_tuned", "itti_koch", "centre_bias"]
    assert ("fine_grained" in names) == ("spectral_residual_cv2" in names) == sm._has_cv2_saliency()
    assert all(CLASSIC_MODELS[n] is classic_model(n) for n in names) and list(CLASSIC_MODELS) == names
    with pytest.raises(ValueError, match=r"name: unknown classic saliency model 'itti', expected one of \['spectral_residual'"):
        classic_model("itti")
    with pytest.raises(ValueError, match="unknown classic saliency model"): compute_maps("nope", [scene(0)], progress=False)


@pytest.fixture
def counted(monkeypatch):
    "frequency_tuned in the registry, counting its calls."
    calls = []
    @functools.wraps(frequency_tuned)
    def wrapper(image, **kw):
        calls.append(kw); return frequency_tuned(image, **kw)
    monkeypatch.setitem(sm.CLASSIC_MODELS, "frequency_tuned", wrapper)
    return calls


def test_compute_maps_cache(tmp_path, counted):
    imgs = torch.from_numpy(np.stack([scene(s) for s in range(4)])).permute(0, 3, 1, 2).contiguous()
    maps = compute_maps("frequency_tuned", imgs, cache_dir=tmp_path, progress=False)
    assert maps.dtype == np.float32 and maps.shape == (4, 96, 128) and len(counted) == 4
    assert counted[0] == {"sigma": 1.0}                                  # defaults resolved, so they are in the key
    for i in range(4): np.testing.assert_array_equal(maps[i], frequency_tuned(imgs[i]))
    files = sorted(tmp_path.iterdir())
    assert [f.name.split("-")[0] for f in files] == ["frequency_tuned"] and files[0].suffix == ".npy"
    again = compute_maps("frequency_tuned", list(imgs.permute(0, 2, 3, 1).numpy()), cache_dir=tmp_path, progress=False)
    assert len(counted) == 4                                             # read back (HWC arrays hash like the CHW tensor)
    np.testing.assert_array_equal(again, maps)
    compute_maps("frequency_tuned", imgs, cache_dir=tmp_path, progress=False, sigma=1.0)
    assert len(counted) == 4                                             # the default given explicitly: the same key
    changed = imgs.clone(); changed[2, 0, 5, 5] ^= 1                     # one pixel, one bit
    compute_maps("frequency_tuned", changed, cache_dir=tmp_path, progress=False)
    assert len(counted) == 8
    compute_maps("frequency_tuned", imgs, cache_dir=tmp_path, progress=False, sigma=2.0)
    assert len(counted) == 12 and counted[-1] == {"sigma": 2.0}
    compute_maps("frequency_tuned", imgs, size=(48, 64), cache_dir=tmp_path, progress=False)
    assert len(counted) == 16
    assert len(list(tmp_path.glob("*.npy"))) == 4 and not [p for p in tmp_path.iterdir() if p.suffix != ".npy"]   # no temp files left


def test_compute_maps_recovers_from_a_bad_cache_file(tmp_path, counted):
    imgs = [scene(0), scene(1)]
    maps = compute_maps("frequency_tuned", imgs, cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.glob("*.npy")
    path.write_bytes(path.read_bytes()[:100])                             # truncated
    with pytest.warns(UserWarning, match="unreadable cache file"):
        np.testing.assert_array_equal(compute_maps("frequency_tuned", imgs, cache_dir=tmp_path, progress=False), maps)
    np.save(path, np.zeros((3, 5), np.float32))                           # another shape
    with pytest.warns(UserWarning, match=r"expected float32 \(2, 96, 128\)"):
        compute_maps("frequency_tuned", imgs, cache_dir=tmp_path, progress=False)
    assert len(counted) == 6
    np.testing.assert_array_equal(np.load(path), maps)                    # rewritten


def test_compute_maps_sizes_and_bad_input(capsys):
    imgs = [scene(0), scene(1, 120, 90)]
    maps = compute_maps("spectral_residual", imgs, size=(48, 64), progress=False)
    assert maps.shape == (2, 48, 64) and np.allclose(maps.max((1, 2)), 1)
    ref = sm._unit(sm._resize(spectral_residual(imgs[1]), (48, 64)))
    np.testing.assert_array_equal(maps[1], ref)                          # each image at its own size, then resized
    with pytest.raises(ValueError, match=r"images: 2 different sizes .* pass size=\(H, W\)"):
        compute_maps("spectral_residual", imgs, progress=False)
    with pytest.raises(ValueError, match=r"size: \(48,\), expected None or \(H, W\)"):
        compute_maps("spectral_residual", imgs, size=(48,), progress=False)
    with pytest.raises(ValueError, match="images: empty"): compute_maps("spectral_residual", [], progress=False)
    with pytest.raises(ValueError, match=r"images: tensor of shape \(3, 96, 128\), expected a uint8 batch"):
        compute_maps("spectral_residual", torch.zeros(3, 96, 128, dtype=torch.uint8), progress=False)
    with pytest.raises(ValueError, match=r"images\[1\]: dtype float64"):
        compute_maps("spectral_residual", [scene(0), scene(0) / 1.0], progress=False)
    with pytest.raises(ValueError, match=r"params: \{'sigmaa': 2\} do not fit spectral_residual"):
        compute_maps("spectral_residual", imgs, size=(48, 64), progress=False, sigmaa=2)
    capsys.readouterr()
    compute_maps("centre_bias", imgs, size=(48, 64), progress=False)
    assert capsys.readouterr().err == ""                                 # progress=False: no bar
