"reprlab.attention: ViT attention weights, DINO's CLS maps and masks (against DINO's own code and brute force), rollout (against a hand loop), on classifiers, DINO / BYOL teachers and checkpoints; conv encoders refused."
from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reprlab.attention import (attention_mask, attention_maps, attention_rollout, attentions, cls_attention,
                               save_attention, vit_of)
from reprlab.checkpoint import create_model, load_model, save_checkpoint
from reprlab.encoders import ViT

SMALL_DINO = dict(encoder="vit_mini", out_dim=64, hidden_dim=32, bottleneck_dim=16, n_local=0)


@pytest.fixture(autouse=True)
def _no_open_figures():
    yield
    assert plt.get_fignums() == []


@pytest.fixture(scope="module")
def clf():
    torch.manual_seed(0)
    return create_model("classifier", encoder="vit_mini", n_classes=10).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _sharpen(vit: ViT, scale: float = 8.0, seed: int = 0) -> ViT:
    "Random, larger q/k weights: peaked attention maps without ties (an untrained ViT attends almost uniformly)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in vit.blocks:
            w = blk.attn.qkv.weight
            d = w.shape[1]
            w[:2 * d] = torch.randn(2 * d, d, generator=g) * scale / d ** 0.5
    return vit


@pytest.mark.parametrize("name", ["vit_mini", "vit_tiny"])
def test_shapes_and_rows_sum_to_one(name, x):
    model = create_model("classifier", encoder=name, n_classes=5).eval()
    vit = vit_of(model)
    heads = vit.blocks[0].attn.heads
    att = attentions(model, x)
    assert len(att) == len(vit.blocks)
    for a in att:
        assert a.shape == (3, heads, 65, 65) and (a >= 0).all()
        torch.testing.assert_close(a.sum(-1), torch.ones(3, heads, 65))
    assert cls_attention(model, x).shape == (3, heads, 8, 8)
    maps = attention_maps(model, x)
    assert maps["heads"].shape == (3, heads, 32, 32) and maps["mean"].shape == (3, 32, 32)
    for m in (maps["heads"], maps["mean"]):
        assert m.min() >= 0 and torch.allclose(m.amax((-2, -1)), torch.ones(()))
    r = attention_rollout(model, x)
    assert r.shape == (3, 32, 32) and r.min() >= 0 and torch.allclose(r.amax((-2, -1)), torch.ones(()))
    assert not torch.is_grad_enabled() or not r.requires_grad


def test_cls_attention_is_dinos(clf, x):
    vit = _sharpen(ViT(img_size=32, patch_size=4, dim=32, depth=2, heads=2).eval())
    with torch.no_grad(): ref = vit.get_last_selfattention(x)[:, :, 0, 1:].reshape(3, 2, 8, 8)
    torch.testing.assert_close(cls_attention(vit, x), ref)
    torch.testing.assert_close(attentions(vit, x)[-1][:, :, 0, 1:].reshape(3, 2, 8, 8), ref)   # the block-by-block path
    # non-square images: h = H / p, w = W / p (positions interpolated by the ViT)
    assert cls_attention(vit, torch.randn(1, 3, 16, 24)).shape == (1, 2, 4, 6)
    # maps: nearest upsampling, each patch one value; divided by the max; mean taken before scaling
    maps = attention_maps(vit, x)
    up = ref.repeat_interleave(4, -2).repeat_interleave(4, -1)
    torch.testing.assert_close(maps["heads"], up / up.amax((-2, -1), keepdim=True))
    mean = up.mean(1)
    torch.testing.assert_close(maps["mean"], mean / mean.amax((-2, -1), keepdim=True))


def _dino_mask(attn: torch.Tensor, threshold: float) -> torch.Tensor:
    "facebookresearch/dino visualize_attention.py's threshold, line for line, on `(nh, N)` maps."
    val, idx = torch.sort(attn)
    val /= torch.sum(val, dim=1, keepdim=True)
    cumval = torch.cumsum(val, dim=1)
    th_attn = cumval > (1 - threshold)
    idx2 = torch.argsort(idx)
    for head in range(attn.shape[0]):
        th_attn[head] = th_attn[head][idx2[head]]
    return th_attn


