"""reprlab.corruptions against its definitions: the constants of make_cifar_c.py (typed in a second time here), noise
statistics per severity, kernels, the original's operations re-done with SciPy / Pillow / colorsys on the same random
numbers, determinism (seed, batch, chunking) and the errors. imagecorruptions is compared in bench/corruptions_speed.py
only (it is not installed in CI)."""
from __future__ import annotations

import colorsys
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import stats
from scipy.ndimage import correlate, gaussian_filter, map_coordinates
from scipy.ndimage import zoom as scizoom

import reprlab.corruptions as C
from reprlab.corruptions import (CIFAR10C_CONSTANTS, CORRUPTIONS, SEVERITIES, Draws, corrupt, corrupted_batches,
                                 corrupted_dataset, defocus_kernel, evaluate_robustness, load_cifar10c, motion_blur_kernel,
                                 robustness_markdown, save_corruption_examples, save_robustness_heatmap)
from reprlab.testing import shared_data

# hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py (commit ca36008), the `c = [...]` of each function
SOURCE = {
    "gaussian_noise": [0.04, 0.06, .08, .09, .10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [.01, .02, .03, .05, .07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.01),
                  np.arange(1, 1.26, 0.01)],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "fog": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [.05, .1, .15, .2, .3],
    "contrast": [.75, .5, .4, .3, 0.15],
    "elastic_transform": [(32 * 0, 32 * 0, 32 * 0.08), (32 * 0.05, 32 * 0.2, 32 * 0.07), (32 * 0.08, 32 * 0.06, 32 * 0.06),
                          (32 * 0.1, 32 * 0.04, 32 * 0.05), (32 * 0.1, 32 * 0.03, 32 * 0.03)],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}
RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost", "fog", "elastic_transform")


@pytest.fixture(scope="module")
def imgs() -> torch.Tensor:
    "64 CIFAR-10 test images (the shared data folder) or smooth random ones: uint8 (64, 3, 32, 32)."
    p = shared_data("cifar10-test.npz")
    if p is not None: return torch.from_numpy(np.load(p)["images"][:64]).permute(0, 3, 1, 2).contiguous()
    g = torch.Generator().manual_seed(0)
    return (F.interpolate(torch.rand(64, 3, 8, 8, generator=g), size=32, mode="bilinear") * 255).to(torch.uint8)


def f01(x: torch.Tensor) -> torch.Tensor:
    return x.double() / 255


# ------------------------------------------------------------------------------------------------------ constants
def test_constants_are_the_cifar_file():
    assert tuple(CIFAR10C_CONSTANTS) == CORRUPTIONS == tuple(SOURCE)
    for name, ours in CIFAR10C_CONSTANTS.items():
        src = SOURCE[name]
        if name == "zoom_blur": assert [list(z) for z in ours] == [z.tolist() for z in src]
        elif name == "elastic_transform": np.testing.assert_allclose(np.array(ours) * 32, np.array(src), rtol=0, atol=1e-12)
        else: assert list(ours) == src, name
    assert [len(z) for z in CIFAR10C_CONSTANTS["zoom_blur"]] == [7, 12, 16, 21, 26]     # arange includes 1.06 and 1.11


# ------------------------------------------------------------------------------------------------------ noise
@pytest.mark.parametrize("s", SEVERITIES)
def test_gaussian_noise_std(s):
    c = SOURCE["gaussian_noise"][s - 1]
    d = C.gaussian_noise(torch.full((512, 3, 32, 32), 0.5), s) - 0.5
    assert abs(d.std().item() - c) < 0.01 * c and abs(d.mean().item()) < 1e-3


