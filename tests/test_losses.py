"Losses against trusted references: PyTorch's own functions and, where installed, lightly's implementations."
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reprlab.losses import BYOLLoss, DINOLoss, FocalLoss, NTXentLoss, SupConLoss, SupervisedLoss


def test_ntxent_equals_lightly():
    lightly_loss = pytest.importorskip("lightly.loss", reason="lightly (bench extra) not installed")
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    for t in (0.1, 0.5):
        torch.testing.assert_close(NTXentLoss(t)(z0, z1), lightly_loss.NTXentLoss(temperature=t)(z0, z1), rtol=1e-5, atol=1e-5)


def test_byol_loss_equals_lightly():
    "lightly's BYOL example uses NegativeCosineSimilarity (-cos); BYOL's 2 - 2 cos is the same objective, rescaled."
    lightly_loss = pytest.importorskip("lightly.loss", reason="lightly (bench extra) not installed")
    g = torch.Generator().manual_seed(2)
    p, z = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    torch.testing.assert_close(BYOLLoss()(p, z), 2 + 2 * lightly_loss.NegativeCosineSimilarity()(p, z), rtol=1e-5, atol=1e-5)


def test_supcon_with_distinct_labels_is_ntxent():
    "With every label distinct, the only positive is the other view: SupCon reduces to NT-Xent."
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, 2, 16, generator=g)
    torch.testing.assert_close(SupConLoss(0.3)(z, torch.arange(8)), NTXentLoss(0.3)(z[:, 0], z[:, 1]), rtol=1e-5, atol=1e-5)


def test_dino_loss_equals_lightly():
    lightly_loss = pytest.importorskip("lightly.loss", reason="lightly (bench extra) not installed")
    g = torch.Generator().manual_seed(2)
    B, K = 4, 16
    t = torch.randn(2 * B, K, generator=g); s = torch.randn(4 * B, K, generator=g)
    ours = DINOLoss(K, n_crops=4, teacher_temp=0.04, warmup_teacher_temp=0.04, n_epochs=10)
    ref = lightly_loss.DINOLoss(output_dim=K, warmup_teacher_temp=0.04, teacher_temp=0.04, warmup_teacher_temp_epochs=0)
    r = ref(list(t.chunk(2)), list(s.chunk(4)), epoch=0)
    torch.testing.assert_close(ours(s, t, epoch=0), r, rtol=1e-5, atol=1e-5)


def test_supervised_losses_under_bf16_autocast():
    lg, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SupervisedLoss(label_smoothing=0.1)(lg.bfloat16(), y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.cross_entropy(lg.bfloat16().float(), y, label_smoothing=0.1))
    with pytest.raises(ValueError, match="gamma"): FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="loss kind"): SupervisedLoss("hinge")