def test_mask_matches_dino_and_brute_force():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(40, 3, 3, generator=g, dtype=torch.float64) ** 3          # continuous: no ties
    for keep in (0.1, 0.3, 0.6, 0.9, 0.99):
        m = attention_mask(a, keep)
        assert m.shape == a.shape and m.dtype == torch.bool
        torch.testing.assert_close(m.flatten(1), _dino_mask(a.flatten(1).clone(), keep))
        for i in range(len(a)):                                                # brute force: the smallest subset holding keep
            v = a[i].flatten().tolist(); total = sum(v)
            best = min(r for r in range(1, 10) for s in itertools.combinations(v, r) if sum(s) >= keep * total - 1e-12)
            kept = m[i].flatten()
            assert kept.sum() == best
            assert a[i].flatten()[kept].sum() >= keep * total - 1e-12
    assert attention_mask(a, 1.0).all()                                       # keep = 1: every (positive) value
    # ties are kept together: a nearest-upsampled map gives exactly the upsampled patch mask
    p = torch.rand(2, 4, 8, 8, generator=g)
    for keep in (0.3, 0.6):
        up = attention_mask(p.repeat_interleave(4, -2).repeat_interleave(4, -1), keep)
        assert torch.equal(up, attention_mask(p, keep).repeat_interleave(4, -2).repeat_interleave(4, -1))
    assert attention_mask(torch.tensor([[0.5, 0.25], [0.25, 0.0]]), 0.6).tolist() == [[True, True], [True, False]]
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="keep"): attention_mask(a, bad)


def _rollout_ref(atts, fusion="mean", discard=0.0):
    "Abnar & Zuidema's rollout as a plain numpy loop over images, layers and rows."
    out = []
    for b in range(atts[0].shape[0]):
        res = None
        for a in atts:
            a = a[b].double().numpy()
            f = {"mean": a.mean(0), "max": a.max(0), "min": a.min(0)}[fusion].copy()
            n = f.shape[0]
            for row in f:
                k = int(discard * (n - 1))
                if k: row[1 + np.argsort(row[1:], kind="stable")[:k]] = 0
            f = (f + np.eye(n)) / 2
            f = f / f.sum(1, keepdims=True)
            res = f if res is None else f @ res
        out.append(res[0, 1:])
    return np.stack(out)


@pytest.mark.parametrize("fusion,discard", [("mean", 0.0), ("max", 0.0), ("min", 0.0), ("mean", 0.5), ("max", 0.9)])
def test_rollout_against_hand_loop(x, fusion, discard):
    vit = _sharpen(ViT(img_size=32, patch_size=8, dim=32, depth=3, heads=2).eval(), scale=4.0)
    ref = torch.from_numpy(_rollout_ref(attentions(vit, x), fusion, discard)).float().reshape(3, 1, 4, 4)
    ref = F.interpolate(ref, size=(32, 32), mode="nearest")[:, 0]
    ref = ref / ref.amax((-2, -1), keepdim=True)
    torch.testing.assert_close(attention_rollout(vit, x, head_fusion=fusion, discard_ratio=discard), ref)