@pytest.mark.parametrize("s", SEVERITIES)
def test_shot_noise_is_poisson(s):
    c, level = SOURCE["shot_noise"][s - 1], 77
    y = C.shot_noise(torch.full((256, 3, 32, 32), level / 255), s, torch.Generator().manual_seed(s))
    k = (y.double() * c).round().long().flatten()                              # the Poisson counts
    lam = level / 255 * c
    assert abs(k.double().mean().item() - lam) < 4 * math.sqrt(lam / k.numel())
    assert abs(y.double().var().item() - (level / 255) / c) < 0.02 * (level / 255) / c   # Var[Poisson(x c) / c] = x / c
    emp = torch.bincount(k, minlength=int(lam + 10 * math.sqrt(lam))).double() / k.numel()
    pmf = stats.poisson.pmf(np.arange(len(emp)), lam)
    assert np.abs(emp.numpy() - pmf).max() < 5 * math.sqrt(pmf.max() / k.numel())


def test_shot_noise_extreme_levels():
    assert C.shot_noise(torch.zeros(4, 3, 8, 8), 1).sum() == 0                  # rate 0 stays 0
    y = C.shot_noise(torch.ones(64, 3, 32, 32), 5)                              # Poisson(50) / 50, clipped at 1
    assert abs((y < 1).double().mean().item() - stats.poisson.cdf(49, 50)) < 0.01


@pytest.mark.parametrize("s", SEVERITIES)
def test_impulse_fraction(s):
    y = C.impulse_noise(torch.full((256, 3, 32, 32), 0.5), s)
    changed = y != 0.5
    assert abs(changed.double().mean().item() - SOURCE["impulse_noise"][s - 1]) < 0.002
    assert abs((y[changed] == 1).double().mean().item() - 0.5) < 0.03         # salt vs pepper 50 / 50
    assert set(y.unique().tolist()) <= {0.0, 0.5, 1.0}


# ------------------------------------------------------------------------------------------------------ blur
@pytest.mark.parametrize("s", SEVERITIES)
def test_defocus_against_scipy(s, imgs):
    r, a = SOURCE["defocus_blur"][s - 1]
    k = defocus_kernel(r, a).double()
    L = np.arange(-8, 9); X, Y = np.meshgrid(L, L)
    disk = ((X ** 2 + Y ** 2) <= r ** 2).astype(np.float64); disk /= disk.sum()
    g = np.exp(-(np.arange(3) - 1) ** 2 / (2 * a * a)); g /= g.sum()
    ref_k = correlate(disk, np.outer(g, g), mode="mirror")                       # cv2.GaussianBlur 3x3, reflect-101
    np.testing.assert_allclose(k.numpy(), ref_k, atol=1e-7)
    assert abs(k.sum().item() - 1) < 1e-6 and torch.allclose(k, k.T) and torch.allclose(k, k.flip(0))
    x = f01(imgs[:8])
    ref = np.stack([[correlate(p, ref_k, mode="mirror") for p in im] for im in x.numpy()])   # cv2.filter2D, reflect-101
    np.testing.assert_allclose(C.defocus_blur(x, s).numpy(), np.clip(ref, 0, 1), atol=1e-6)


def _glass_reference(x_uint8_hwc: np.ndarray, d: np.ndarray, iterations: int) -> np.ndarray:
    "make_cifar_c.py's swap loop, numpy views and all, with the given (dx, dy) draws `(it, 30, 30, 2)`."
    x = x_uint8_hwc.copy()
    for i in range(iterations):
        for hi, h in enumerate(range(31, 1, -1)):
            for wi, w in enumerate(range(31, 1, -1)):
                dx, dy = d[i, hi, wi]
                hp, wp = h + dy, w + dx
                x[h, w], x[hp, wp] = x[hp, wp], x[h, w]
    return x


@pytest.mark.parametrize("s", [1, 3, 5])
def test_glass_blur_against_the_original_loop(s, imgs):
    sigma, delta, it = SOURCE["glass_blur"][s - 1]
    x = f01(imgs[:3])
    y = C.glass_blur(x, s, torch.Generator().manual_seed(s))
    d = Draws.from_generator(torch.Generator().manual_seed(s), 3).integers(-1, 1, it, 30, 30, 2).numpy()
    blur = lambda a: np.stack([gaussian_filter(a[..., c], sigma, mode="nearest", truncate=4) for c in range(3)], -1)
    for i in range(3):
        u8 = np.uint8(blur(x[i].permute(1, 2, 0).numpy()) * 255)
        ref = np.clip(blur(_glass_reference(u8, d[i], it) / 255.0), 0, 1)
        np.testing.assert_allclose(y[i].permute(1, 2, 0).numpy(), ref, atol=1e-7)


