"kNN against scikit-learn's brute-force KNeighborsClassifier, and feature extraction in dataset order."
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from reprlab.data import ImageDataset
from reprlab.evaluate import extract_features, knn_accuracy, knn_classify


@pytest.mark.parametrize("k", [1, 5, 20])
def test_uniform_knn_equals_sklearn_cosine(k):
    g = torch.Generator().manual_seed(k)
    tx, ty = torch.randn(300, 16, generator=g), torch.randint(0, 6, (300,), generator=g)
    qx = torch.randn(120, 16, generator=g)
    ours, _ = knn_classify(tx, ty, qx, k=k, weighting="uniform", chunk=37)
    ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(tx.numpy(), ty.numpy()).predict(qx.numpy())
    assert (ours.numpy() == ref).mean() == 1.0


def test_knn_accuracy_separable_and_errors():
    x = torch.cat([torch.randn(50, 4) + 5, torch.randn(50, 4) - 5]); y = torch.arange(100) // 50
    assert knn_accuracy(x, y, x, y, k=10) == 1.0
    with pytest.raises(ValueError, match="labels < 0"): knn_classify(x, y - 1, x)
    with pytest.raises(ValueError, match="temperature"): knn_classify(x, y, x, temperature=0)


def test_extract_features_order_and_mode():
    imgs = torch.randint(0, 256, (23, 3, 4, 4), dtype=torch.uint8)
    ds = ImageDataset(images=imgs, labels=np.arange(23) % 3, classes=list("abc"))
    enc = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(48), nn.Linear(48, 3)).train()
    f, y = extract_features(enc, ds, batch_size=5)
    assert enc.training                                               # mode restored
    torch.testing.assert_close(f, enc.eval()(imgs.float() / 255).detach())   # eval-mode BN, dataset order
    assert y.tolist() == (np.arange(23) % 3).tolist()
