"The encoder contract over the whole registry: shapes, num_features, 1 and 3 channels, batch size 1, train and eval."
from __future__ import annotations

import importlib.util

import pytest
import torch
import torchvision
from torch import nn

from reprlab.encoders import TV_FAMILIES, create_encoder, encoder_info, list_encoders

HEAVY = {"resnet50", "resnext50_32x4d", "densenet121", "efficientnet_v2_s", "convnext_tiny", "vit_tiny"}
FAST = [n for n in list_encoders() if n not in HEAVY]


def _check(enc, x, pool="avg"):
    f = enc.forward_features(x)
    assert f.ndim in (3, 4) and f.shape[0] == x.shape[0]
    out = enc(x)
    assert out.shape == (x.shape[0], enc.num_features) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", FAST)
def test_contract_fast(name):
    torch.manual_seed(0)
    enc = create_encoder(name)
    _check(enc.train(), torch.randn(2, 3, 32, 32))
    _check(enc.eval(), torch.randn(1, 3, 32, 32))                         # batch size 1 in eval mode


@pytest.mark.parametrize("name", sorted(HEAVY))
def test_contract_heavy_eval_batch1(name):
    with torch.no_grad(): _check(create_encoder(name).eval(), torch.randn(1, 3, 32, 32))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HEAVY))
def test_contract_heavy_train(name):
    _check(create_encoder(name).train(), torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("name", ["conv", "resnet18", "mobilenet_v2", "efficientnet_b0", "vit_mini"])
def test_one_channel_and_pooling(name):
    enc = create_encoder(name, in_chans=1).eval()
    with torch.no_grad(): _check(enc, torch.randn(2, 1, 32, 32))
    if name != "vit_mini":
        cat = create_encoder(name, pool="cat").eval()
        assert cat.num_features == 2 * create_encoder(name).num_features
        with torch.no_grad(): _check(cat, torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("name", [n for n in TV_FAMILIES if n not in HEAVY])
def test_cifar_stem_keeps_resolution(name):
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a = create_encoder(name).eval().forward_features(x)
        b = create_encoder(name, cifar_stem=True).eval().forward_features(x)
    assert b.shape[-1] > a.shape[-1] and b.shape[1] == a.shape[1]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "convnext_tiny"])
def test_wrapper_equals_bare_torchvision(name):
    "Same weights, same input: the wrapper's pooled features equal torchvision's model without its last linear layer."
    torch.manual_seed(0)
    enc = create_encoder(name).eval()
    tv = torchvision.models.get_model(name, weights=None).eval()
    mine = enc.state_dict()
    head_keys = {"resnet18": "fc.", "mobilenet_v3_small": "classifier.", "efficientnet_b0": "classifier.",
                 "densenet121": "classifier.", "convnext_tiny": "classifier.2"}[name]
    src = {k: v for k, v in tv.state_dict().items() if not k.startswith(head_keys)}
    mine_keys = list(mine)              # the same tensors in the same order (convnext: its final norm last)
    assert len(src) == len(mine_keys), (len(src), len(mine_keys))
    enc.load_state_dict(dict(zip(mine_keys, src.values())))
    if name == "resnet18": tv.fc = nn.Identity()
    elif name == "mobilenet_v3_small": tv.classifier = nn.Identity()
    elif name == "convnext_tiny": tv.classifier[2] = nn.Identity()
    else: tv.classifier = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): torch.testing.assert_close(enc(x), tv(x).flatten(1), atol=1e-4, rtol=1e-4)


def test_info_and_errors():
    assert encoder_info("efficientnet_v2_s")["size"] == 384 and encoder_info("resnet18")["size"] == 224
    assert create_encoder("resnet18").default_size == 224 and create_encoder("resnet18", cifar_stem=True).default_size == 32
    with pytest.raises(KeyError, match="Known encoders"): create_encoder("resnet19")
    with pytest.raises(ValueError, match="in_chans"): create_encoder("resnet18", in_chans=4)


def test_vit_attention_and_layers():
    v = create_encoder("vit_mini").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        att = v.get_last_selfattention(x)
        assert att.shape == (2, 4, 65, 65)
        torch.testing.assert_close(att.sum(-1), torch.ones(2, 4, 65))
        assert len(v.get_intermediate_layers(x, 3)) == 3


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm installed: the error path cannot be seen")
def test_timm_missing_is_a_clear_error():
    with pytest.raises(ImportError, match=r"reprlab\[timm\]"): create_encoder("timm:resnet18")


def test_timm_encoder():
    pytest.importorskip("timm")
    enc = create_encoder("timm:resnet18").eval()
    with torch.no_grad(): _check(enc, torch.randn(1, 3, 32, 32))


def test_an_unknown_timm_model_is_a_key_error_naming_it():
    "Like an unknown registered encoder (the command line turns it into one error line, exit 2), not timm's RuntimeError."
    pytest.importorskip("timm")
    with pytest.raises(KeyError, match="timm has no model 'nope'"): create_encoder("timm:nope")
