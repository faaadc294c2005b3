"reprlab.landscape: filter-normalised directions (against Li et al.'s own normalisation loop), seeded; the origin is the model's loss; weights bit-exact afterwards, also after errors and Ctrl-C; a linear model's MSE landscape is its parabola; plots and npz."
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from reprlab.checkpoint import create_model
from reprlab.core import make_generator
from reprlab.landscape import landscape_grid, loss_landscape, random_directions, save_landscape


@pytest.fixture(autouse=True)
def _no_open_figures():
    yield
    assert plt.get_fignums() == []


def _trained_conv(seed=0):
    "A small conv classifier trained a few steps (BatchNorm running stats away from their initial values) and its data."
    torch.manual_seed(seed)
    model = create_model("classifier", encoder="conv", encoder_kwargs=dict(channels=(8, 16), strides=(1, 2)), n_classes=3)
    x = torch.randn(37, 3, 12, 12)
    y = (x[:, 0].mean((1, 2)) > 0).long() + (x[:, 1].mean((1, 2)) > 0).long()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    for _ in range(5):
        loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
    return model, x, y


def _batches(x, y, sizes=(16, 16, 5)):
    out, i = [], 0
    for s in sizes: out.append((x[i:i + s], y[i:i + s])); i += s
    return out


class _Mixed(nn.Module):
    "Every kind of parameter: conv with bias, GroupNorm, BatchNorm, LayerNorm, linear, an embedding and a 3-D token."
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.gn, self.bn = nn.GroupNorm(2, 6), nn.BatchNorm2d(6)
        self.ln = nn.LayerNorm(6)
        self.fc = nn.Linear(6, 4)
        self.emb = nn.Embedding(5, 6)
        self.token = nn.Parameter(torch.randn(1, 3, 6))

    def forward(self, x):
        return self.fc(self.ln(self.bn(self.gn(self.conv(x))).mean((2, 3)) + self.token.mean((0, 1)) + self.emb.weight.mean(0)))


def _li_reference(model, n, seed):
    "Li et al.'s normalize_directions_for_weights(ignore='biasbn', norm='filter') from net_plotter.py, on our draws."
    out = []
    for k in range(n):
        g, dirs = make_generator(seed, k), []
        for _, p in model.named_parameters():
            dirs.append(torch.randn(p.shape, generator=g))
        for d, w in zip(dirs, [p.detach() for p in model.parameters()]):
            if d.dim() <= 1: d.fill_(0)
            else:
                for df, wf in zip(d, w): df.mul_(wf.norm() / (df.norm() + 1e-10))
        out.append(dict(zip([n for n, _ in model.named_parameters()], dirs)))
    return out


def test_filter_normalisation():
    torch.manual_seed(0)
    for model in (_Mixed(), create_model("classifier", encoder="vit_mini", n_classes=3)):
        dirs = random_directions(model, 2, seed=5)
        ref = _li_reference(model, 2, 5)
        norm_mods = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
        norm_names = {f"{mn}.{pn}" for mn, m in model.named_modules() if isinstance(m, norm_mods) for pn, _ in m.named_parameters()}
        for d, r in zip(dirs, ref):
            assert list(d) == [n for n, _ in model.named_parameters()]
            for name, p in model.named_parameters():
                assert d[name].shape == p.shape and d[name].dtype == p.dtype
                torch.testing.assert_close(d[name], r[name])
                if p.ndim <= 1 or name in norm_names: assert not d[name].any(), name      # biases and norm layers
                else:                                                                         # each filter: the weight's norm
                    torch.testing.assert_close(d[name].flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))
    # a 2-D parameter of a norm layer is still zero (the module, not only the shape, decides)
    m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    m[1].weight = nn.Parameter(torch.ones(1, 4))
    assert not random_directions(m, 1)[0]["1.weight"].any()


