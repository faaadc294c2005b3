"""reprlab.explain against references: pytorch-grad-cam's GradCAM / GradCAMPlusPlus maps (resnet18 and the conv encoder),
a model whose Grad-CAM map is known by hand, occlusion against a brute-force loop, LIME against the `lime` package on the
same samples, determinism across processes, hooks and memory after many calls, and the errors."""
from __future__ import annotations

import copy
import gc
import os
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reprlab.encoders import TV_FAMILIES, ConvEncoder, create_encoder, list_encoders
from reprlab.explain import (CamHooks, ClassTarget, EmbeddingTarget, SimilarityTarget, encoder_of, find_target_layer,
                             get_layer, gradcam, lime, map_similarity, occlusion, overlay, save_explanation, segment)
from reprlab.heads import Classifier, LinearHead, classifier
from reprlab.methods import DINO
from reprlab.testing import shared_data

CIFAR_MEAN, CIFAR_STD = torch.tensor([0.491, 0.482, 0.447]).view(3, 1, 1), torch.tensor([0.247, 0.243, 0.261]).view(3, 1, 1)


@pytest.fixture(scope="module")
def images64() -> torch.Tensor:
    "8 CIFAR-10 test images (else smooth random ones) upsampled to 64 px, float in [0, 1]."
    p = shared_data("cifar10-test.npz")
    if p is not None: x = torch.from_numpy(np.load(p)["images"][:8]).permute(0, 3, 1, 2).float() / 255
    else: x = F.interpolate(torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)), size=32, mode="bilinear")
    return F.interpolate(x, size=64, mode="bilinear", align_corners=False).clamp(0, 1)


def _model(name: str, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return classifier(name, n_classes=10, encoder_kwargs=dict(cifar_stem=True) if name in TV_FAMILIES else None).eval()


def _pearson(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64).reshape(len(a), -1), np.asarray(b, np.float64).reshape(len(b), -1)
    return np.array([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)])


# --- Grad-CAM against pytorch-grad-cam ------------------------------------------------------------------------------

@pytest.mark.parametrize("plus_plus", [False, True], ids=["gradcam", "gradcam++"])
@pytest.mark.parametrize("name", ["resnet18", "conv"])
def test_gradcam_matches_pytorch_grad_cam(name, plus_plus, images64):
    pgc = pytest.importorskip("pytorch_grad_cam", reason="pytorch-grad-cam (pip install grad-cam, a dev requirement) is not installed")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    m = _model(name)
    x = ((images64 - CIFAR_MEAN) / CIFAR_STD)[:4 if name == "resnet18" else 8]
    lname, layer = find_target_layer(m)
    assert lname == {"resnet18": "encoder.features.7.1", "conv": "encoder.blocks.3"}[name]
    for tg in (None, 3):                                               # the predicted classes, then class 3 for all
        ours, out = gradcam(m, x, targets=tg, layer=lname, plus_plus=plus_plus)
        classes = out.argmax(1).tolist() if tg is None else [tg] * len(x)
        theirs_model = copy.deepcopy(m)                                  # pytorch-grad-cam leaves parameter gradients behind
        cam_cls = pgc.GradCAMPlusPlus if plus_plus else pgc.GradCAM
        with cam_cls(model=theirs_model, target_layers=[get_layer(theirs_model, lname)]) as cam:
            theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])
        assert ours.shape == theirs.shape == (len(x), 64, 64)
        flat = theirs.reshape(len(x), -1).max(1) == 0                   # no positive evidence for the class: both all zero
        assert (ours[torch.from_numpy(flat)] == 0).all() and flat.sum() < len(x) // 2
        assert _pearson(ours[~flat], theirs[~flat]).min() >= 0.99
        np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-4)


