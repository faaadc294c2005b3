"Pretext tasks: labels correct by construction, seeded determinism, shapes / dtypes, Loader integration, bad arguments."
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from reprlab.data import ImageDataset
from reprlab.loaders import Loader
from reprlab.pretext import (LOSSES, JigsawTask, MixupTask, PatchworkTask, PretextTask, QuadrantTask, RotationTask,
                             ScaleTask, TransformDetectTask, channel_shuffle, create_pretext, hamming_permutations,
                             list_pretext, mix_weights, source_indices)
from reprlab.transforms import Compose, Normalize, RandomHorizontalFlip, resized_crop_batch

B = 8
SMALL = dict(patchwork=dict(patch_shape=4))          # the default 8x8 patch does not fit twice in 12x12 images


def gen(seed: int) -> torch.Generator: return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def x():
    return torch.rand(B, 3, 12, 12, generator=gen(0))


def make(name, **kw): return create_pretext(name, **{**SMALL.get(name, {}), **kw})


# ---------------------------------------------------------------- the registry's contract

def test_registry_names():
    assert list_pretext() == ["jigsaw", "mixup", "patchwork", "quadrant", "rotation", "scale", "transform_detect"]
    with pytest.raises(KeyError, match=r"did you mean \['jigsaw'\]"): create_pretext("jigsw")
    with pytest.raises(TypeError, match=r"has no option\(s\) \['grids'\]"): create_pretext("jigsaw", grids=3)


@pytest.mark.parametrize("name", list_pretext())
def test_contract(name, x):
    t = make(name)
    assert isinstance(t, PretextTask) and t.loss in LOSSES and t.n_outputs >= 1
    out = t(x, gen(1))
    img, y = out["image"], out["target"]
    assert img.dtype == x.dtype and img.ndim == (5 if t.multi else 4) and img.shape[0] == B
    if t.multi: assert img.shape[1:] == (t.n_outputs + 1, *x.shape[1:])
    if t.loss == "ce":
        assert y.shape == (B,) and y.dtype == torch.int64 and 0 <= y.min() and y.max() < t.n_outputs
    else:
        assert y.shape == (B, t.n_outputs) and y.dtype == torch.float32 and ((y >= 0) & (y <= 1)).all()
    again = t(x, gen(1))
    for k in out: assert torch.equal(out[k], again[k]), f"{name}: {k} differs for the same seed"
    other = t(x, gen(2))
    assert not torch.equal(other["image"], img), f"{name}: the same images for different seeds"
    assert torch.equal(x, torch.rand(B, 3, 12, 12, generator=gen(0))), "the input batch was modified in place"


@pytest.mark.parametrize("name", list_pretext())
def test_noise_keeps_labels_and_post_normalizes(name, x):
    clean, noisy = make(name)(x, gen(3)), make(name, noise=True)(x, gen(3))
    assert torch.equal(clean["target"], noisy["target"])
    assert noisy["image"].shape == clean["image"].shape and not torch.equal(noisy["image"], clean["image"])
    assert 0 <= noisy["image"].min() and noisy["image"].max() <= 1
    t = make(name); t.post = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    torch.testing.assert_close(t(x, gen(3))["image"], (clean["image"] - 0.5) / 0.25)


def test_float64_and_uint8(x):
    out = RotationTask()(x.double(), gen(0))
    assert out["image"].dtype == torch.float64
    with pytest.raises(TypeError, match="expects float images"): RotationTask()(x.mul(255).byte(), gen(0))


# ---------------------------------------------------------------- rotation, quadrant, jigsaw

def test_rotation_undo(x):
    out = RotationTask()(x, gen(4))
    assert set(out["target"].tolist()) == {0, 1, 2, 3}
    for i in range(B):
        k = int(out["target"][i])
        torch.testing.assert_close(torch.rot90(out["image"][i], -k, (1, 2)), x[i], rtol=0, atol=0)
        torch.testing.assert_close(out["image"][i], TF.rotate(x[i], 90 * k), rtol=0, atol=0)     # counter-clockwise
    with pytest.raises(ValueError, match="square"): RotationTask()(x[..., :10], gen(0))


