"The evaluation figures of reprlab.viz: valid PNGs from 2 to 20 classes that grow with the classes, and t-SNE maps that a seed fixes."
from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.neighbors import KNeighborsClassifier

from reprlab.metrics import classification_report, roc_curves
from reprlab.viz import save_confusion_matrix, save_prediction_grid, save_roc_curves, save_tsne


def _png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()                                          # decodes the whole file: a truncated PNG fails here
        return im.size


def _problem(c, n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    probs = rng.dirichlet(np.ones(c), n); probs[np.arange(n), y] += 0.5; probs /= probs.sum(1, keepdims=True)
    return y, probs, [f"class_{i}" for i in range(c)]


@pytest.fixture(autouse=True)
def _no_open_figures():
    yield
    assert plt.get_fignums() == []                          # the figures never go through pyplot


def test_confusion_matrix_grows_with_classes(tmp_path):
    sizes = []
    for c in (2, 5, 10, 20):
        y, probs, names = _problem(c)
        r = classification_report(y, probs.argmax(1), probs, classes=names)
        with warnings.catch_warnings():
            warnings.simplefilter("error")                  # e.g. no 0/0 warning for an empty row
            p = save_confusion_matrix(r["confusion_matrix"], names, tmp_path / f"cm{c}.png")
        sizes.append(_png_size(p))
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(sizes, sizes[1:])), sizes
    assert not list(tmp_path.glob(".*"))                    # no temporary file left behind


def test_confusion_matrix_counts_absent_class_and_tensor(tmp_path):
    cm = torch.tensor([[5, 1, 0], [0, 0, 0], [2, 1, 9]])    # class 1 absent from y_true: a row of zeros
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for norm in (True, False):
            _png_size(save_confusion_matrix(cm, ["a", "b", "c"], tmp_path / f"cm{norm}.png", normalize=norm, title="t"))
    _png_size(save_confusion_matrix(np.eye(30, dtype=int) * 3, range(30), tmp_path / "cm30.png"))  # > 20: no annotations
    with pytest.raises(ValueError, match=r"cm: shape \(3, 3\), expected \(2, 2\)"):
        save_confusion_matrix(cm, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="classes is empty"): save_confusion_matrix(cm, [], tmp_path / "x.png")


@pytest.mark.parametrize("c", [2, 20, 25])
def test_roc_curves_figure(tmp_path, c):
    y, probs, names = _problem(c, n=400, seed=c)
    r = classification_report(y, probs.argmax(1), probs, classes=names)
    cur = roc_curves(y, probs)
    sizes = [_png_size(save_roc_curves(cur, names, tmp_path / "by_name.png", aucs=r["roc_auc_per_class"]))]
    sizes.append(_png_size(save_roc_curves(cur, names, tmp_path / "computed.png")))
    sizes.append(_png_size(save_roc_curves(cur, names, tmp_path / "list.png", aucs=[0.5] * c)))
    assert len(set(sizes)) == 1
    if c == 2: assert sizes[0][0] < 600                   # the legend sits inside the plot
    else: assert sizes[0][0] > 600                        # beside it


def test_roc_curves_bad_input(tmp_path):
    with pytest.raises(ValueError, match="curves: empty"): save_roc_curves({}, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"curves: key 2, expected class indices in \[0, 2\)"):
        save_roc_curves({2: ([0, 1], [0, 1])}, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="fpr has 3 points and tpr 2"):
        save_roc_curves({0: ([0, .5, 1], [0, 1])}, ["a", "b"], tmp_path / "x.png")


def _blobs(c, per, d=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 8, (c, d))
    y = np.repeat(np.arange(c), per)
    return centres[y] + rng.normal(0, 1, (len(y), d)), y