def test_gradcam_similarity_target_matches_pytorch_grad_cam(images64):
    pgc = pytest.importorskip("pytorch_grad_cam", reason="pytorch-grad-cam (pip install grad-cam) is not installed")
    torch.manual_seed(0)
    enc = create_encoder("conv").eval()
    x = (images64 - CIFAR_MEAN) / CIFAR_STD
    with torch.no_grad(): ref = enc(x.flip(0))                         # each image against another one
    ours, emb = gradcam(enc, x, targets=SimilarityTarget(ref))
    theirs_enc = copy.deepcopy(enc)
    with pgc.GradCAM(model=theirs_enc, target_layers=[theirs_enc.blocks[3]]) as cam:
        theirs = cam(input_tensor=x, targets=[lambda out, r=r: F.cosine_similarity(out, r, dim=0) for r in ref])   # per image, (D,)
    assert _pearson(ours, theirs).min() >= 0.99
    torch.testing.assert_close(emb, enc(x).detach())


# --- Grad-CAM by hand, contract, state -------------------------------------------------------------------------------

class _Tiny(nn.Module):
    "A 1x1 conv making channels x and -x of a one-channel image, average pooled: Grad-CAM's map is known in closed form."
    def __init__(self):
        super().__init__()
        self.conv, self.num_features = nn.Conv2d(1, 2, 1, bias=False), 2
        with torch.no_grad(): self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    def forward_features(self, x): return self.conv(x)
    def forward(self, x): return self.forward_features(x).mean((2, 3))


def _tiny() -> Classifier:
    m = Classifier(_Tiny(), LinearHead(2, 2))
    with torch.no_grad(): m.head.fc.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.5]])); m.head.fc.bias.fill_(0.3)
    return m


@pytest.mark.parametrize("plus_plus", [False, True])
def test_gradcam_by_hand(plus_plus):
    # score_0 = 2 mean(A_0) + 0.3, A_0 = x: gradient 2 / (h w) on channel 0, 0 on channel 1, so the map is relu(x) / max.
    # Grad-CAM++'s channel weight is then (h w) g / (2 + g sum(x)) > 0 for these images: the same map.
    x = torch.randn(5, 1, 7, 7, generator=torch.Generator().manual_seed(1))
    maps, out = gradcam(_tiny(), x, targets=0, plus_plus=plus_plus)
    want = x[:, 0].clamp_min(0)
    torch.testing.assert_close(maps, want / want.amax((1, 2), keepdim=True))
    torch.testing.assert_close(out[:, 0], 2 * x.mean((1, 2, 3)) + 0.3)
    maps1, _ = gradcam(_tiny(), x, targets=[1] * 5, plus_plus=plus_plus)     # class 1 looks at A_1 = -x
    neg = (-x[:, 0]).clamp_min(0)
    torch.testing.assert_close(maps1, neg / neg.amax((1, 2), keepdim=True))


def test_gradcam_all_zero_map_stays_zero():
    m = _tiny()
    maps, _ = gradcam(m, -torch.rand(2, 1, 5, 5) - 0.1, targets=0)   # x < 0: relu(x) = 0 everywhere
    assert maps.abs().max() == 0


EXPECTED_LAYER = {"conv": "blocks.3", "conv_res": "blocks.7", "conv_wide": "blocks.3", "resnet18": "features.7.1",
                  "resnet34": "features.7.2", "resnet50": "features.7.2", "resnext50_32x4d": "features.7.2",
                  "mobilenet_v2": "features.0.18", "mobilenet_v3_small": "features.0.12", "mobilenet_v3_large": "features.0.16",
                  "densenet121": "features", "efficientnet_b0": "features.0.8", "efficientnet_v2_s": "features.0.7",
                  "convnext_tiny": "features.0.7.2"}


def test_every_conv_family_has_its_layer():
    assert {n for n in list_encoders() if not n.startswith("vit")} == set(EXPECTED_LAYER)   # a new family needs a row here