def test_rollout_one_layer_and_uniform(x):
    one = _sharpen(ViT(img_size=32, patch_size=4, dim=32, depth=1, heads=2).eval())
    # one layer: (A + I) / 2 adds only to the CLS column, so the map is the mean CLS attention
    torch.testing.assert_close(attention_rollout(one, x), attention_maps(one, x)["mean"])
    # hand-checked on a 3-token case (CLS + 2 patches), one head: A = [[.2, .5, .3], ...] -> CLS row .5*[.2,.5,.3] + .5*[1,0,0]
    a = torch.tensor([[[[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]]])
    from reprlab.attention import _rollout
    torch.testing.assert_close(_rollout([a])[0, 0], torch.tensor([0.6, 0.25, 0.15], dtype=torch.float64))
    two = _rollout([a, a])[0, 0]                                               # (A+I)/2 squared, row 0 by hand
    h = (a[0, 0].double() + torch.eye(3, dtype=torch.float64)) / 2
    torch.testing.assert_close(two, torch.tensor([sum(h[0, k] * h[k, j] for k in range(3)) for j in range(3)]))
    # uniform attention (q = k = 0) in every layer: a uniform map
    flat = ViT(img_size=32, patch_size=4, dim=32, depth=4, heads=2).eval()
    with torch.no_grad():
        for blk in flat.blocks: blk.attn.qkv.weight[:64] = 0
    torch.testing.assert_close(attention_rollout(flat, x), torch.ones(3, 32, 32))
    for bad in (dict(head_fusion="sum"), dict(discard_ratio=1.0), dict(discard_ratio=-0.1)):
        with pytest.raises(ValueError, match=next(iter(bad))): attention_rollout(flat, x, **bad)


def test_dino_byol_teachers_and_checkpoints(tmp_path, x):
    torch.manual_seed(0)
    dino = create_model("dino", **SMALL_DINO).eval()
    assert vit_of(dino) is dino.student.encoder and vit_of(dino, teacher=True) is dino.teacher.encoder
    _sharpen(dino.teacher.encoder, seed=3)                                    # the teacher now differs from the student
    t, s = cls_attention(dino, x, teacher=True), cls_attention(dino, x)
    torch.testing.assert_close(t, cls_attention(dino.teacher.encoder, x))
    assert not torch.allclose(t, s)
    assert attention_rollout(dino, x, teacher=True).shape == (3, 32, 32)
    byol = create_model("byol", encoder="vit_mini", proj_hidden=32, proj_dim=16, pred_hidden=32)
    assert vit_of(byol, teacher=True) is byol.teacher.encoder
    simclr = create_model("simclr", encoder="vit_mini", proj_hidden=32, proj_dim=16)
    assert vit_of(simclr) is simclr.encoder
    with pytest.raises(ValueError, match="no teacher"): vit_of(simclr, teacher=True)
    # a run's checkpoint: rebuilt by load_model, same maps
    path = save_checkpoint(dict(model=dino.state_dict(), model_spec=dino.spec), tmp_path / "last.pt")
    again = load_model(path)
    torch.testing.assert_close(attention_maps(again, x, teacher=True)["mean"], attention_maps(dino, x, teacher=True)["mean"])


@pytest.mark.parametrize("encoder", ["conv", "conv_res"])
def test_conv_encoders_refused(encoder, x):
    for model in (create_model("classifier", encoder=encoder), create_model("simclr", encoder=encoder, proj_hidden=32, proj_dim=16)):
        with pytest.raises(ValueError, match=r"need a ViT encoder .*got ConvEncoder.*--method=gradcam"):
            attention_maps(model, x)
        with pytest.raises(ValueError, match="--method=gradcam"): attention_rollout(model, x)
    dino = create_model("dino", encoder=encoder, out_dim=64, hidden_dim=32, bottleneck_dim=16, n_local=0)
    with pytest.raises(ValueError, match="--method=gradcam"): cls_attention(dino, x, teacher=True)


def test_bad_images(clf):
    with pytest.raises(ValueError, match="patch size 4"): cls_attention(clf, torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"images: expected a float \(B, C, H, W\)"): attention_maps(clf, torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="uint8"): attention_maps(clf, torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_save_attention(tmp_path, clf, x):
    maps = attention_maps(clf, x)
    maps["rollout"] = attention_rollout(clf, x)
    one = {k: v[0] for k, v in maps.items()}
    p = save_attention(x[0].sigmoid(), one, tmp_path / "a" / "att.png", title="t")
    p2 = save_attention(x[0], {k: v[:1] for k, v in maps.items() if k != "rollout"}, tmp_path / "b.png",
                        mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    with Image.open(p) as im, Image.open(p2) as im2:
        assert im.format == "PNG" and im2.format == "PNG"
        im.load(); im2.load()
        assert im.size[0] > im2.size[0]                                     # one more panel (rollout)
    assert sorted(q.name for q in tmp_path.rglob("*")) == ["a", "att.png", "b.png"]   # no temp files left
    with pytest.raises(ValueError, match="'heads'"): save_attention(x[0], {"mean": one["mean"]}, tmp_path / "c.png")
    with pytest.raises(ValueError, match="size"): save_attention(x[0, :, :16], one, tmp_path / "c.png")