def test_directions_seeded():
    model, _, _ = _trained_conv()
    state = torch.get_rng_state()
    a = random_directions(model, 2, seed=3)
    assert torch.equal(torch.get_rng_state(), state)                          # the global RNG is not used
    torch.manual_seed(999)
    b = random_directions(model, 2, seed=3)
    c = random_directions(model, 1, seed=3)
    other = random_directions(model, 1, seed=4)
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]) and torch.equal(a[1][k], b[1][k]) and torch.equal(a[0][k], c[0][k])
    w = "head.fc.weight"
    assert not torch.equal(a[0][w], a[1][w]) and not torch.equal(a[0][w], other[0][w])
    with pytest.raises(ValueError, match="n: expected"): random_directions(model, 0)


def test_origin_is_the_model_loss():
    model, x, y = _trained_conv()
    model.eval()
    with torch.no_grad():
        logits = model(x)
        ref = F.cross_entropy(logits, y, reduction="sum").item() / len(x)      # per sample over all 37 (16 + 16 + 5)
        ref_acc = (logits.argmax(1) == y).sum().item() / len(x)
    model.train()
    d = random_directions(model, 2)
    g = landscape_grid(0.5, 5)
    r = loss_landscape(model, F.cross_entropy, _batches(x, y), d, g, g, progress=True)
    assert model.training
    assert abs(r["origin_loss"] - ref) < 1e-6 and r["origin_accuracy"] == ref_acc and r["n_samples"] == 37
    assert r["loss"][2, 2] == r["origin_loss"] and r["accuracy"][2, 2] == ref_acc
    assert r["loss"].shape == (5, 5) and r["accuracy"].shape == (5, 5) and r["loss"].dtype == np.float64
    assert np.array_equal(r["alphas"], g) and np.array_equal(r["betas"], g)
    # per-sample losses give the same numbers as batch means
    r2 = loss_landscape(model, lambda o, t: F.cross_entropy(o, t, reduction="none"), _batches(x, y), d, g, g, progress=False)
    np.testing.assert_allclose(r2["loss"], r["loss"], rtol=1e-6)       # float32 sums in another order
    # a point off the origin, set by hand
    model.eval()
    with torch.no_grad():
        moved = {k: p + 0.25 * d[0][k] - 0.5 * d[1][k] for k, p in model.named_parameters()}
        out = torch.func.functional_call(model, {**dict(model.named_buffers()), **moved}, (x,))
    assert abs(r["loss"][3, 0] - F.cross_entropy(out, y).item()) < 1e-5


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()]


def _assert_same(model, snap):
    state, modes = snap
    for k, v in model.state_dict().items(): assert torch.equal(v, state[k]) and v.dtype == state[k].dtype, k
    assert [m.training for m in model.modules()] == modes


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_weights_restored_bit_exactly(error):
    model, x, y = _trained_conv()
    model.freeze()                                    # mixed modes: encoder BatchNorm in eval inside a training model
    model.train()
    snap = _snapshot(model)
    d = random_directions(model, 2)
    g = landscape_grid(1, 3)
    loss_landscape(model, F.cross_entropy, _batches(x, y), d, g, g, progress=False)
    _assert_same(model, snap)
    calls = []

    def failing(out, t):
        calls.append(1)
        if len(calls) == 8: raise error("stop mid-grid")                      # calls 1-3: the origin; 8: the second grid point
        return F.cross_entropy(out, t)

    with pytest.raises(error, match="stop mid-grid"):
        loss_landscape(model, failing, _batches(x, y), d, g, g, progress=False)
    assert len(calls) == 8
    _assert_same(model, snap)


