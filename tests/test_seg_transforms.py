"""Joint segmentation augmentation: image and mask stay aligned through every transform; tiles are windows of the
(reflect-padded) source found by brute force; the 8 dihedral transforms against torch.rot90 / flip; the elastic warp
against scipy.ndimage.map_coordinates and an independent bicubic (Keys) implementation, its displacement statistics
measured from warped coordinate ramps; brightness / contrast against torchvision; determinism; argument errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torchvision.transforms.v2 import functional as TF

from reprlab.core import make_generator
from reprlab.seg_transforms import (
    BrightnessContrast, ElasticDeform, ImageOnly, RandomFlipRot, RandomTile, SegAugment, SegCompose, SegNormalize,
    SegTransform, crop_batch, dihedral_batch, displacement_field, elastic_batch)
from reprlab.transforms import ColorJitter, Compose, GaussianNoise, Transform


def discs(b=8, h=96, w=96, n=10, seed=0, classes=2):
    "Masks (B, 1, H, W) uint8 of random discs, disc k of class 1 + k % (classes - 1) on background 0."
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    c = torch.rand(b, n, 3, generator=g) * torch.tensor([h, w, min(h, w) / 6]) + torch.tensor([0, 0, 4.0])
    inside = (yy - c[..., 0, None, None]) ** 2 + (xx - c[..., 1, None, None]) ** 2 <= c[..., 2, None, None] ** 2
    label = (1 + torch.arange(n) % (classes - 1)).view(1, n, 1, 1)
    return (inside * label).amax(1, keepdim=True).to(torch.uint8)


def boundary(mask):
    "Pixels (B, 1, H, W) with a 4-neighbour of another class, or next to one: the 1-pixel band around class edges."
    m = F.pad(mask.float(), (1, 1, 1, 1), mode="replicate")
    c = m[..., 1:-1, 1:-1]
    edge = (m[..., :-2, 1:-1] != c) | (m[..., 2:, 1:-1] != c) | (m[..., 1:-1, :-2] != c) | (m[..., 1:-1, 2:] != c)
    return F.max_pool2d(edge.float(), 3, 1, 1) > 0


# ---------------------------------------------------------------- the calling convention

def test_every_class_takes_masks_and_returns_the_image_alone_without_one():
    x, m = torch.rand(2, 1, 40, 40), discs(2, 40, 40)
    ts = [RandomTile(16), RandomFlipRot(), ElasticDeform(), BrightnessContrast(), SegNormalize((0.5,), (0.2,)),
          SegAugment(16), SegCompose([]), ImageOnly(GaussianNoise()), SegAugment.valid()]
    for t in ts:
        assert type(t).takes_mask is True and isinstance(t, SegTransform) and isinstance(t, Transform)
        out = t(x, make_generator(0), mask=m)
        assert set(out) == {"image", "mask"} and out["mask"].dtype == torch.uint8
        assert out["image"].shape[-2:] == out["mask"].shape[-2:] and out["mask"].shape[:2] == (2, 1)
        y = t(x, make_generator(0))
        assert isinstance(y, torch.Tensor) and torch.equal(y, out["image"])       # the image does not depend on the mask
    assert Compose([RandomFlipRot(), GaussianNoise()])(x, make_generator(0)).shape == x.shape   # plain Transforms too


# ---------------------------------------------------------------- alignment of tiles, flips and rotations

@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_tiles_flips_and_rotations_keep_image_and_mask_aligned_exactly(dtype):
    m = discs(16, 50, 70, classes=5).to(dtype)                                     # classes 0..4
    x = (m.float() / 4).repeat(1, 3, 1, 1)                                          # the image made from the mask
    for t in [RandomTile(32), RandomTile(96), RandomTile((20, 90)), RandomFlipRot(),
              SegCompose([RandomTile(40), RandomFlipRot()]), SegAugment(40, elastic=False, brightness=0, contrast=0)]:
        out = t(x, make_generator(1), mask=m)
        assert out["mask"].dtype == dtype
        for c in range(3): assert torch.equal((out["image"][:, c:c + 1] * 4).round().to(dtype), out["mask"]), t
    b = discs(16, 50, 70)                                                           # binary: (image > 0.5) == mask
    out = SegCompose([RandomTile(48), RandomFlipRot()])(b.float(), make_generator(2), mask=b)
    assert torch.equal((out["image"] > 0.5).to(torch.uint8), out["mask"])


# ---------------------------------------------------------------- RandomTile against brute force

def test_random_tile_outputs_are_windows_of_the_source_at_varying_positions():
    x = torch.rand(40, 2, 30, 37, generator=torch.Generator().manual_seed(0))
    m = torch.randint(0, 5, (40, 1, 30, 37), generator=torch.Generator().manual_seed(1))
    out = RandomTile((12, 15))(x, make_generator(3), mask=m)
    positions = []
    for i in range(40):
        windows = x[i].unfold(1, 12, 1).unfold(2, 15, 1)                           # (C, 19, 23, 12, 15) every position
        hits = (windows == out["image"][i][:, None, None]).flatten(3).all(3).all(0).nonzero().tolist()
        assert len(hits) == 1                                                       # random values: a unique position
        (top, left), = hits
        assert torch.equal(out["mask"][i], m[i, :, top:top + 12, left:left + 15])
        positions.append((top, left))
    assert len(set(positions)) >= 35                                                # different per sample
    tops, lefts = zip(*positions)
    assert min(tops) <= 3 and max(tops) >= 15 and min(lefts) <= 3 and max(lefts) >= 19   # spread over the range


def test_small_images_are_reflect_padded_like_f_pad_for_image_and_mask():
    x = torch.rand(3, 1, 6, 9, generator=torch.Generator().manual_seed(0))
    m = torch.randint(0, 3, (3, 1, 6, 9), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    out = RandomTile(11)(x, make_generator(0), mask=m)                             # both sides shorter: centred
    assert torch.equal(out["image"], F.pad(x, (1, 1, 2, 3), mode="reflect"))
    assert torch.equal(out["mask"], F.pad(m.float(), (1, 1, 2, 3), mode="reflect").to(torch.uint8))
    out = RandomTile((10, 5))(x, make_generator(0))                                # tall: padded rows, random columns
    padded = F.pad(x, (0, 0, 2, 2), mode="reflect")
    for i in range(3):
        assert any(torch.equal(out[i], padded[i, :, :, j:j + 5]) for j in range(5))
    for top, left in [(-5, -8), (2, 4), (-1, 3)]:                                  # crop_batch = slicing F.pad's reflect
        ref = F.pad(x, (8, 8, 5, 5), mode="reflect")[..., top + 5:top + 5 + 7, left + 8:left + 8 + 10]
        assert torch.equal(crop_batch(x, [top] * 3, [left] * 3, (7, 10)), ref)
    one = torch.rand(2, 1, 1, 3)                                                     # 1 row: repeated down to any size
    assert torch.equal(RandomTile((25, 3))(one, make_generator(0)), one.expand(2, 1, 25, 3))


# ---------------------------------------------------------------- dihedral transforms against torch

def test_flip_rot_reaches_all_8_dihedral_transforms_and_equals_torch_rot90_flip():
    x0 = torch.rand(1, 2, 7, 7, generator=torch.Generator().manual_seed(0))
    m0 = torch.randint(0, 9, (1, 1, 7, 7), generator=torch.Generator().manual_seed(1))
    def d8(t): return [torch.rot90(t, k, (-2, -1)) for k in range(4)] + [torch.rot90(t.flip(-1), k, (-2, -1)) for k in range(4)]
    cand_x, cand_m = d8(x0[0]), d8(m0[0])
    out = RandomFlipRot()(x0.repeat(200, 1, 1, 1), make_generator(5), mask=m0.repeat(200, 1, 1, 1))
    reached = []
    for y, ym in zip(out["image"], out["mask"]):
        k = [i for i, c in enumerate(cand_x) if torch.equal(y, c)]
        assert len(k) == 1 and torch.equal(ym, cand_m[k[0]])                        # the mask got the same transform
        reached.append(k[0])
    counts = np.bincount(reached, minlength=8)
    assert (counts > 0).all() and counts.min() >= 10                                # all 8, roughly uniformly


def test_flip_rot_on_non_square_inputs_only_flips():
    x0 = torch.rand(1, 1, 5, 8, generator=torch.Generator().manual_seed(0))
    out = RandomFlipRot()(x0.repeat(100, 1, 1, 1), make_generator(0))
    cands = [x0[0], x0[0].flip(-1), x0[0].flip(-2), torch.rot90(x0[0], 2, (-2, -1))]
    reached = {next(i for i, c in enumerate(cands) if torch.equal(y, c)) for y in out}
    assert reached == {0, 1, 2, 3} and out.shape == (100, 1, 5, 8)
    with pytest.raises(ValueError, match="need square images"): dihedral_batch(x0, [5])


# ---------------------------------------------------------------- elastic deformation

def keys_matrix(g, n, a=-0.75):
    "Independent bicubic (Keys, a = -0.75, clamped taps) weights (n, g) with align_corners=True node placement."
    def w(t):
        t = abs(t)
        return (a + 2) * t**3 - (a + 3) * t**2 + 1 if t <= 1 else a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a if t < 2 else 0.0
    out = np.zeros((n, g))
    for i in range(n):
        s = i * (g - 1) / (n - 1)
        f = int(np.floor(s)); t = s - f
        for k in range(-1, 3): out[i, min(max(f + k, 0), g - 1)] += w(t - k)
    return out


def test_displacement_field_is_the_bicubic_interpolation_of_the_lattice():
    c = torch.randn(4, 2, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    d = displacement_field(c, 41, 30).numpy()
    wy, wx = keys_matrix(3, 41), keys_matrix(5, 30)
    np.testing.assert_allclose(d, np.einsum("ya,bcak,xk->bcyx", wy, c.numpy(), wx), atol=1e-12)
    np.testing.assert_allclose(d[..., ::20, :][..., [0, 29]], c.numpy()[..., [0, 4]], atol=1e-12)   # nodes on the edge pixels


def test_elastic_warp_matches_scipy_map_coordinates():
    x = torch.rand(3, 2, 40, 50, generator=torch.Generator().manual_seed(0))
    m = torch.randint(0, 4, (3, 1, 40, 50), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    coarse = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 6
    for margin in (0, 5):
        y, ym = elastic_batch(x, coarse, m, margin)
        oh, ow = 40 - 2 * margin, 50 - 2 * margin
        d = displacement_field(coarse, oh, ow).numpy()
        ii, jj = np.meshgrid(np.arange(oh) + margin, np.arange(ow) + margin, indexing="ij")
        for b in range(3):
            coords = [ii + d[b, 1], jj + d[b, 0]]                                    # (row, col) = (i + dy, j + dx)
            for ch in range(2):                                                      # scipy's reflect = half-sample symmetric
                ref = ndimage.map_coordinates(x[b, ch].double().numpy(), coords, order=1, mode="reflect")
                np.testing.assert_allclose(y[b, ch].numpy(), ref, atol=1e-4)
            ref = ndimage.map_coordinates(m[b, 0].numpy(), coords, order=0, mode="reflect")
            assert (ym[b, 0].numpy() == ref).mean() > 0.999


def test_elastic_mask_agrees_with_the_warped_mask_image_away_from_edges():
    m = discs(8, 128, 128, n=12)
    out = ElasticDeform(sigma=10.0)(m.float(), make_generator(0), mask=m)
    agree = (out["image"] > 0.5) == out["mask"].bool()
    away = ~boundary(out["mask"])
    assert agree[away].float().mean() >= 0.99 and agree.float().mean() >= 0.98
    assert not torch.equal(out["mask"], m)                                            # it did deform
    assert (out["mask"] != m).float().mean() > 0.02


def test_elastic_with_sigma_zero_or_p_zero_is_the_identity():
    x, m = torch.rand(4, 3, 33, 47), discs(4, 33, 47)
    out = ElasticDeform(sigma=0.0)(x, make_generator(0), mask=m)
    assert torch.equal(out["image"], x) and torch.equal(out["mask"], m)
    out = ElasticDeform(sigma=5.0, p=0.0)(x, make_generator(0), mask=m)
    assert torch.equal(out["image"], x) and torch.equal(out["mask"], m)
    y, ym = elastic_batch(x, torch.zeros(4, 2, 3, 3), m)                               # a zero field resamples in place
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0); assert torch.equal(ym, m)
    out = ElasticDeform(sigma=5.0, p=0.5)(x, make_generator(0), mask=m)                # some samples kept exactly
    kept = [torch.equal(out["image"][i], x[i]) for i in range(4)]
    assert [torch.equal(out["mask"][i], m[i]) for i in range(4) if kept[i]] == [True] * sum(kept)


def test_displacement_statistics_measured_from_warped_coordinate_ramps():
    "Warp ramps (channel 0 = column, 1 = row): bilinear is exact on them, so the output is the sampling position."
    n, sigma, m, size = 400, 4.0, 16, 97                                              # nodes on pixels 0, 48, 96
    h = size + 2 * m
    ramp = torch.stack(torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(h, dtype=torch.float32),
                                      indexing="ij")[::-1]) / (h - 1)
    out = ElasticDeform(sigma=sigma, grid=3, margin=m)(ramp.expand(n, 2, h, h).contiguous(), make_generator(0))
    base = torch.arange(m, m + size, dtype=torch.float64)
    d = out.double() * (h - 1) - torch.stack([base.view(1, -1).expand(size, size), base.view(-1, 1).expand(size, size)])
    inside = d.abs().amax((1, 2, 3)) < m - 1                                          # no reflection (|d| < 4 sigma)
    assert inside.float().mean() > 0.95
    d = d[inside]
    nodes = d[..., ::48, ::48]                                                        # (n, 2, 3, 3): the drawn vectors
    assert abs(nodes.std().item() / sigma - 1) < 0.05 and abs(nodes.mean().item()) < 0.2
    w = keys_matrix(3, size)                                                          # the bicubic weights
    var = sigma**2 * np.outer((w**2).sum(1), (w**2).sum(1))                           # expected variance per pixel
    measured = d.var(0).mean(0).numpy()                                               # (size, size), dx and dy pooled
    assert abs(measured.mean() / var.mean() - 1) < 0.08
    assert np.corrcoef(measured.ravel(), var.ravel())[0, 1] > 0.8                     # smaller between the nodes
    dw = np.diff(w, axis=0)                                                           # smooth: E|d(y+1) - d(y)| as predicted
    step = sigma * np.sqrt(2 / np.pi) * np.sqrt(np.outer((dw**2).sum(1), (w**2).sum(1))).mean()
    measured_step = (d[..., 1:, :] - d[..., :-1, :]).abs().mean().item()
    assert abs(measured_step / step - 1) < 0.1 and measured_step < 0.05 * sigma       # white noise: about 1.1 sigma


# ---------------------------------------------------------------- mask values, intensity, determinism

@pytest.mark.parametrize("dtype,values", [(torch.uint8, [0, 3, 7, 255]), (torch.int64, [-1, 0, 2, 5]), (torch.bool, [0, 1])])
def test_mask_values_stay_in_the_input_set(dtype, values):
    lab = discs(6, 90, 90, n=14, classes=len(values))
    m = torch.tensor(values)[lab.long()].to(dtype)
    out = SegAugment(48, sigma=8.0)(torch.rand(6, 1, 90, 90), make_generator(0), mask=m)
    assert out["mask"].dtype == dtype and out["mask"].shape == (6, 1, 48, 48)
    assert set(out["mask"].unique().tolist()) <= set(m.unique().tolist())


def test_brightness_contrast_matches_torchvision_and_never_changes_the_mask():
    x, m = torch.rand(12, 3, 16, 16), discs(12, 16, 16)
    out = BrightnessContrast(0.4, 0.3)(x, make_generator(7), mask=m)
    assert out["mask"] is m
    (f, order) = ColorJitter(0.4, 0.3, order="fixed").get_params(12, make_generator(7))
    assert order == ["brightness", "contrast"]
    ref = torch.stack([TF.adjust_contrast(TF.adjust_brightness(x[i], float(f["brightness"][i])), float(f["contrast"][i]))
                       for i in range(12)])
    torch.testing.assert_close(out["image"], ref, atol=1e-5, rtol=0)
    assert f["brightness"].min() >= 0.6 and f["brightness"].max() <= 1.4 and len(set(f["brightness"].tolist())) == 12


def test_segaugment_is_aligned_deterministic_and_varies_with_the_seed():
    m = discs(8, 200, 200, n=14)
    x = m.float()
    aug = SegAugment(96, brightness=0, contrast=0)
    a, b, c = (aug(x, make_generator(s), mask=m) for s in (1, 1, 2))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], c["image"])
    agree = (a["image"] > 0.5) == a["mask"].bool()
    assert agree.float().mean() >= 0.99 and agree[~boundary(a["mask"])].float().mean() >= 0.995
    for t in [RandomTile(50), RandomFlipRot(), ElasticDeform(), BrightnessContrast(), SegAugment(64)]:
        y1, y2 = t(x, make_generator(4), mask=m), t(x, make_generator(4), mask=m)
        assert torch.equal(y1["image"], y2["image"]) and torch.equal(y1["mask"], y2["mask"])
    n = SegAugment(64, normalize=((0.5,), (0.25,)))(x, make_generator(0))
    assert n.min() < -1                                                               # normalised: (0 - 0.5) / 0.25 = -2
    v = SegAugment.valid(((0.5,), (0.25,)))(x, None, mask=m)
    torch.testing.assert_close(v["image"], (x - 0.5) / 0.25); assert v["mask"] is m


def test_segaugment_repr_and_structure():
    aug = SegAugment(128, flips=False, sigma=5.0, grid=4, brightness=0.2, contrast=0)
    assert repr(aug) == ("SegAugment(tile=128, flips=False, elastic=True, sigma=5.0, grid=4, brightness=0.2, "
                         "contrast=0, normalize=None)")
    assert [type(t).__name__ for t in aug.transforms] == ["RandomTile", "ElasticDeform", "BrightnessContrast"]
    assert aug.margin == 15 and aug.transforms[0].size == (158, 158) and aug.transforms[1].margin == 15
    assert SegAugment(64, elastic=False).margin == 0 and SegAugment(64, sigma=0).margin == 0


# ---------------------------------------------------------------- bad arguments

def test_bad_arguments_raise_value_errors_naming_them():
    x, m = torch.rand(2, 1, 16, 16), discs(2, 16, 16)
    cases = [
        (lambda: ElasticDeform(sigma=-1.0), "sigma must be a finite number >= 0"),
        (lambda: SegAugment(64, sigma=-0.5), "sigma must be a finite number >= 0"),
        (lambda: ElasticDeform(grid=1), "grid must be an integer >= 2"),
        (lambda: ElasticDeform(p=1.5), "p must be a probability"),
        (lambda: RandomTile(0), "size must be a positive int"),
        (lambda: SegAugment(0), "tile must be a positive int"),
        (lambda: SegAugment(-3), "tile must be a positive int"),
        (lambda: BrightnessContrast(contrast=-0.2), "contrast must be >= 0"),
        (lambda: RandomTile(8)(x, None, mask=m[:, :, :8]), r"mask shape \(2, 1, 8, 16\) does not match image shape \(2, 1, 16, 16\)"),
        (lambda: RandomTile(8)(x, None, mask=m[:, 0]), r"mask shape \(2, 16, 16\) does not match image shape"),
        (lambda: RandomFlipRot()(x, None, mask=m.float()), "integer dtype expected, got torch.float32"),
        (lambda: ElasticDeform(margin=8)(x, None), "margin 8 leaves nothing"),
        (lambda: dihedral_batch(x, [0, 8]), "codes must be 2 integers in"),
        (lambda: SegCompose([GaussianNoise()]), "wrap image-only ones in ImageOnly"),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError, match=msg): fn()