@pytest.mark.parametrize("name", ["conv", "conv_res", "resnet18", "mobilenet_v3_small"])
def test_gradcam_contract(name):
    m = _model(name).train()
    m.encoder.requires_grad_(False)                                   # a frozen encoder stays frozen, the head trainable
    lname, layer = find_target_layer(m)
    assert lname == "encoder." + EXPECTED_LAYER[name]
    x = torch.randn(3, 3, 32, 32)
    for pp in (False, True):
        maps, out = gradcam(m, x, plus_plus=pp)
        assert maps.shape == (3, 32, 32) and maps.dtype == torch.float32 and maps.device.type == "cpu"
        assert maps.min() >= 0 and maps.max() <= 1 and out.shape == (3, 10)
    assert m.training and all(mod.training for mod in m.modules())
    assert not any(p.requires_grad for p in m.encoder.parameters()) and all(p.requires_grad for p in m.head.parameters())
    assert all(p.grad is None for p in m.parameters())                # no gradients left on the parameters
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_LAYER))
def test_gradcam_every_family(name):
    torch.manual_seed(0)
    enc = create_encoder(name)
    assert find_target_layer(enc)[0] == EXPECTED_LAYER[name]
    maps, emb = gradcam(enc, torch.randn(2, 3, 64, 64))               # an encoder: EmbeddingTarget by default
    assert maps.shape == (2, 64, 64) and 0 <= maps.min() and maps.max() <= 1 and emb.shape == (2, enc.num_features)


def test_gradcam_under_no_grad_and_inference_mode():
    m, x = _model("conv"), torch.randn(2, 3, 32, 32)
    want = gradcam(m, x)[0]
    with torch.no_grad(): torch.testing.assert_close(gradcam(m, x)[0], want)
    with torch.inference_mode(): xi = x.clone()
    with torch.inference_mode(): torch.testing.assert_close(gradcam(m, xi)[0], want)


def test_gradcam_is_per_image():
    m, x = _model("conv"), torch.randn(6, 3, 32, 32)
    torch.testing.assert_close(gradcam(m, x)[0][2:4], gradcam(m, x[2:4])[0], atol=1e-5, rtol=1e-4)


def test_gradcam_methods_and_teacher():
    torch.manual_seed(0)
    dino = DINO(create_encoder("conv"), out_dim=16)
    x = torch.randn(2, 3, 32, 32)
    maps, emb = gradcam(dino, x)
    assert maps.shape == (2, 32, 32) and emb.shape == (2, 256)
    with pytest.raises(ValueError, match="teacher=True"):
        gradcam(dino, x, layer="teacher.encoder.blocks.3")
    t = encoder_of(dino, teacher=True)
    assert t is dino.teacher.encoder and gradcam(t, x)[0].shape == (2, 32, 32)
    assert find_target_layer(dino, teacher=True)[0] == "teacher.encoder.blocks.3"


def test_gradcam_vit_tokens_with_a_named_layer():
    torch.manual_seed(0)
    vit = create_encoder("vit_mini")
    maps, _ = gradcam(vit, torch.randn(2, 3, 32, 32), layer="blocks.2")   # (B, 1 + 64, D) tokens as an 8 x 8 grid
    assert maps.shape == (2, 32, 32) and maps.max() == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gradcam_on_the_models_device():
    m, x = _model("conv"), torch.randn(4, 3, 32, 32)
    want, out = gradcam(m, x)
    got, out_gpu = gradcam(m.cuda(), x)                               # images on the CPU, model on the GPU
    assert got.device.type == "cpu" and out_gpu.device.type == "cpu"
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)
    assert next(m.parameters()).is_cuda


# --- targets -----------------------------------------------------------------------------------------------------------