def test_tsne_deterministic_and_separates_blobs(tmp_path):
    x, y = _blobs(4, 25)
    p, xy = save_tsne(x, y, list("abcd"), tmp_path / "t.png", seed=3)
    _png_size(p)
    assert xy.shape == (100, 2) and np.isfinite(xy).all()
    _, again = save_tsne(torch.from_numpy(x), torch.from_numpy(y), list("abcd"), tmp_path / "t2.png", seed=3)
    np.testing.assert_array_equal(again, xy)               # same seed, same map
    # well-separated blobs stay separated: leave-one-out 1-NN in the map recovers the labels
    knn = KNeighborsClassifier(n_neighbors=2).fit(xy, y)
    nearest_other = knn.kneighbors(xy, 2, return_distance=False)[:, 1]
    assert (y[nearest_other] == y).mean() > 0.95


def test_tsne_small_subsampled_and_20_classes(tmp_path):
    x, y = _blobs(2, 3)                                    # 6 points: perplexity capped to (6 - 1) / 3
    _, xy = save_tsne(x, y, ["a", "b"], tmp_path / "small.png")
    assert xy.shape == (6, 2)
    x, y = _blobs(3, 100)
    _, a = save_tsne(x, y, list("abc"), tmp_path / "sub.png", max_points=90, seed=1)
    _, b = save_tsne(x, y, list("abc"), tmp_path / "sub2.png", max_points=90, seed=1)
    assert a.shape == (90, 2) and np.array_equal(a, b)
    x, y = _blobs(20, 5)
    p, xy = save_tsne(x, y, [f"class_{i}" for i in range(20)], tmp_path / "c20.png")
    assert xy.shape == (100, 2) and _png_size(p)[0] > _png_size(tmp_path / "small.png")[0]   # room for the longer legend
    _png_size(save_tsne(x[:, :1], y, [f"c{i}" for i in range(20)], tmp_path / "d1.png")[0])   # 1-D features: random init


def test_tsne_bad_input(tmp_path):
    x, y = _blobs(2, 5)
    with pytest.raises(ValueError, match=r"labels: shape \(9,\), expected \(10,\)"): save_tsne(x, y[:9], ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"labels: expected integer class indices in \[0, 2\)"): save_tsne(x, y + 1, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"features: shape \(10,\)"): save_tsne(x[:, 0], y, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least 3"): save_tsne(x[:2], y[:2], ["a", "b"], tmp_path / "x.png")


@pytest.mark.parametrize("c", [2, 20])
def test_prediction_grid(tmp_path, c):
    g = torch.Generator().manual_seed(c)
    names = [f"class_{i}" for i in range(c)]
    true, pred = torch.randint(0, c, (12,), generator=g), torch.randint(0, c, (12,), generator=g)
    u8 = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8, generator=g)
    s1 = _png_size(save_prediction_grid(u8, true, pred, torch.rand(12, generator=g), names, tmp_path / "u8.png", nrow=4, title="valid"))
    s2 = _png_size(save_prediction_grid(list(torch.rand(12, 1, 16, 16, generator=g)), true.numpy(), pred.tolist(), None, names,
                                        tmp_path / "f.png", nrow=6))
    assert s1[1] > s2[1]                                    # 3 rows of 4 vs 2 rows of 6
    norm = (u8.float() / 255 - 0.5) / 0.25
    _png_size(save_prediction_grid(norm, true, pred, None, names, tmp_path / "n.png", mean=[0.5] * 3, std=[0.25] * 3))


def test_prediction_grid_bad_input(tmp_path):
    imgs = torch.rand(3, 3, 8, 8)
    with pytest.raises(ValueError, match="pred: length 2, expected 3"): save_prediction_grid(imgs, [0, 1, 0], [0, 1], None, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"true: expected integer class indices in \[0, 2\)"):
        save_prediction_grid(imgs, [0, 1, 2], [0, 1, 0], None, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"shape \(8, 8\), expected \(C, H, W\)"):
        save_prediction_grid(torch.rand(3, 8, 8), [0, 1, 0], [0, 1, 0], None, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="images: empty"): save_prediction_grid([], [], [], None, ["a"], tmp_path / "x.png")