def test_motion_kernel_one_sided_along_the_angle():
    for radius, sigma in SOURCE["motion_blur"]:
        for ang in (-45.0, -10.0, 0.0, 33.0, 45.0):
            k = motion_blur_kernel(radius, sigma, ang)
            width = 2 * math.ceil(radius) + 1
            assert k.shape == (2 * width - 1,) * 2 and abs(k.sum().item() - 1) < 1e-12
            yx = (torch.nonzero(k) - (width - 1)).double()
            dirv = torch.tensor([math.sin(math.radians(ang)), math.cos(math.radians(ang))], dtype=torch.float64)
            along = yx @ dirv
            assert (along >= -1e-9).all()                                           # every tap ahead of the centre
            assert ((yx - along[:, None] * dirv).norm(dim=1) <= 0.75).all()         # ... and on the line
            c = width - 1
            w = torch.exp(-torch.arange(width, dtype=torch.float64) ** 2 / (2 * sigma ** 2)); w /= w.sum()
            assert abs(k[c, c].item() - w[0].item()) < 1e-12                        # the pixel itself has the largest weight
    k = motion_blur_kernel(6, 1, 0)
    assert torch.nonzero(k).tolist() == [[12, 12 + i] for i in range(13)]


def test_motion_blur_is_the_kernel_with_edges_repeated(imgs):
    x = f01(imgs[:4]) * 255
    ang = torch.tensor([-40.0, -5.0, 20.0, 44.0])
    out = C._motion(x, 8, 2, ang)
    for i, a in enumerate(ang.tolist()):
        k = motion_blur_kernel(8, 2, a)
        r = k.shape[0] // 2
        ref = F.conv2d(F.pad(x[i:i + 1].transpose(0, 1), (r,) * 4, mode="replicate"), k[None, None]).transpose(0, 1)
        torch.testing.assert_close(out[i:i + 1], ref, atol=1e-9, rtol=0)
    y = C.motion_blur(f01(imgs[:4]), 5)
    assert torch.equal(y * 255, (y * 255).round())                               # rounded to 8 bits, as the PNG


def _clipped_zoom(a: np.ndarray, z: float) -> np.ndarray:
    "make_cifar_c.py's clipped_zoom on one (H, W) plane."
    h = a.shape[0]; ch = int(np.ceil(h / z)); top = (h - ch) // 2
    a = scizoom(a[top:top + ch, top:top + ch], z, order=1)
    t = (a.shape[0] - h) // 2
    return a[t:t + h, t:t + h]


@pytest.mark.parametrize("s", SEVERITIES)
def test_zoom_blur_against_scipy(s, imgs):
    x = f01(imgs[:4]).float()
    zs = SOURCE["zoom_blur"][s - 1]
    ref = np.stack([[np.clip((p + sum(_clipped_zoom(p, z) for z in zs)) / (len(zs) + 1), 0, 1) for p in im] for im in x.numpy()])
    np.testing.assert_allclose(C.zoom_blur(x, s).numpy(), ref, atol=2e-6)


def test_zoom_blur_large_images_use_the_per_axis_path():
    x = torch.rand(2, 3, 72, 72, dtype=torch.float64)
    zs = SOURCE["zoom_blur"][1]
    ref = np.stack([[np.clip((p + sum(_clipped_zoom(p, z) for z in zs)) / (len(zs) + 1), 0, 1) for p in im] for im in x.numpy()])
    np.testing.assert_allclose(C.zoom_blur(x, 2).numpy(), ref, atol=1e-9)