def test_targets():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5], [0.0, 0.0, 4.0]])
    torch.testing.assert_close(ClassTarget()(logits), torch.tensor([2.0, 3.0, 4.0]))
    torch.testing.assert_close(ClassTarget(0)(logits), logits[:, 0])
    torch.testing.assert_close(ClassTarget(np.array([2, 2, 1]))(logits), torch.tensor([-1.0, 0.5, 0.0]))
    torch.testing.assert_close(ClassTarget(torch.tensor([1, 0, 0])).take(torch.tensor([2, 0])).index, torch.tensor([0, 1]))
    emb, ref = torch.randn(3, 8), torch.randn(8)
    torch.testing.assert_close(SimilarityTarget(ref)(emb), F.cosine_similarity(emb, ref[None].expand(3, -1)))
    refs = torch.randn(3, 8)
    torch.testing.assert_close(SimilarityTarget(refs)(emb), torch.stack([F.cosine_similarity(e, r, 0) for e, r in zip(emb, refs)]))
    torch.testing.assert_close(EmbeddingTarget()(emb), emb.norm(dim=1))
    torch.testing.assert_close(EmbeddingTarget(refs).take(torch.tensor([1]))(emb[:1]), (emb[0] @ refs[1] / refs[1].norm())[None])
    for bad in (lambda: ClassTarget(1.5), lambda: ClassTarget(True), lambda: ClassTarget([[0, 1]]),
                lambda: ClassTarget([0, 1])(logits), lambda: ClassTarget(5)(logits), lambda: ClassTarget()(emb[0]),
                lambda: SimilarityTarget(torch.ones(2, 2, 2)), lambda: SimilarityTarget(torch.ones(5))(emb),
                lambda: SimilarityTarget(torch.ones(2, 8))(emb)):
        with pytest.raises(ValueError): bad()


def test_own_embedding_similarity_warns_and_gives_zero_maps():
    torch.manual_seed(0)
    enc = create_encoder("conv").eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad(): z = enc(x)
    ref = z.clone(); ref[1] = torch.randn(256)                         # image 1 against something else
    with pytest.warns(UserWarning, match="EmbeddingTarget"):
        maps, _ = gradcam(enc, x, targets=SimilarityTarget(ref))
    assert maps[0].max() == 0 and maps[2].max() == 0 and maps[1].max() == 1
    assert (gradcam(enc, x, targets=EmbeddingTarget())[0].amax((1, 2)) == 1).all()


# --- hooks and memory -------------------------------------------------------------------------------------------------

def test_hooks_removed_even_after_an_error():
    m = _model("conv")
    layer = get_layer(m, "encoder.blocks.3")
    with pytest.raises(RuntimeError, match="boom"):
        with CamHooks(layer):
            assert len(layer._forward_hooks) == 1
            raise RuntimeError("boom")
    assert len(layer._forward_hooks) == 0
    m.train()
    def bad_target(out): raise RuntimeError("target failed")
    with pytest.raises(RuntimeError, match="target failed"):
        gradcam(m, torch.randn(2, 3, 32, 32), targets=bad_target)
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())
    assert m.training and all(p.requires_grad for p in m.parameters())


def _rss_mib() -> float:
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS from /proc (Linux)")
def test_memory_does_not_grow_over_1000_calls():
    torch.manual_seed(0)
    m = Classifier(ConvEncoder(channels=(4, 8), strides=(1, 2)), LinearHead(8, 3))
    x = torch.randn(2, 3, 8, 8)
    for _ in range(100): gradcam(m, x)                               # warm-up: allocator pools, caches
    gc.collect()
    rss0 = _rss_mib()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for i in range(1000): gradcam(m, x, plus_plus=bool(i % 2))
    gc.collect()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(snap0, "filename"))
    tracemalloc.stop()
    assert grown < 256 * 1024, f"Python allocations grew by {grown / 1024:.0f} KiB over 1,000 calls"
    assert _rss_mib() - rss0 < 20, f"RSS grew by {_rss_mib() - rss0:.1f} MiB over 1,000 calls"
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())


# --- occlusion ---------------------------------------------------------------------------------------------------------

class _RegionMean(nn.Module):
    "Outputs (B, 2): the mean of channel 1 over rows 6-13, columns 10-17, and its negative."
    def forward(self, x):
        s = x[:, 1, 6:14, 10:18].mean((1, 2))
        return torch.stack([s, -s], 1)


