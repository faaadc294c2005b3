"""reprlab.tiling against brute force: tiles equal NumPy's np.pad + sliding windows at the corners, the grid covers the
image with the fewest tiles, tile -> untile is the identity for any size / tile / overlap / window (hypothesis), the
windows match SciPy's, predict_tiled equals a pointwise fn on the whole image, and bad input is named."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import windows as sw

from reprlab.tiling import (WINDOW_FLOOR, WINDOWS, TileLayout, predict_tiled, tile, tile_batch, tile_grid, tile_window,
                            untile, untile_batch)

BUDGET = 3_000_000                       # tile pixels per example (T * C * tile * tile), to keep each example fast


@st.composite
def cases(draw, max_side: int = 300, max_tile: int = 128):
    "(h, w, tile, overlap, channels): channels 0 means a 2-D (H, W) image."
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    t = draw(st.integers(1, max_tile))
    overlap = draw(st.integers(0, t - 1))
    c = draw(st.sampled_from([0, 1, 3]))
    s = t - overlap
    n = (1 if h <= t else -(-(h - t) // s) + 1) * (1 if w <= t else -(-(w - t) // s) + 1)
    assume(n * max(c, 1) * t * t <= BUDGET)
    return h, w, t, overlap, c


def np_pad(x: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    "The reference padding: NumPy's 'reflect' per axis, 'edge' on an axis too short to reflect that far."
    h, w = x.shape[-2:]
    x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(top, bottom), (0, 0)], mode="reflect" if max(top, bottom) < h else "edge")
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, 0), (left, right)], mode="reflect" if max(left, right) < w else "edge")


def axis_coverage(starts, t: int, n: int) -> np.ndarray:
    "How many of the 1-D tiles [s, s + t) cover each of n positions, by brute force."
    cov = np.zeros(n, dtype=np.int64)
    for s in starts: cov[s:s + t] += 1
    return cov


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(cases(), st.sampled_from([torch.float32, torch.float64]))
@example((1, 1, 1, 0, 0), torch.float32)                  # one pixel, one 1 x 1 tile
@example((1, 300, 1, 0, 3), torch.float64)                # 300 tiles of one pixel
@example((300, 2, 128, 127, 1), torch.float32)            # stride 1, width too small to reflect
@example((5, 300, 128, 0, 3), torch.float64)              # image shorter than the tile
@example((129, 256, 128, 64, 1), torch.float32)           # one pixel over a tile, exact fit
def test_tile_untile_identity(case, dtype):
    h, w, t, overlap, c = case
    g = torch.Generator().manual_seed(h * 1000 + w)
    x = torch.rand((c, h, w) if c else (h, w), generator=g, dtype=dtype)
    tiles, valid, lay = tile(x, t, overlap)
    cc = max(c, 1)
    assert tiles.shape == (len(lay), cc, t, t) and tiles.dtype == dtype
    assert valid.shape == (len(lay), 1, t, t) and valid.dtype == torch.bool

    # the grid: row-major product of 1-D starts at stride t - overlap, inside the padded image, fewest tiles, covering
    s = t - overlap
    ys, xs = sorted({y for y, _ in lay.corners}), sorted({x_ for _, x_ in lay.corners})
    assert lay.corners == [(y, x_) for y in ys for x_ in xs] == tile_grid(h, w, t, overlap)
    assert ys == list(range(0, len(ys) * s, s)) and xs == list(range(0, len(xs) * s, s))
    ph, pw = lay.padded
    top, bottom, left, right = lay.padding
    assert (ph, pw) == (h + top + bottom, w + left + right) and ys[-1] + t == ph and xs[-1] + t == pw
    assert 0 <= bottom - top <= 1 and 0 <= right - left <= 1
    assert (len(ys) == 1 or ys[-1] - s + t < h) and (len(xs) == 1 or xs[-1] - s + t < w)   # one tile fewer would not do
    cov = axis_coverage(ys, t, ph)[:, None] * axis_coverage(xs, t, pw)[None, :]
    assert (cov >= 1).all()

    # tiles and mask against np.pad and sliding windows at the corners
    ref = np_pad(x.numpy().reshape(cc, h, w), *lay.padding)
    cy, cx = np.array([p[0] for p in lay.corners]), np.array([p[1] for p in lay.corners])
    win = sliding_window_view(ref, (t, t), axis=(1, 2))[:, cy, cx]                     # (C, T, t, t)
    np.testing.assert_array_equal(tiles.numpy(), win.transpose(1, 0, 2, 3))
    inside = np.zeros((ph, pw), dtype=bool)
    inside[top:top + h, left:left + w] = True
    np.testing.assert_array_equal(valid[:, 0].numpy(), sliding_window_view(inside, (t, t))[cy, cx])
    test_cov = cov[top:top + h, left:left + w]
    assert int(valid.sum()) == int(test_cov.sum())             # each image pixel counted once per covering tile

    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for window in WINDOWS:
        y = untile(tiles, lay, window)
        assert y.shape == (cc, h, w) and y.dtype == dtype
        torch.testing.assert_close(y, x.reshape(cc, h, w), **tol)
        m = untile(valid, lay, window)
        torch.testing.assert_close(m.sum().item(), float(h * w), rtol=1e-5, atol=0)
        torch.testing.assert_close(m, torch.ones_like(m), rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(cases(max_side=120, max_tile=48), st.integers(1, 20), st.sampled_from(WINDOWS))
def test_predict_tiled_pointwise(case, batch_size, window):
    h, w, t, overlap, c = case
    c = max(c, 1)
    g = torch.Generator().manual_seed(h * 1000 + w)
    x = torch.randn(c, h, w, generator=g, dtype=torch.float64)
    conv = torch.nn.Conv2d(c, 4, 1).double()
    seen = []
    def fn(b):
        seen.append(len(b))
        return conv(b)
    out = predict_tiled(fn, x, t, overlap, batch_size=batch_size, window=window)
    with torch.no_grad(): torch.testing.assert_close(out, conv(x[None])[0], rtol=1e-10, atol=1e-10)
    n = len(TileLayout.for_size(h, w, t, overlap))
    assert sum(seen) == n and max(seen) <= batch_size and all(k == batch_size for k in seen[:-1])
    torch.testing.assert_close(predict_tiled(lambda b: b, x, t, overlap, batch_size, window), x, rtol=1e-12, atol=1e-12)


def test_predict_tiled_gradients_off_and_2d():
    conv = torch.nn.Conv2d(1, 2, 1)
    out = predict_tiled(conv, torch.rand(40, 30), 16, overlap=4)
    assert out.shape == (2, 40, 30) and not out.requires_grad


def test_windows_match_scipy():
    for t in (1, 2, 5, 16, 64):
        hann = np.maximum(sw.hann(2 * t + 1)[1::2], WINDOW_FLOOR)                 # Hann at pixel centres
        np.testing.assert_allclose(tile_window(t, "hann", torch.float64).numpy(), np.outer(hann, hann), rtol=1e-12)
        if t % 2 == 0:                                                              # scipy's triang is centred likewise
            tri = np.maximum(sw.triang(t), WINDOW_FLOOR)
            np.testing.assert_allclose(tile_window(t, "triangle", torch.float64).numpy(), np.outer(tri, tri), rtol=1e-12)
        assert (tile_window(t, "none") == 1).all()
    assert tile_window(512, "hann").min() > 0 and tile_window(512, "triangle").min() > 0


def test_smooth_windows_hide_seams():
    "Tiles whose predictions worsen towards their edges: a smooth window makes the largest step between pixels smaller."
    tiles, _, lay = tile(torch.zeros(1, 96, 96), 32, overlap=16)
    c = torch.arange(32.) - 15.5
    err = (c[:, None] ** 2 + c[None, :] ** 2).sqrt().expand(len(lay), 1, 32, 32)
    step = {win: untile(err, lay, win).diff(dim=-1).abs().max().item() for win in WINDOWS}
    assert step["hann"] < step["none"] / 2 and step["triangle"] < step["none"] / 2


def test_batch_matches_single():
    g = torch.Generator().manual_seed(0)
    xs = torch.rand(3, 2, 45, 61, generator=g)
    tiles, valid, lay = tile_batch(xs, 20, overlap=7)
    n = len(lay)
    assert tiles.shape == (3 * n, 2, 20, 20) and valid.shape == (3 * n, 1, 20, 20)
    for i in range(3):
        ti, vi, li = tile(xs[i], 20, overlap=7)
        assert li == lay
        torch.testing.assert_close(tiles[i * n:(i + 1) * n], ti, rtol=0, atol=0)
        torch.testing.assert_close(valid[i * n:(i + 1) * n], vi, rtol=0, atol=0)
    torch.testing.assert_close(untile_batch(tiles, lay, "hann"), xs)


def test_dtypes_and_pad_modes():
    img = torch.randint(0, 256, (3, 10, 13), dtype=torch.uint8)
    tiles, valid, lay = tile(img, 8, overlap=2)
    assert tiles.dtype == torch.uint8
    out = untile(tiles, lay)
    assert out.dtype == torch.float32 and torch.equal(out, img.float())
    z, _, lz = tile(img, 8, 2, pad_mode="constant")
    ref = np.pad(img.numpy(), [(0, 0), (lz.padding[0], lz.padding[1]), (lz.padding[2], lz.padding[3])])
    assert torch.equal(z[0], torch.from_numpy(ref[:, :8, :8]))
    r, _, lr = tile(img, 8, 2, pad_mode="replicate")
    ref = np.pad(img.numpy(), [(0, 0), (lr.padding[0], lr.padding[1]), (lr.padding[2], lr.padding[3])], mode="edge")
    assert torch.equal(r[-1], torch.from_numpy(ref[:, -8:, -8:]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda():
    x = torch.rand(3, 70, 90, device="cuda")
    tiles, valid, lay = tile(x, 32, overlap=8)
    assert tiles.device == valid.device == x.device
    for window in WINDOWS: torch.testing.assert_close(untile(tiles, lay, window), x)
    conv = torch.nn.Conv2d(3, 2, 1).cuda()
    with torch.no_grad(): torch.testing.assert_close(predict_tiled(conv, x, 32, 8, batch_size=3), conv(x[None])[0])


@pytest.mark.parametrize("call, message", [
    (lambda: tile_grid(10, 10, 0, 0), "tile must be an integer >= 1, got 0"),
    (lambda: tile_grid(10, 10, 4, 4), "overlap must be in [0, tile - 1] = [0, 3], got 4"),
    (lambda: tile_grid(10, 10, 4, -1), "overlap must be an integer >= 0, got -1"),
    (lambda: tile_grid(10, 10, 2.5, 0), "tile must be an integer >= 1, got 2.5"),
    (lambda: tile_grid(0, 10, 4, 0), "h must be an integer >= 1, got 0"),
    (lambda: tile(torch.zeros(0, 5), 4), "h must be an integer >= 1, got 0"),
    (lambda: tile(torch.zeros(1, 1, 5, 5), 4), "image must be (C, H, W) or (H, W), got shape (1, 1, 5, 5)"),
    (lambda: tile(torch.zeros(5, 5), 4, pad_mode="wrap"), "pad_mode must be one of"),
    (lambda: tile_batch(torch.zeros(3, 5, 5), 4), "images must be (B, C, H, W), got shape (3, 5, 5)"),
    (lambda: untile(torch.zeros(3, 1, 4, 4), TileLayout.for_size(5, 5, 4)), "tiles must hold the layout's 4 tiles"),
    (lambda: untile(torch.zeros(4, 1, 3, 3), TileLayout.for_size(5, 5, 4)), "tiles must be (B * 4, C, 4, 4)"),
    (lambda: untile(torch.zeros(4, 1, 4, 4), TileLayout.for_size(5, 5, 4), "gauss"), "window must be one of"),
    (lambda: predict_tiled(lambda b: b[:, :, :-1], torch.zeros(5, 5), 4), "fn must return (n, C_out, 4, 4)"),
    (lambda: predict_tiled(lambda b: b, torch.zeros(5, 5), 4, batch_size=0), "batch_size must be an integer >= 1"),
    (lambda: predict_tiled(lambda b: b, torch.zeros(5, 5), 4, window="box"), "window must be one of"),
])
def test_errors(call, message):
    with pytest.raises(ValueError) as e: call()
    assert message in str(e.value)