# ------------------------------------------------------------------------------------------------------ weather
@pytest.mark.parametrize("s", SEVERITIES)
def test_snow_against_its_definition(s, imgs):
    loc, scale, z, thr, radius, sigma, blend = SOURCE["snow"][s - 1]
    x = f01(imgs[:4]).float()
    y = C.snow(x, s, torch.Generator().manual_seed(s))
    r = Draws.from_generator(torch.Generator().manual_seed(s), 4)
    noise, ang = r.normal(32, 32, mean=loc, std=scale).numpy(), r.uniform(low=-135.0, high=-45.0)
    for i in range(4):
        layer = _clipped_zoom(noise[i].astype(np.float64), z); layer[layer < thr] = 0
        layer = torch.from_numpy(np.uint8(np.clip(layer, 0, 1) * 255).astype(np.float64))
        k = motion_blur_kernel(radius, sigma, float(ang[i]))
        p = k.shape[0] // 2
        layer = F.conv2d(F.pad(layer[None, None], (p,) * 4, mode="replicate"), k[None, None])[0, 0]
        layer = torch.floor(layer + 0.5) / 255
        im = x[i].double()
        gray = 0.299 * im[0] + 0.587 * im[1] + 0.114 * im[2]
        im = blend * im + (1 - blend) * torch.maximum(im, gray * 1.5 + 0.5)
        torch.testing.assert_close(y[i].double(), (im + layer + layer.flip(0, 1)).clamp(0, 1), atol=2e-5, rtol=0)


def test_frost_photographs_and_formula(tmp_path, imgs):
    colors = [(10, 20, 30), (200, 210, 220), (90, 90, 90), (0, 255, 128), (60, 120, 180)]
    for f, col in zip(C.FROST_FILES, colors):                                   # constant stand-ins: any crop is the colour
        Image.new("RGB", (200, 180), col).save(tmp_path / f, quality=100)
    x = imgs[:32]
    y = corrupt(x, "frost", 4, frost_dir=tmp_path)
    r = Draws.for_images(0, (CORRUPTIONS.index("frost"), 4), 0, 32)
    idx = r.integers(0, 5)
    c0, c1 = SOURCE["frost"][3]
    got = torch.stack([torch.tensor(np.array(Image.open(tmp_path / C.FROST_FILES[i]).convert("RGB"))[0, 0], dtype=torch.float64) for i in idx])
    ref = torch.floor((c0 * x.double() + c1 * got[:, :, None, None]).clamp(0, 255))
    assert (y.double() - ref).abs().max() <= 1                                   # one level: float32 here, float64 there
    (tmp_path / "frost4.jpg").unlink()
    with pytest.raises(ValueError, match="has no frost4.jpg"):
        corrupt(x, "frost", 1, frost_dir=str(tmp_path) + "/")


def test_procedural_frost_is_fixed_and_calibrated():
    for i, ((h, w), mean, std) in enumerate(C._FROST_STATS):
        t = C.procedural_frost(i, h, w)
        assert torch.allclose(t.mean((1, 2)), torch.tensor(mean), atol=1.0)
        assert t.min() >= 0 and t.max() <= 255
    t = C.procedural_frost(2, 63, 112).clone()
    C.procedural_frost.cache_clear()
    assert torch.equal(C.procedural_frost(2, 63, 112), t)                        # fixed: not drawn from the user's seed


@pytest.mark.parametrize("s", SEVERITIES)
def test_fog_formula(s, imgs):
    c, decay = SOURCE["fog"][s - 1]
    x = f01(imgs[:8])
    p = C.plasma_fractal(8, 32, decay, torch.Generator().manual_seed(s))[:, None]
    mx = x.amax((1, 2, 3), keepdim=True)
    torch.testing.assert_close(C.fog(x, s, torch.Generator().manual_seed(s)), ((x + c * p) * mx / (mx + c)).clamp(0, 1))
    assert torch.equal(p.amin((2, 3)), torch.zeros(8, 1, dtype=torch.float64))
    assert torch.equal(p.amax((2, 3)), torch.ones(8, 1, dtype=torch.float64))