def _occlusion_brute_force(model, img, target, patch, stride, baseline):
    "Every patch position one at a time in Python: the mean drop per pixel, positive part, over its maximum."
    h, w = img.shape[-2:]
    s0 = model(img[None])[0, target]
    starts = lambda n: sorted(set(list(range(0, n - patch + 1, stride)) + [n - patch]))
    tot, cnt = torch.zeros(h, w), torch.zeros(h, w)
    for y in starts(h):
        for x in starts(w):
            o = img.clone(); o[:, y:y + patch, x:x + patch] = baseline
            tot[y:y + patch, x:x + patch] += s0 - model(o[None])[0, target]; cnt[y:y + patch, x:x + patch] += 1
    m = (tot / cnt).clamp_min(0)
    return m / m.max() if m.max() > 0 else m


def test_occlusion_against_brute_force():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 24, 28) + 0.5
    got = occlusion(_RegionMean(), x, targets=0, patch=5, stride=3, batch_size=7)
    for i in range(3): torch.testing.assert_close(got[i], _occlusion_brute_force(_RegionMean(), x[i], 0, 5, 3, 0.0))
    peak = np.unravel_index(int(got[0].argmax()), got[0].shape)
    assert 6 <= peak[0] < 14 and 10 <= peak[1] < 18                    # the map peaks in the region the model reads
    assert got[:, :, 22:].max() == 0                                   # patches that miss the region change nothing
    torch.testing.assert_close(occlusion(_RegionMean(), x, targets=0, patch=5, stride=3, batch_size=1000), got)
    assert occlusion(_RegionMean(), x, targets=1, patch=5, stride=3).max() == 0   # occluding only raises class 1: no evidence


def test_occlusion_targets_fixed_from_the_clean_image():
    m = _model("conv")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(): pred = m(x).argmax(1)
    torch.testing.assert_close(occlusion(m, x, patch=8, stride=8), occlusion(m, x, targets=pred, patch=8, stride=8))
    enc = m.encoder
    with torch.no_grad(): ref = enc(x.flip(0))
    maps = occlusion(enc, x, targets=SimilarityTarget(ref), patch=8, stride=8, baseline=torch.zeros(3), batch_size=5)
    assert maps.shape == (2, 32, 32) and 0 <= maps.min() and maps.max() <= 1
    assert occlusion(enc, x, patch=8, stride=8).shape == (2, 32, 32)    # EmbeddingTarget by default
    for kw, msg in ((dict(patch=40), "larger than the images"), (dict(stride=0), "stride"), (dict(batch_size=0), "batch_size"),
                    (dict(baseline=torch.zeros(2)), "baseline")):
        with pytest.raises(ValueError, match=msg): occlusion(m, x, **kw)


# --- LIME --------------------------------------------------------------------------------------------------------------

def _predict_for(m):
    def predict(x):                                                   # raw pixels in [0, 1] -> probabilities
        with torch.no_grad(): return m((x - CIFAR_MEAN) / CIFAR_STD).softmax(1)
    return predict


def test_lime_matches_the_lime_package_on_the_same_samples(images64):
    lime_image = pytest.importorskip("lime.lime_image", reason="lime (pip install lime, a bench requirement) is not installed")
    os.environ.setdefault("TQDM_DISABLE", "1")
    m = _model("conv")
    img = images64[0, :, ::2, ::2]                                    # 32 px: quick
    ours = lime(_predict_for(m), img, num_samples=200, n_segments=20, seed=3)

    class Replay(np.random.RandomState):
        "Hands lime our on/off samples (lime then sets the first one to all on, as ours is)."
        def randint(self, low, high=None, size=None): return 0 if size is None else ours["samples"].astype(np.int64).ravel()

    predict = _predict_for(m)
    theirs = lime_image.LimeImageExplainer(random_state=Replay(0)).explain_instance(
        img.permute(1, 2, 0).double().numpy(), lambda a: predict(torch.from_numpy(a).float().permute(0, 3, 1, 2)).numpy(),
        labels=(ours["target"],), top_labels=None, hide_color=None, num_samples=200, batch_size=10,
        segmentation_fn=lambda _: ours["segments"])
    w = np.zeros_like(ours["weights"])
    for j, v in theirs.local_exp[ours["target"]]: w[j] = v
    scale = np.abs(w).max()
    np.testing.assert_allclose(ours["weights"] / scale, w / scale, atol=1e-5)
    assert ours["intercept"] == pytest.approx(theirs.intercept[ours["target"]], abs=1e-5 * max(1.0, scale))
    assert ours["score"] == pytest.approx(theirs.score, abs=1e-5)


