"""reprlab.segmentation: logits of the input's size for odd sizes, any channel / class count and both up-sampling modes;
stage_features equal to a hand-cut torchvision resnet and strictly shrinking for every registered conv family; gradients
reach the encoder and the decoder; the paper's U-Net has the parameter count of the closed formula (~31.0 M); a tiny
U-Net overfits one image / mask pair; registered models rebuild from a checkpoint; ViTs and bad arguments are refused."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reprlab.checkpoint import MODELS, create_model, load_model, save_checkpoint
from reprlab.encoders import TV_FAMILIES, create_encoder, list_encoders
from reprlab.segmentation import (EncoderUNet, UNet, _probe, n_parameters, register_segmentation_models,
                                  stage_features)


def unet_formula(in_chans: int, n_classes: int, depth: int, width: int, bilinear: bool) -> int:
    "Parameters of a norm=False (biased convs, no BatchNorm) U-Net, counted by hand from the architecture."
    c = [width * 2 ** i for i in range(depth + 1)]
    dconv = lambda a, b: 9 * a * b + b + 9 * b * b + b                       # two biased 3x3 convs a -> b -> b
    down = dconv(in_chans, c[0]) + sum(dconv(c[i - 1], c[i]) for i in range(1, depth + 1))
    up = sum((1 if bilinear else 4) * c[i] * c[i - 1] + c[i - 1] + dconv(2 * c[i - 1], c[i - 1]) for i in range(1, depth + 1))
    return down + up + c[0] * n_classes + n_classes


def test_paper_parameter_count():
    n = n_parameters(UNet(1, 2, depth=4, width=64, bilinear=False, norm=False))
    assert n == unet_formula(1, 2, 4, 64, False) == 31_030_658        # the paper's ~31 M
    assert abs(n - 31.0e6) < 0.1e6
    # with BatchNorm the convs lose their biases and each conv block gains 2 x channels
    c = [64 * 2 ** i for i in range(5)]
    conv_biases = sum(2 * ci for ci in c) + sum(2 * ci for ci in c[:4])
    assert n_parameters(UNet(1, 2, depth=4, width=64, bilinear=False)) == n - conv_biases + 2 * conv_biases == 31_036_546


@pytest.mark.parametrize("kw", [dict(in_chans=3, n_classes=5, depth=2, width=4, bilinear=True),
                                dict(in_chans=1, n_classes=1, depth=3, width=3, bilinear=False)])
def test_parameter_formula_small(kw):
    assert n_parameters(UNet(**kw, norm=False)) == unet_formula(**kw)


def test_n_parameters_trainable():
    m = nn.Linear(4, 3)
    m.weight.requires_grad_(False)
    assert n_parameters(m) == 15 and n_parameters(m, trainable=True) == 3


@pytest.mark.parametrize("bilinear", [True, False])
@pytest.mark.parametrize("in_chans,n_classes", [(1, 1), (3, 3), (1, 3)])
def test_unet_output_size(bilinear, in_chans, n_classes):
    torch.manual_seed(0)
    net = UNet(in_chans, n_classes, depth=3, width=4, bilinear=bilinear).eval()
    for h, w in [(37, 53), (64, 64), (1, 1), (5, 130)]:
        with torch.no_grad(): y = net(torch.randn(2, in_chans, h, w))
        assert y.shape == (2, n_classes, h, w) and torch.isfinite(y).all()


def test_unet_padding_is_cropped_back():
    "Padding to a multiple of 2**depth and cropping back: an input already a multiple goes through unpadded."
    torch.manual_seed(0)
    net = UNet(1, 1, depth=2, width=4).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        full = net(x)
        # a 13x13 input is reflect-padded to 16x16 (1 px top/left, 2 px bottom/right) and cropped back
        small = net(x[..., :13, :13])
        padded = F.pad(x[..., :13, :13], (1, 2, 1, 2), mode="reflect")
        assert torch.allclose(small, net(padded)[..., 1:14, 1:14], atol=1e-6)
    assert full.shape == (1, 1, 16, 16)


def test_stage_features_resnet18_reference():
    "The stages of a resnet18 are relu, layer1..layer4 of torchvision's model, at strides 2, 4, 8, 16, 32."
    torch.manual_seed(0)
    enc = create_encoder("resnet18").eval()
    f = enc.features
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = stage_features(enc, x)
        ref = [f[:3](x), f[:5](x), f[:6](x), f[:7](x), f(x)]
    assert [t.shape[-1] for t in got] == [32, 16, 8, 4, 2]
    for a, b in zip(got, ref): assert torch.equal(a, b)
    with torch.no_grad():
        got = stage_features(create_encoder("resnet18", cifar_stem=True), torch.randn(1, 3, 32, 32))
    assert [t.shape[-1] for t in got] == [32, 16, 8, 4]


def test_stage_features_conv():
    enc = create_encoder("conv").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        got = stage_features(enc, x)
        ref, y = [], x
        for b in enc.blocks: y = b(y); ref.append(y)
    for a, b in zip(got, ref): assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["conv", "conv_res", "resnet18", "mobilenet_v2", "efficientnet_b0"])
def test_stage_resolutions_strictly_decrease(name):
    enc = create_encoder(name).eval()
    with torch.no_grad(): feats = stage_features(enc, torch.randn(1, 3, 64, 64))
    sizes = [t.shape[-1] for t in feats]
    assert len(sizes) >= 4 and all(a > b for a, b in zip(sizes, sizes[1:])), sizes


def test_probe_restores_training_flags():
    enc = create_encoder("resnet18").train()
    enc.features[1].eval()
    _probe(enc)
    assert enc.training and not enc.features[1].training and enc.features[4].training


@pytest.mark.parametrize("name,kw", [("conv", {}), ("resnet18", dict(cifar_stem=True)), ("resnet18", dict(cifar_stem=False)),
                                     ("mobilenet_v2", {}), ("efficientnet_b0", {})])
@pytest.mark.parametrize("bilinear", [True, False])
def test_encoder_unet_output_size(name, kw, bilinear):
    torch.manual_seed(0)
    m = EncoderUNet(name, n_classes=3, bilinear=bilinear, **kw).eval()
    for h, w in [(37, 53), (32, 32), (64, 48)]:
        with torch.no_grad(): assert m(torch.randn(2, 3, h, w)).shape == (2, 3, h, w)


def test_encoder_unet_one_channel_in_and_out():
    m = EncoderUNet("resnet18", n_classes=1, in_chans=1, cifar_stem=True).eval()
    with torch.no_grad(): assert m(torch.randn(1, 1, 33, 31)).shape == (1, 1, 33, 31)


def test_encoder_unet_decoder_widths():
    m = EncoderUNet("resnet18", decoder_width=(64, 32, 16, 8, 4))
    assert len(m.decoder) == 5 and m.head.in_channels == 4
    m = EncoderUNet("conv", decoder_width=(64, 32, 16, 8, 4))          # 4 stages: the last 4 widths
    assert len(m.decoder) == 4 and [b.conv[1][0].out_channels for b in m.decoder] == [32, 16, 8, 4]


@pytest.mark.parametrize("name", ["conv", "resnet18"])
def test_gradients_reach_encoder_and_decoder(name):
    torch.manual_seed(0)
    m = EncoderUNet(name, n_classes=2, decoder_width=(32, 16, 16, 8, 8))
    m(torch.randn(2, 3, 32, 32)).square().mean().backward()
    for part in (m.encoder, m.decoder, m.head):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0
    # the first conv of the encoder (farthest from the loss) gets a gradient
    first = next(mod for mod in m.encoder.modules() if isinstance(mod, nn.Conv2d))
    assert first.weight.grad.abs().sum() > 0


def test_vit_and_bad_arguments_refused():
    with pytest.raises(ValueError, match="U-Net needs a conv encoder"): EncoderUNet("vit_mini")
    with pytest.raises(ValueError, match="U-Net needs a conv encoder"): stage_features(create_encoder("vit_mini"), torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="encoder must be a conv encoder"): stage_features(nn.Linear(2, 2), torch.randn(1, 2))
    with pytest.raises(ValueError, match="decoder_width must be at least 4"): EncoderUNet("conv", decoder_width=(8, 8, 8))
    with pytest.raises(ValueError, match="n_classes must be an integer >= 1, got 0"): EncoderUNet("conv", n_classes=0)
    with pytest.raises(ValueError, match=r"in_chans=1 but the encoder's first conv takes 3"): EncoderUNet(create_encoder("conv"), in_chans=1)
    with pytest.raises(ValueError, match="width must be an integer >= 1, got 0"): UNet(width=0)
    with pytest.raises(ValueError, match=r"x must be a \(B, 1, H, W\) tensor, got \(1, 3, 8, 8\)"): UNet(depth=1, width=2)(torch.randn(1, 3, 8, 8))


def test_overfits_one_pair():
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(16.), torch.arange(16.), indexing="ij")
    mask = (((yy - 7) ** 2 + (xx - 9) ** 2) < 20).float()[None, None]
    img = mask + 0.3 * torch.randn_like(mask)
    net = UNet(depth=2, width=8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = F.binary_cross_entropy_with_logits(net(img), mask)
        opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    with torch.no_grad(): acc = ((net.eval()(img) > 0).float() == mask).float().mean()
    assert acc > 0.95


def test_registry_and_checkpoint(tmp_path):
    register_segmentation_models()                                     # idempotent
    assert {"unet", "encoder_unet"} <= set(MODELS)
    u = create_model("unet", in_chans=3, n_classes=2, depth=2, width=4)
    assert isinstance(u, UNet) and u.spec == dict(name="unet", kwargs=dict(in_chans=3, n_classes=2, depth=2, width=4))
    m = create_model("encoder_unet", encoder="resnet18", n_classes=2, cifar_stem=True)
    assert isinstance(m.encoder, nn.Module) and m.spec["kwargs"]["cifar_stem"] is True
    for model in (u, m):
        save_checkpoint(dict(model=model.state_dict(), model_spec=model.spec), tmp_path / "m.pt")
        back = load_model(tmp_path / "m.pt")
        x = torch.randn(1, 3, 24, 20)
        with torch.no_grad(): assert torch.equal(back(x), model.eval()(x))
    with pytest.raises(ValueError, match="registered encoder name"): create_model("encoder_unet", encoder=create_encoder("conv"))


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_encoders() if not n.startswith("vit")])
def test_every_conv_family(name):
    "Every registered conv family: strictly shrinking stages at 64 px, and an EncoderUNet of the input's size."
    enc = create_encoder(name).eval()
    with torch.no_grad(): sizes = [t.shape[-1] for t in stage_features(enc, torch.randn(1, 3, 64, 64))]
    assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes
    m = EncoderUNet(enc, bilinear=False).eval()
    with torch.no_grad(): assert m(torch.randn(1, 3, 37, 53)).shape == (1, 1, 37, 53)