def test_plasma_diamond_square_by_hand():
    "A 2 x 2 map: corner 0; square step: centre = mean of the 4 (wrapped) corners + noise; diamond steps: mean of 4 + noise."
    r = Draws.from_generator(torch.Generator().manual_seed(0), 1)
    n0, n1, n2 = (100 * r.uniform(1, 1, low=-100.0, high=100.0, dtype=torch.float64).item() for _ in range(3))
    m = np.zeros((2, 2))
    m[1, 1] = 0 / 4 + n0
    m[0, 1] = (2 * m[1, 1] + 2 * m[0, 0]) / 4 + n1
    m[1, 0] = (2 * m[1, 1] + 2 * m[0, 0]) / 4 + n2
    m = (m - m.min()) / (m - m.min()).max()
    np.testing.assert_allclose(C.plasma_fractal(1, 2, 3.0, torch.Generator().manual_seed(0))[0].numpy(), m, atol=1e-12)


# ------------------------------------------------------------------------------------------------------ digital
@pytest.mark.parametrize("s", SEVERITIES)
def test_brightness_is_hsv_value_shift(s, imgs):
    c = SOURCE["brightness"][s - 1]
    x = f01(imgs[:2, :, :8, :8])
    ref = np.array([[[colorsys.hsv_to_rgb(*(lambda h, sv, v: (h, sv, min(v + c, 1.0)))(*colorsys.rgb_to_hsv(*x[n, :, i, j].tolist())))
                      for j in range(8)] for i in range(8)] for n in range(2)])
    np.testing.assert_allclose(C.brightness(x, s).permute(0, 2, 3, 1).numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("s", SEVERITIES)
def test_contrast_formula(s, imgs):
    x = f01(imgs[:4])
    m = x.mean((2, 3), keepdim=True)                                             # per image and channel
    torch.testing.assert_close(C.contrast(x, s), ((x - m) * SOURCE["contrast"][s - 1] + m).clamp(0, 1))


@pytest.mark.parametrize("s", SEVERITIES)
def test_elastic_against_scipy(s, imgs):
    x = f01(imgs[:3])
    y = C.elastic_transform(x, s, torch.Generator().manual_seed(s))
    r = Draws.from_generator(torch.Generator().manual_seed(s), 3)
    alpha, sigma, jit = SOURCE["elastic_transform"][s - 1]
    J = r.uniform(3, 2, low=-jit, high=jit, dtype=torch.float64).numpy()
    U = [r.uniform(32, 32, low=-1.0, high=1.0, dtype=torch.float64).numpy() for _ in range(2)]
    p1 = np.array([[26, 26], [26, 6], [6, 6]], float)                             # centre 16 +- size // 3 = 10, (x, y)
    yy, xx = np.mgrid[:32, :32].astype(float)
    for i in range(3):
        M = np.linalg.solve(np.c_[p1, np.ones(3)], p1 + J[i]).T                  # cv2.getAffineTransform
        Mi = np.linalg.inv(np.r_[M, [[0, 0, 1]]])[:2]
        sx, sy = Mi[0, 0] * xx + Mi[0, 1] * yy + Mi[0, 2], Mi[1, 0] * xx + Mi[1, 1] * yy + Mi[1, 2]
        warped = [map_coordinates(c, [sy, sx], order=1, mode="mirror") for c in x[i].numpy()]   # warpAffine, reflect-101
        dx, dy = (gaussian_filter(u[i], sigma, mode="reflect", truncate=3) * alpha for u in U)
        ref = np.stack([map_coordinates(c, [yy + dy, xx + dx], order=1, mode="reflect") for c in warped])
        np.testing.assert_allclose(y[i].numpy(), np.clip(ref, 0, 1), atol=1e-6)


@pytest.mark.parametrize("shape", [(32, 32), (45, 37)])
def test_pixelate_is_pillow_box(shape, imgs):
    h, w = shape
    x = imgs[:8] if shape == (32, 32) else torch.randint(0, 256, (8, 3, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for s in SEVERITIES:
        c = SOURCE["pixelate"][s - 1]
        ref = torch.stack([torch.from_numpy(np.array(Image.fromarray(t.permute(1, 2, 0).numpy()).resize((int(w * c), int(h * c)), Image.BOX)
                                                     .resize((w, h), Image.BOX))).permute(2, 0, 1) for t in x])
        assert torch.equal(corrupt(x, "pixelate", s), ref)
    assert (corrupt(x, "pixelate", 5)[:, :, :, 1:] == corrupt(x, "pixelate", 5)[:, :, :, :-1]).double().mean() > 0.3   # blocks


def test_jpeg_is_pillow_and_quality_matters(imgs):
    x = imgs[:16]
    outs = []
    for s in SEVERITIES:
        ref = []
        for t in x:
            b = io.BytesIO(); Image.fromarray(t.permute(1, 2, 0).numpy()).save(b, "JPEG", quality=SOURCE["jpeg_compression"][s - 1])
            ref.append(torch.from_numpy(np.array(Image.open(b))).permute(2, 0, 1))
        outs.append(corrupt(x, "jpeg_compression", s))
        assert torch.equal(outs[-1], torch.stack(ref))
    assert all(not torch.equal(a, b) for a, b in zip(outs, outs[1:]))              # every quality step changes the pixels


# ------------------------------------------------------------------------------------------------------ the API
MONOTONE = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "zoom_blur", "snow", "fog", "brightness",
            "contrast", "pixelate", "jpeg_compression")   # not glass (sigma 0.05 at 1), motion (4 ~ 3), frost, elastic (1 is the largest warp)


def test_outputs_and_severity(imgs):
    x = imgs[:48]
    for name in CORRUPTIONS:
        dist = []
        for s in SEVERITIES:
            y = corrupt(x, name, s)
            assert y.dtype == torch.uint8 and y.shape == x.shape
            assert not torch.equal(y, x), (name, s)
            dist.append((y.float() - x.float()).abs().mean((1, 2, 3)).median().item())
        if name in MONOTONE: assert all(a < b for a, b in zip(dist, dist[1:])), (name, dist)


def test_determinism_and_chunking(imgs):
    x = torch.cat([imgs] * 5)[:300]                                               # 300 images: two blocks
    for name in CORRUPTIONS:
        whole = corrupt(x, name, 4, seed=3)
        assert torch.equal(corrupt(x, name, 4, seed=3), whole)
        parts = [corrupt(x[a:b], name, 4, seed=3, start=a) for a, b in ((0, 17), (17, 255), (255, 258), (258, 300))]
        assert torch.equal(torch.cat(parts), whole), name
        if name in RANDOM: assert not torch.equal(corrupt(x, name, 4, seed=4), whole), name
    assert torch.equal(corrupted_dataset(x, "fog", 2, batch_size=77), corrupt(x, "fog", 2))
    assert torch.equal(torch.cat(list(corrupted_batches(x, "snow", 5, batch_size=100))), corrupt(x, "snow", 5))


def test_other_sizes(imgs):
    x = F.interpolate(imgs[:4].float(), size=64, mode="bilinear").round().to(torch.uint8)
    for name in CORRUPTIONS:
        assert corrupt(x, name, 5).shape == x.shape
    x = torch.randint(0, 256, (2, 3, 8, 12), dtype=torch.uint8)
    for name in CORRUPTIONS:
        assert corrupt(x, name, 3).shape == x.shape


def test_errors(imgs):
    x = imgs[:4]
    with pytest.raises(ValueError, match="did you mean 'motion_blur'"): corrupt(x, "motion", 1)
    with pytest.raises(ValueError, match="not a CIFAR-10-C corruption"): corrupt(x, "speckle_noise", 1)
    for bad in (0, 6, True, 2.0, "3"):
        with pytest.raises(ValueError, match="severity"): corrupt(x, "fog", bad)
    with pytest.raises(ValueError, match="torch.uint8"): corrupt(x.float(), "fog", 1)
    with pytest.raises(ValueError, match="channels last"): corrupt(x.permute(0, 2, 3, 1), "fog", 1)
    with pytest.raises(ValueError, match="at least 8 x 8"): corrupt(x[:, :, :4, :4], "fog", 1)
    with pytest.raises(ValueError, match="start"): corrupt(x, "fog", 1, start=-1)
    with pytest.raises(ValueError, match="batch_size"): next(corrupted_batches(x, "fog", 1, batch_size=0))
    with pytest.raises(ValueError, match="rng"): C.gaussian_noise(x.float(), 1, rng=5)


# ------------------------------------------------------------------------------------------------------ official files, report
def _fake_cifar10c(root, names=("fog", "snow"), n=4):
    imgs = np.random.default_rng(0).integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8)
    for name in names: np.save(root / f"{name}.npy", imgs)
    np.save(root / "labels.npy", np.tile(np.arange(n, dtype=np.uint8), 5))
    return imgs


def test_load_cifar10c(tmp_path):
    a = _fake_cifar10c(tmp_path)
    for s in SEVERITIES:
        x, y = load_cifar10c(tmp_path, "fog", s)
        assert x.dtype == torch.uint8 and torch.equal(x, torch.from_numpy(a[(s - 1) * 4:s * 4]).permute(0, 3, 1, 2))
        assert y.dtype == torch.int64 and y.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="has no frost.npy"): load_cifar10c(tmp_path, "frost", 1)
    np.save(tmp_path / "contrast.npy", a[:19])
    with pytest.raises(ValueError, match="5 \\* N"): load_cifar10c(tmp_path, "contrast", 1)
    np.save(tmp_path / "labels.npy", np.zeros(7, np.uint8))
    with pytest.raises(ValueError, match="labels.npy: shape"): load_cifar10c(tmp_path, "fog", 1)
    (tmp_path / "labels.npy").unlink()
    with pytest.raises(ValueError, match="has no labels.npy"): load_cifar10c(tmp_path, "fog", 1)
    with pytest.raises(ValueError, match="not a folder"): C.cifar10c_source(tmp_path / "nope")