def _board():
    img = torch.full((3, 32, 32), 0.3); img[2, 16:] = 0.8
    img[0, :16, :16] = (torch.arange(16)[:, None] + torch.arange(16)).remainder(2).float()   # a checkerboard quadrant
    return img, np.arange(4).repeat(16).reshape(2, 32).repeat(16, 0)


def test_lime_finds_the_one_superpixel_a_toy_classifier_reads():
    img, quads = _board()
    def predict(x):                                                   # class 1: the contrast of the top left quadrant
        p1 = 2 * (x[:, 0, :16, :16] - 0.5).abs().mean((1, 2))
        return torch.stack([1 - p1, p1], 1)
    r = lime(predict, img, target=1, num_samples=400, segmenter=quads, top_k=2)
    assert int(np.argmax(r["weights"])) == 0 and r["weights"][0] > 0.9 and np.abs(r["weights"][1:]).max() < 0.03
    assert r["top"] == [0] and np.array_equal(r["mask"], quads == 0)   # top_k keeps only positive weights
    assert r["map"].shape == (32, 32) and r["map"].max() == 1 and r["map"].min() >= -1
    assert r["prediction"] == pytest.approx(1.0) and r["score"] > 0.99


def test_lime_seeded():
    m = _model("conv")
    img, _ = _board()
    a, b = (lime(_predict_for(m), img, num_samples=120, batch_size=b_s, seed=7) for b_s in (256, 32))
    np.testing.assert_array_equal(a["weights"], b["weights"]); np.testing.assert_array_equal(a["map"], b["map"])
    c = lime(_predict_for(m), img, num_samples=120, seed=8)
    assert not np.array_equal(a["samples"], c["samples"]) and not np.array_equal(a["weights"], c["weights"])