def test_quadrant_matches_torchvision_crop(x):
    out = QuadrantTask()(x, gen(5))
    half = QuadrantTask(resize=False)(x, gen(5))
    assert torch.equal(out["target"], half["target"]) and half["image"].shape == (B, 3, 6, 6)
    for i in range(B):
        q = int(out["target"][i]); top, left = 6 * (q // 2), 6 * (q % 2)
        ref = TF.resized_crop(x[i], top, left, 6, 6, [12, 12], antialias=False)
        torch.testing.assert_close(out["image"][i], ref, atol=1e-6, rtol=0)
        assert torch.equal(half["image"][i], x[i, :, top:top + 6, left:left + 6])
    odd = QuadrantTask(resize=False)(torch.rand(2, 1, 7, 9, generator=gen(0)), gen(0))
    assert odd["image"].shape == (2, 1, 3, 4)
    with pytest.raises(ValueError, match="'bilinear' or 'nearest'"): QuadrantTask(interpolation="cubic")


def _tiles(im, g):
    c, H, W = im.shape; h, w = H // g, W // g
    return im[:, :g * h, :g * w].reshape(c, g, h, g, w).permute(1, 3, 0, 2, 4).reshape(g * g, c, h, w)


@pytest.mark.parametrize("grid,size", [(2, 12), (3, 12), (3, 13)])
def test_jigsaw_unpermute(grid, size):
    x = torch.rand(B, 3, size, size, generator=gen(6))
    t = JigsawTask(grid=grid, n_perms=10)
    out = t(x, gen(7))
    assert out["target"].max() < 10 and len(set(out["target"].tolist())) > 1
    for i in range(B):
        perm = t.perms[int(out["target"][i])]
        assert torch.equal(_tiles(out["image"][i], grid)[perm.argsort()], _tiles(x[i], grid))
    c = grid * (size // grid)
    assert torch.equal(out["image"][..., c:], x[..., c:]) and torch.equal(out["image"][..., c:, :], x[..., c:, :])   # border kept


def test_hamming_greedy_by_brute_force():
    P = hamming_permutations(4, 12, seed=3).numpy()
    assert (P[0] == np.arange(4)).all() and len({tuple(p) for p in P}) == 12
    allp = np.array(list(itertools.permutations(range(4))))
    for k in range(1, 12):               # each pick has the largest min distance to the ones chosen before it
        mind = lambda p: min(int((p != q).sum()) for q in P[:k])
        assert mind(P[k]) == max(mind(p) for p in allp)
    assert torch.equal(hamming_permutations(4, 12, seed=3), hamming_permutations(4, 12, seed=3))
    with pytest.raises(ValueError, match="only 24 permutations"): hamming_permutations(4, 25)
    with pytest.raises(ValueError, match="n_tiles must be <= 9"): hamming_permutations(16, 10)
    with pytest.raises(ValueError, match="grid must be 2 or 3"): JigsawTask(grid=4)


# ---------------------------------------------------------------- patchwork

@pytest.mark.parametrize("size", [8, 12])
def test_patchwork_by_construction(size):
    x = torch.rand(B, 3, size, size, generator=gen(8))
    for seed in range(6):
        out = PatchworkTask(patch_shape=4, pct_pos=0.5)(x, gen(seed))
        for i in range(B):
            t, l, st, sl = out["patch"][i].tolist(); src = int(out["sources"][i, 1])
            assert int(out["sources"][i, 0]) == i
            assert torch.equal(out["image"][i, :, t:t + 4, l:l + 4], x[src, :, st:st + 4, sl:sl + 4])
            rest = torch.ones(size, size, dtype=torch.bool); rest[t:t + 4, l:l + 4] = False
            assert torch.equal(out["image"][i][:, rest], x[i][:, rest])                  # nothing else changed
            if out["target"][i, 0] == 1: assert src == i and (abs(st - t) >= 4 or abs(sl - l) >= 4)
            else: assert src != i and (st, sl) == (t, l)


def test_patchwork_pct_pos_fixed_and_patch_transforms(x):
    assert PatchworkTask(patch_shape=4, pct_pos=1.0)(x, gen(0))["target"].eq(1).all()
    assert PatchworkTask(patch_shape=4, pct_pos=0.0)(x, gen(0))["target"].eq(0).all()
    big = torch.rand(512, 1, 12, 12, generator=gen(1))
    assert abs(PatchworkTask(patch_shape=4, pct_pos=0.25)(big, gen(1))["target"].mean() - 0.25) < 0.06
    fx = PatchworkTask(patch_shape=(4, 3), fixed=True)
    a, b = fx(x, gen(0)), fx(x, gen(1))
    assert all(torch.equal(a[k], b[k]) for k in a)                                    # no randomness at all
    assert a["patch"].tolist() == [[0, 0, 8, 9], [0, 0, 0, 0]] * 4 and a["target"][:, 0].tolist() == [1.0, 0.0] * 4
    flip = PatchworkTask(patch_shape=4, pct_pos=1.0, flip_p=1.0, vflip_p=1.0)(x, gen(2))
    t, l, st, sl = flip["patch"][0].tolist()
    assert torch.equal(flip["image"][0, :, t:t + 4, l:l + 4], x[0, :, st:st + 4, sl:sl + 4].flip(-1).flip(-2))
    noisy = PatchworkTask(patch_shape=4, pct_pos=1.0, noise_p=1.0, noise_std=0.2)(x, gen(2))
    t, l, st, sl = noisy["patch"][0].tolist()
    assert not torch.equal(noisy["image"][0, :, t:t + 4, l:l + 4], x[0, :, st:st + 4, sl:sl + 4])
    calls = []
    def spy(p, g): calls.append(tuple(p.shape)); return 1 - p
    inv = PatchworkTask(patch_shape=4, pct_pos=1.0, patch_transform=spy)(x, gen(2))
    t, l, st, sl = inv["patch"][0].tolist()
    assert calls == [(B, 3, 4, 4)] and torch.equal(inv["image"][0, :, t:t + 4, l:l + 4], 1 - x[0, :, st:st + 4, sl:sl + 4])


def test_patchwork_errors(x):
    with pytest.raises(ValueError, match="non-overlapping"): PatchworkTask(patch_shape=7)(x, gen(0))
    with pytest.raises(ValueError, match="does not fit"): PatchworkTask(patch_shape=(4, 13))(x, gen(0))
    with pytest.raises(ValueError, match="batches of >= 2"): PatchworkTask(patch_shape=4)(x[:1], gen(0))
    PatchworkTask(patch_shape=4, pct_pos=1.0)(x[:1], gen(0))                             # positives only: fine
    with pytest.raises(ValueError, match="pct_pos must be a probability"): PatchworkTask(pct_pos=-0.1)
    with pytest.raises(ValueError, match="patch_shape must be"): PatchworkTask(patch_shape=(4, 0))
    with pytest.raises(ValueError, match="must keep the patch shape"):
        PatchworkTask(patch_shape=4, patch_transform=lambda p: p[..., :2])(x, gen(0))


# ---------------------------------------------------------------- transform detection

def test_transform_detect(x):
    out = TransformDetectTask(p=0.5)(x, gen(9))
    y = out["target"][:, 0].bool()
    assert 0 < y.sum() < B
    for i in range(B):
        if not y[i]: assert torch.equal(out["image"][i], x[i]); continue
        perms = [p for p in itertools.permutations(range(3)) if torch.equal(out["image"][i], x[i, list(p)])]
        assert perms and perms[0] != (0, 1, 2)                                          # a real channel shuffle
    assert TransformDetectTask(p=1.0)(x, gen(0))["target"].eq(1).all()
    assert torch.equal(TransformDetectTask(p=0.0)(x, gen(0))["image"], x)
    flip = TransformDetectTask(transform=RandomHorizontalFlip(1.0), p=1.0)(x, gen(0))
    assert torch.equal(flip["image"], x.flip(-1))
    with pytest.raises(ValueError, match="2 to 6 channels"): TransformDetectTask()(x[:, :1], gen(0))
    with pytest.raises(ValueError, match="must keep the image shape"):
        TransformDetectTask(transform=lambda t: t[..., :4], p=1.0)(x, gen(0))
    assert not any(torch.equal(channel_shuffle(x, gen(s))[0], x[0]) for s in range(10))


# ---------------------------------------------------------------- mixup and scale

@pytest.mark.parametrize("n", [2, 3, 8])
def test_mixup_by_construction(n, x):
    out = MixupTask(n=n)(x, gen(10))
    src, w = out["sources"], out["target"]
    assert out["image"].shape == (B, n + 1, 3, 12, 12) and src.shape == w.shape == (B, n)
    assert torch.equal(out["image"][:, :n], x[src])                                   # sources first ...
    torch.testing.assert_close(out["image"][:, n], (w[:, :, None, None, None] * x[src]).sum(1), atol=1e-5, rtol=0)  # ... mix last
    assert ((w > 0).sum(1) == 2).all() and torch.allclose(w.sum(1), torch.ones(B))
    for i in range(B): assert i in src[i].tolist() and len(set(src[i].tolist())) == n
    mh = MixupTask(n=n, target="multihot")(x, gen(10))
    assert torch.equal(mh["target"], (w > 0).float()) and mh.keys() == out.keys() and torch.equal(mh["weights"], w)
    assert not torch.equal(MixupTask(n=n)(x, gen(11))["sources"], src)


def test_mixup_debug_variants(x):
    base = MixupTask(n=3)(x, gen(12))
    dm = MixupTask(n=3, dup_mix=True)(x, gen(12))
    assert torch.equal(dm["sources"], base["sources"]) and ((dm["target"] > 0).sum(1) == 1).all()
    k = dm["target"].argmax(1)
    assert torch.equal(dm["image"][torch.arange(B), 3], dm["image"][torch.arange(B), k])   # the mix is one source
    ds = MixupTask(n=3, dup_src=True)(x, gen(12))
    w = ds["target"]
    torch.testing.assert_close(ds["image"][:, :3], w[:, :, None, None, None] * x[ds["sources"]])
    torch.testing.assert_close(ds["image"][:, :3].sum(1), ds["image"][:, 3])
    assert torch.equal(ds["image"][:, 3], base["image"][:, 3])


def test_mix_weights_beta_and_distributions():
    p = mix_weights(20000, gen(0), a=2.0, b=5.0)
    assert p.dtype == torch.float32 and abs(p.mean() - 2 / 7) < 0.01 and abs(p.var() - 10 / (49 * 8)) < 0.003
    assert torch.equal(p, mix_weights(20000, gen(0), a=2.0, b=5.0))
    tiny = mix_weights(1000, gen(1), a=0.01, b=0.01)                                  # mass at 0 and 1: kept inside
    assert tiny.min() >= 1e-3 and tiny.max() <= 1 - 1e-3
    beta = torch.distributions.Beta(torch.tensor(2.0), torch.tensor(5.0))
    torch.manual_seed(123); expected = torch.rand(3)
    torch.manual_seed(123)
    d1 = mix_weights(5000, gen(2), dist=beta)
    assert torch.equal(torch.rand(3), expected), "sampling dist must not move the global RNG"
    assert torch.equal(d1, mix_weights(5000, gen(2), dist=beta)) and not torch.equal(d1, mix_weights(5000, gen(3), dist=beta))
    assert abs(d1.mean() - 2 / 7) < 0.01

    class Const:
        def sample(self): return torch.tensor(0.25)
    assert torch.equal(mix_weights(4, gen(0), dist=Const()), torch.full((4,), 0.25))

    class Wide:
        def sample(self, shape): return torch.full(shape, 1.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"): mix_weights(4, gen(0), dist=Wide())

    class Many:
        def sample(self, shape): return torch.rand(*shape, 2)
    with pytest.raises(ValueError, match="one number per sample"): mix_weights(4, gen(0), dist=Many())


def test_mixup_errors(x):
    with pytest.raises(ValueError, match=">= 2"): MixupTask(n=1)
    with pytest.raises(ValueError, match="batch_size >= 9"): MixupTask(n=9)(x, gen(0))
    with pytest.raises(ValueError, match="'weights' or 'multihot'"): MixupTask(target="soft")
    with pytest.raises(ValueError, match="loss for target='multihot'"): MixupTask(target="multihot", loss="mse")
    with pytest.raises(ValueError, match="Beta parameters"): MixupTask(a=0.0)
    with pytest.raises(TypeError, match="sample\\(\\) method"): MixupTask(dist=0.5)
    assert MixupTask(loss="mse").loss == "mse" and MixupTask().loss == "soft_ce" and MixupTask(target="multihot").loss == "bce"


def test_scale_by_construction(x):
    out = ScaleTask(n=3, scales=(0.5, 0.8))(x, gen(13))
    src, y, boxes = out["sources"], out["target"], out["boxes"]
    assert out["image"].shape == (B, 4, 3, 12, 12) and boxes.shape == (B, 3, 4)
    assert torch.equal(out["image"][:, 3], x) and torch.equal(y, (src == torch.arange(B)[:, None]).float())
    assert torch.equal(y.sum(1), torch.ones(B))
    side = boxes[..., 2] / 12
    assert (side >= 0.5).all() and (side <= 0.8).all() and (boxes[..., 0] >= 0).all() and (boxes[..., 0] + boxes[..., 2] <= 12 + 1e-5).all()
    ref = resized_crop_batch(x[src].flatten(0, 1), boxes.flatten(0, 1), (12, 12)).view(B, 3, 3, 12, 12)
    torch.testing.assert_close(out["image"][:, :3], ref)
    one = ScaleTask(n=3, scales=(1.0, 1.0))(x, gen(14))                               # no zoom: the images themselves
    torch.testing.assert_close(one["image"][:, :3], x[one["sources"]], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="scales must be"): ScaleTask(scales=(0.8, 0.5))
    with pytest.raises(ValueError, match="crops per sample"): ScaleTask(n=1)


# ---------------------------------------------------------------- in the Loader

def _loader(task, num_workers=0, seed=0):
    imgs = torch.randint(0, 256, (20, 3, 12, 12), dtype=torch.uint8, generator=gen(0))
    return Loader(ImageDataset(images=imgs, name="toy"), batch_size=B, shuffle=True, drop_last=True, seed=seed,
                  transform=Compose([RandomHorizontalFlip(), task]), num_workers=num_workers)


def test_loader_batches_are_seeded_and_keep_sources():
    dl = _loader(MixupTask(n=2))
    e0 = [b for b in dl]; e1 = [b for b in dl]
    again = [b for b in _loader(MixupTask(n=2))]
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"]) for a, b in zip(e0, again))
    assert not torch.equal(e0[0]["sources"], e1[0]["sources"])                         # a new pairing each epoch
    assert not torch.equal(e0[0]["image"], next(iter(_loader(MixupTask(n=2), seed=1)))["image"])
    b = e0[0]
    idx = source_indices(b)
    imgs = torch.randint(0, 256, (20, 3, 12, 12), dtype=torch.uint8, generator=gen(0))
    for i in range(B):                                                                 # the sources are those images
        for j in range(2):
            src = imgs[idx[i, j]].float() / 255
            assert torch.equal(b["image"][i, j], src) or torch.equal(b["image"][i, j], src.flip(-1))
    with pytest.raises(KeyError, match="no 'sources'"): source_indices(next(iter(_loader(RotationTask()))))


def test_loader_same_batches_with_workers():
    a = [b["image"] for b in _loader(PatchworkTask(patch_shape=4), num_workers=0)]
    dl = _loader(PatchworkTask(patch_shape=4), num_workers=1)
    try: b = [b["image"] for b in dl]
    finally: dl.close()
    assert all(torch.equal(u, v) for u, v in zip(a, b))