def test_evaluate_robustness_generated_and_official(tmp_path, imgs):
    x, y = imgs[:40], torch.arange(40) % 10
    oracle = {bytes(t.numpy()): int(l) for t, l in zip(x, y)}
    predict = lambda b: torch.tensor([oracle.get(bytes(t.numpy()), -1) for t in b])   # right on clean images only
    r = evaluate_robustness(predict, x, y, progress=False, batch_size=16)
    assert r["clean"] == 1.0 and r["n"] == 40 and r["corruptions"] == list(CORRUPTIONS) and r["severities"] == [1, 2, 3, 4, 5]
    assert all(len(v) == 5 and all(0 <= a <= 1 for a in v) for v in r["accuracy"].values())
    assert r["mca"] == pytest.approx(np.mean([np.mean(v) for v in r["accuracy"].values()]))
    assert r["relative"] == pytest.approx(r["mca"] / r["clean"])
    md = robustness_markdown(r)
    assert md.count("\n") == 2 + 15 + 3 and "| **all corruptions** |" in md and "(mCA)" in md
    assert save_robustness_heatmap(r, tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"

    _fake_cifar10c(tmp_path)
    zeros = lambda b: np.zeros(len(b), np.int64)
    r = evaluate_robustness(zeros, x, y, corruptions=("fog", "snow"), severities=(2, 5), progress=False, source=C.cifar10c_source(tmp_path))
    assert r["accuracy"] == {"fog": [0.25, 0.25], "snow": [0.25, 0.25]} and r["source"] == "official" and r["n_corrupted"] == 4
    assert r["clean"] == pytest.approx(0.1) and r["relative"] == pytest.approx(2.5)
    with pytest.raises(ValueError, match="predict: returned shape"):
        evaluate_robustness(lambda b: torch.zeros(len(b), 10), x, y, corruptions=("fog",), progress=False)
    with pytest.raises(ValueError, match="labels"): evaluate_robustness(zeros, x, y[:5], progress=False)


def test_examples_figure(tmp_path, imgs):
    p = save_corruption_examples(imgs[3], tmp_path / "ex.png")
    w, h = Image.open(p).size
    assert h > 2 * w                                                              # 15 rows x 6 columns