def test_lime_seeded_across_processes():
    img, _ = _board()
    code = ("import numpy as np, torch; from reprlab.explain import lime; img = torch.load({p!r}); "
            "r = lime(lambda x: torch.stack([x[:, 0].mean((1, 2)), x[:, 1].amax((1, 2))], 1), img, num_samples=150, seed=11); "
            "print(r['weights'].tobytes().hex())")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "img.pt"); torch.save(img, p)
        other = subprocess.run([sys.executable, "-c", code.format(p=p)], capture_output=True, text=True, check=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.strip()
    r = lime(lambda x: torch.stack([x[:, 0].mean((1, 2)), x[:, 1].amax((1, 2))], 1), img, num_samples=150, seed=11)
    assert other == r["weights"].tobytes().hex()                      # another process, the same bytes


def test_lime_and_segment_errors():
    img, quads = _board()
    good = lambda x: torch.ones(len(x), 2) / 2
    for kw, msg in ((dict(target=2), r"class index in \[0, 2\)"), (dict(num_samples=1), "num_samples"),
                    (dict(kernel_width=0), "kernel_width"), (dict(segmenter=quads[:8]), "segmenter"),
                    (dict(segmenter=quads.astype(float)), "segmenter"), (dict(segmenter="felzenszwalb"), "slic")):
        with pytest.raises(ValueError, match=msg): lime(good, img, num_samples=kw.pop("num_samples", 20), **kw)
    with pytest.raises(ValueError, match="predict"): lime(lambda x: torch.ones(len(x)), img, num_samples=20)
    with pytest.raises(ValueError, match="image"): lime(good, torch.rand(5, 32, 32), num_samples=20)


def test_segment():
    img, _ = _board()
    s = segment(img, n_segments=8, compactness=5.0)
    assert s.shape == (32, 32) and s.dtype == np.int64 and set(np.unique(s)) == set(range(s.max() + 1))
    np.testing.assert_array_equal(segment((img * 255).round().to(torch.uint8), n_segments=8, compactness=5.0),
                                  segment(np.round(img.double().numpy() * 255) / 255, n_segments=8, compactness=5.0))
    q = segment(img.permute(1, 2, 0).numpy(), "quickshift")
    assert q.shape == (32, 32) and np.array_equal(q, segment(img, "quickshift"))
    assert segment(img[:1], n_segments=4).shape == (32, 32)           # one channel


def test_segment_without_scikit_image(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.segmentation", None)
    with pytest.raises(ImportError, match=r"pip install reprlab\[explain\]"): segment(torch.rand(3, 16, 16))


# --- errors ------------------------------------------------------------------------------------------------------------

def test_errors():
    m = _model("conv")
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="needs a conv layer.*layer=.*attention"):
        gradcam(create_encoder("vit_mini"), x)
    with pytest.raises(ValueError, match="needs a conv layer"):
        find_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)))
    with pytest.raises(ValueError, match=r"'encoder\.blocks\.3'"):     # the close match is named
        gradcam(m, x, layer="encoder.block.3")
    with pytest.raises(ValueError, match="images"): gradcam(m, x[0])
    with pytest.raises(ValueError, match="images"): gradcam(m, (x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="layer"): gradcam(m, x, layer=3)
    with pytest.raises(ValueError, match="no spatial map"): gradcam(m, x, layer="head")
    with pytest.raises(ValueError, match="one score per image"): gradcam(m, x, targets=lambda out: out)
    with pytest.raises(ValueError, match="targets"): gradcam(m, x, targets="cat")
    relu = nn.ReLU()
    twice = Classifier(nn.Sequential(nn.Conv2d(3, 4, 3), relu, nn.Conv2d(4, 4, 3), relu, nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                       LinearHead(4, 2))
    with pytest.raises(ValueError, match="ran 2 times"): gradcam(twice, x, layer="encoder.1")


# --- figures -----------------------------------------------------------------------------------------------------------

def test_overlay_figures_and_similarity(tmp_path):
    import matplotlib.pyplot as plt
    from PIL import Image
    img, quads = _board()
    heat = torch.linspace(0, 1, 32 * 32).view(32, 32)
    ov = overlay(img, heat, alpha=0.0)
    np.testing.assert_allclose(ov, img.permute(1, 2, 0).numpy(), atol=1e-6)   # alpha 0: the image itself
    assert overlay((img * 255).to(torch.uint8).permute(1, 2, 0).numpy(), heat).shape == (32, 32, 3)
    assert overlay(img[:1], heat - 0.5).shape == (32, 32, 3)                  # grey image, signed map
    for name, h, mask in (("cam.png", heat, None), ("lime.png", heat * 2 - 1, quads == 0)):
        p = save_explanation(img, h, tmp_path / name, title=name, mask=mask)
        with Image.open(p) as im: assert im.format == "PNG" and im.size[0] > 2 * im.size[1]
    assert plt.get_fignums() == []
    with pytest.raises(ValueError, match="mask"): save_explanation(img, heat, tmp_path / "x.png", mask=np.ones((4, 4)))
    rng = np.random.default_rng(0)
    a, b = rng.random((16, 16)), rng.random((16, 16))
    ranks = lambda v: np.argsort(np.argsort(v.ravel()))
    assert map_similarity(a, b) == pytest.approx(np.corrcoef(ranks(a), ranks(b))[0, 1])
    assert map_similarity(torch.from_numpy(a), a ** 3) == pytest.approx(1.0)
    assert np.isnan(map_similarity(np.zeros((4, 4)), a[:4, :4]))
    with pytest.raises(ValueError, match="shapes"): map_similarity(a, b[:8])