def test_linear_mse_is_a_parabola():
    torch.manual_seed(0)
    model = nn.Linear(4, 1).double()
    x = torch.randn(30, 4, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]], dtype=torch.float64) + 0.1 * torch.randn(30, 1, dtype=torch.float64)
    d = random_directions(model, 1, seed=1)[0]
    assert not d["bias"].any() and torch.allclose(d["weight"].norm(), model.weight.norm())
    alphas = np.linspace(-2, 3, 11)
    r = loss_landscape(model, F.mse_loss, _batches(x, y, (7, 23)), d, alphas, progress=False)
    assert r["betas"] is None and r["accuracy"] is None and r["loss"].shape == (11,)
    with torch.no_grad():                                                      # L(a) = mean((res + a X d)^2)
        res, xd = model(x) - y, x @ d["weight"].T
        c0, c1, c2 = (res ** 2).mean().item(), 2 * (res * xd).mean().item(), (xd ** 2).mean().item()
    np.testing.assert_allclose(r["loss"], c0 + c1 * alphas + c2 * alphas ** 2, rtol=1e-12)
    assert abs(r["origin_loss"] - c0) < 1e-12


def test_bad_input():
    model, x, y = _trained_conv()
    d = random_directions(model, 2)
    b = _batches(x, y)
    with pytest.raises(ValueError, match="needs 2 directions"): loss_landscape(model, F.cross_entropy, b, d[:1], [0, 1], [0, 1])
    with pytest.raises(ValueError, match="'nope' is not a parameter"): loss_landscape(model, F.cross_entropy, b, {"nope": torch.zeros(1)}, [0])
    bad = {"head.fc.weight": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match=r"shape \(2, 2\), expected \(3, 16\)"): loss_landscape(model, F.cross_entropy, b, bad, [0])
    with pytest.raises(ValueError, match="alphas"): loss_landscape(model, F.cross_entropy, b, d, [])
    with pytest.raises(ValueError, match="alphas"): loss_landscape(model, F.cross_entropy, b, d, [0, np.nan])
    with pytest.raises(ValueError, match="batches"): loss_landscape(model, F.cross_entropy, [], d, [0])
    with pytest.raises(ValueError, match=r"loss_fn: expected a scalar"):
        loss_landscape(model, lambda o, t: F.cross_entropy(o, t, reduction="none")[:3], b, d, [0])
    with pytest.raises(ValueError, match="odd"): landscape_grid(1.0, 20)
    with pytest.raises(ValueError, match="range_"): landscape_grid(0.0, 21)
    g = landscape_grid(2.0, 21)
    assert len(g) == 21 and g[10] == 0 and g[0] == -2 and g[-1] == 2 and np.array_equal(g, -g[::-1])


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


def test_files_written(tmp_path):
    model, x, y = _trained_conv()
    d = random_directions(model, 2)
    g = landscape_grid(1.0, 5)
    r2 = loss_landscape(model, F.cross_entropy, _batches(x, y), d, g, g[:3], progress=False)
    assert r2["loss"].shape == (5, 3)                                         # a rectangular grid: loss[i, j] at (alphas[i], betas[j])
    files = save_landscape(r2, tmp_path / "two", title="2-D")
    assert set(files) == {"npz", "surface", "contour"}
    assert [p.name for p in sorted((tmp_path / "two").iterdir())] == ["landscape.npz", "landscape_contour.png", "landscape_surface.png"]
    for k in ("surface", "contour"): _png(files[k])
    with np.load(files["npz"]) as f:
        assert np.array_equal(f["loss"], r2["loss"]) and np.array_equal(f["accuracy"], r2["accuracy"])
        assert np.array_equal(f["alphas"], g) and np.array_equal(f["betas"], g[:3]) and float(f["origin_loss"]) == r2["origin_loss"]
    r2["loss"][0, 0], r2["loss"][1, 1] = np.inf, np.nan                        # diverged points are left blank
    save_landscape(r2, tmp_path / "log", log_scale=True)
    r1 = loss_landscape(model, F.cross_entropy, _batches(x, y), d[0], g, progress=False)
    files = save_landscape(r1, tmp_path / "one")
    assert set(files) == {"npz", "1d"} and files["1d"].name == "landscape_1d.png"
    _png(files["1d"])
    with np.load(files["npz"]) as f: assert "betas" not in f and np.array_equal(f["loss"], r1["loss"])
    with pytest.raises(ValueError, match="'loss'"): save_landscape({"alphas": g}, tmp_path / "bad")
