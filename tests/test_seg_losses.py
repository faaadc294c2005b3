"""reprlab.seg_losses: every loss against hand-computed 2 x 2 values (the arithmetic is in the comments) and against
PyTorch / torchvision references, Dice on empty and full tiles, per-sample vs per-batch, gradients; the metrics against
scikit-learn on flattened pixels, valid masks, and the batch meter against one call on the concatenation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torchvision.ops import sigmoid_focal_loss

from reprlab.seg_losses import (BCELoss, DiceBCELoss, DiceLoss, FocalLoss, SegMeter, auto_pos_weight,
                                foreground_fraction, seg_confusion, seg_metrics, seg_predict)

L3, L2, L43 = math.log(3), math.log(2), math.log(4 / 3)
# 2 x 2 binary example: logits ln3 -> p = 3/4, 0 -> p = 1/2, -ln3 -> p = 1/4
X = torch.tensor([[[[L3, 0.], [-L3, 0.]]]], dtype=torch.float64)
Y = torch.tensor([[[[1., 0.], [0., 1.]]]], dtype=torch.float64)
# per-pixel BCE: (0,0) y=1, p=3/4: ln(4/3); (0,1) y=0, p=1/2: ln2; (1,0) y=0, p=1/4: ln(4/3); (1,1) y=1, p=1/2: ln2


def _close(a, b, tol=1e-9):
    assert float(a) == pytest.approx(float(b), abs=tol, rel=tol)


# ---------------------------------------------------------------- pos_weight

def test_pos_weight_auto_formula():
    m = torch.zeros(3, 1, 5, 4, dtype=torch.bool)
    m[0, 0, :2, :3] = True                                  # 6 of 60 pixels
    m[2, 0, 4, :] = True                                    # + 4 -> p = 10/60 = 1/6
    _close(foreground_fraction(m), 1 / 6, 1e-7)
    _close(auto_pos_weight(m), (1 - 1 / 6) / (1 / 6), 1e-6)   # = 5
    assert BCELoss.from_masks(m).pos_weight_value.item() == pytest.approx(5.0)
    assert BCELoss("auto").fit(m.float()).pos_weight_value.item() == pytest.approx(5.0)
    for bad in (torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)):
        with pytest.raises(ValueError, match=r"masks: foreground fraction p = [01]\.0, expected 0 < p < 1"):
            auto_pos_weight(bad)
    with pytest.raises(ValueError, match="fit needs pos_weight='auto'"): BCELoss(2.0).fit(m)
    with pytest.raises(ValueError, match="not fitted"): BCELoss("auto")(X, Y)
    with pytest.raises(ValueError, match="pos_weight must be None, 'auto' or a positive number, got 'x'"): BCELoss("x")


# ---------------------------------------------------------------- BCE

def test_bce_hand_computed():
    _close(BCELoss()(X, Y), (2 * L43 + 2 * L2) / 4)
    # pos_weight 3 multiplies the positives (0,0) and (1,1): (3 ln(4/3) + ln2 + ln(4/3) + 3 ln2) / 4
    _close(BCELoss(3.0)(X, Y), (4 * L43 + 4 * L2) / 4)
    _close(BCELoss(3.0)(X, Y.bool()), (4 * L43 + 4 * L2) / 4)
    # valid drops (0,1) and (1,1): (3 ln(4/3) + ln(4/3)) / 2
    v = torch.tensor([[[[True, False], [True, False]]]])
    _close(BCELoss(3.0)(X, Y, v), 4 * L43 / 2)


def test_bce_matches_torch_and_valid_is_a_subset():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 1, 6, 5, generator=g, dtype=torch.float64), torch.rand(3, 1, 6, 5, generator=g) < 0.3
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(2.5, dtype=torch.float64))(x, y.double())
    _close(BCELoss(2.5)(x, y), ref)
    v = torch.rand(3, 1, 6, 5, generator=g) < 0.6
    _close(BCELoss(2.5)(x, y, v), torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(2.5, dtype=torch.float64))(x[v], y[v].double()))
    assert BCELoss()(x, y, torch.zeros_like(v)).item() == 0.0          # no valid pixel: 0, not NaN


# ---------------------------------------------------------------- Dice

def test_dice_binary_hand_computed():
    # P = [[3/4, 1/2], [1/4, 1/2]], T = [[1, 0], [0, 1]]: sum PT = 3/4 + 1/2 = 5/4, sum P = 2, sum T = 2
    _close(DiceLoss()(X, Y), 1 - (2 * 5 / 4 + 1) / (2 + 2 + 1))                 # 1 - 3.5 / 5 = 0.3
    _close(DiceLoss(smooth=0)(X, Y), 1 - (5 / 2) / 4)
    # valid keeps (0,0) and (1,0): sum PT = 3/4, sum P = 1, sum T = 1 -> 1 - (1.5 + 1) / 3
    v = torch.tensor([[[[True, False], [True, False]]]])
    _close(DiceLoss()(X, Y, v), 1 - 2.5 / 3)


@pytest.mark.parametrize("per_sample", [True, False])
def test_dice_empty_and_full_tiles(per_sample):
    big = torch.full((2, 1, 3, 3), 1e4)
    assert DiceLoss(per_sample=per_sample)(-big, torch.zeros_like(big)).item() == 0.0     # (0 + 1) / (0 + 0 + 1)
    assert DiceLoss(per_sample=per_sample)(big, torch.ones_like(big)).item() == 0.0       # (2n + 1) / (2n + 1)
    n = 9 if per_sample else 18                                                          # pixels per Dice sum
    _close(DiceLoss(per_sample=per_sample)(big, torch.zeros_like(big)), 1 - 1 / (n + 1), 1e-7)   # full on empty: 1/(n+1)
    lab = torch.zeros(2, 3, 3, dtype=torch.long)                                         # multi-class, all class 0
    logits = torch.zeros(2, 3, 3, 3); logits[:, 0] = 1e4
    assert DiceLoss(per_sample=per_sample, multiclass=True)(logits, lab).item() == 0.0   # classes 1, 2 empty vs empty


def test_dice_per_sample_vs_per_batch():
    # sample A: T empty, P empty -> dice (0 + 1) / (0 + 1) = 1
    # sample B: T = [[1, 1], [0, 0]], P = [[1, 0], [0, 0]] -> inter 1, sum P 1, sum T 2: (2 + 1) / (3 + 1) = 3/4
    # per sample: 1 - (1 + 3/4) / 2 = 1/8; per batch: inter 1, sums 1 + 2 -> 1 - 3/4 = 1/4
    x = torch.full((2, 1, 2, 2), -1e4); x[1, 0, 0, 0] = 1e4
    t = torch.zeros(2, 1, 2, 2); t[1, 0, 0] = 1
    _close(DiceLoss(per_sample=True)(x, t), 1 / 8, 1e-7)
    _close(DiceLoss(per_sample=False)(x, t), 1 / 4, 1e-7)
    # identical samples without smoothing: the two agree (2 * 2 / (2 + 4) = 2/3 either way); with smooth = 1 they do
    # not, since the batch adds smooth once: per sample (2 + 1) / (3 + 1) = 3/4, per batch (4 + 1) / (6 + 1) = 5/7
    same = x[[1, 1]], t[[1, 1]]
    _close(DiceLoss(0.0, per_sample=True)(*same), 1 / 3, 1e-7)
    _close(DiceLoss(0.0, per_sample=False)(*same), 1 / 3, 1e-7)
    _close(DiceLoss(per_sample=False)(*same), 2 / 7, 1e-7)


def test_dice_multiclass_hand_computed():
    # K = 2, logits per pixel (0,0) [ln3, 0], (0,1) [0, 0], (1,0) [0, ln3], (1,1) [ln3, 0]; target [[0, 0], [1, 1]]
    x = torch.tensor([[[[L3, 0.], [0., L3]], [[0., 0.], [L3, 0.]]]], dtype=torch.float64)
    t = torch.tensor([[[0, 0], [1, 1]]])
    # class 0 probs (3/4, 1/2, 1/4, 3/4), T0 (1, 1, 0, 0): inter 5/4, sum P 9/4, sum T 2 -> (5/2 + 1) / (9/4 + 3) = 2/3
    # class 1 probs (1/4, 1/2, 3/4, 1/4), T1 (0, 0, 1, 1): inter 1, sum P 7/4, sum T 2 -> (2 + 1) / (7/4 + 3) = 12/19
    _close(DiceLoss(multiclass=True)(x, t), 1 - (2 / 3 + 12 / 19) / 2)
    _close(DiceLoss(multiclass=True)(x, t[:, None]), 1 - (2 / 3 + 12 / 19) / 2)      # (B, 1, H, W) indices too
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 1\], got values in \[0, 2\]"):
        DiceLoss(multiclass=True)(x, t * 2)
    with pytest.raises(ValueError, match="target must hold integer class indices"):
        DiceLoss(multiclass=True)(x, t.float())


def test_dice_valid_equals_subset():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 1, 5, 5, generator=g, dtype=torch.float64), (torch.rand(2, 1, 5, 5, generator=g) < 0.4).double()
    v = torch.rand(2, 1, 5, 5, generator=g) < 0.5
    _close(DiceLoss(per_sample=False)(x, y, v), DiceLoss(per_sample=False)(x[v].reshape(1, 1, 1, -1), y[v].reshape(1, 1, 1, -1)))


# ---------------------------------------------------------------- Dice + BCE, focal

def test_dice_bce_parts_sum_to_total():
    loss = DiceBCELoss(dice_weight=0.7, bce_weight=1.5, pos_weight=3.0)
    total = loss(X, Y)
    _close(loss.parts["dice"], 0.3)                                          # as in test_dice_binary_hand_computed
    _close(loss.parts["bce"], (4 * L43 + 4 * L2) / 4)                        # as in test_bce_hand_computed
    _close(total, 0.7 * loss.parts["dice"] + 1.5 * loss.parts["bce"])
    assert isinstance(loss.parts["dice"], float) and set(loss.parts) == {"dice", "bce"}
    auto = DiceBCELoss(pos_weight="auto").fit(Y)                              # p = 1/2 -> pos_weight 1
    _close(auto(X, Y), DiceBCELoss()(X, Y))


def test_focal_hand_computed_and_references():
    _close(FocalLoss(gamma=0)(X, Y), BCELoss()(X, Y))
    # p_t = 3/4, 1/2, 3/4, 1/2 -> (1 - p_t)^2 = 1/16, 1/4, 1/16, 1/4
    _close(FocalLoss(2.0)(X, Y), (2 * L43 / 16 + 2 * L2 / 4) / 4)
    # alpha 0.25 on the positives (0,0) [ln(4/3)/16] and (1,1) [ln2/4], 0.75 on the negatives (0,1) [ln2/4], (1,0) [ln(4/3)/16]
    _close(FocalLoss(2.0, alpha=0.25)(X, Y), (L43 / 16 + L2 / 4) / 4)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64) * 3, (torch.rand(2, 1, 4, 4, generator=g) < 0.3).double()
    for gamma, alpha in ((2.0, 0.25), (1.5, None), (0.5, 0.8)):
        ref = sigmoid_focal_loss(x, y, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="mean")
        _close(FocalLoss(gamma, alpha)(x, y), ref, 1e-7)


@pytest.mark.parametrize("loss", [BCELoss(), BCELoss(4.0), DiceLoss(), DiceLoss(per_sample=False, smooth=0.0),
                                  DiceBCELoss(), FocalLoss(), FocalLoss(0.5, 0.25), FocalLoss(0.0)])
def test_gradients_finite(loss):
    x = torch.tensor([[[[1e4, -1e4, 0.], [30., -30., 2.], [1e4, -1e4, 0.]]]], requires_grad=True)   # 3 x 3, saturated too
    y = torch.tensor([[[[1., 0., 1.], [1., 0., 0.], [0., 1., 1.]]]])
    v = torch.ones_like(y, dtype=torch.bool); v[..., 2] = False
    for valid in (None, v):
        x.grad = None
        out = loss(x, y, valid)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(x.grad).all()


def test_multiclass_dice_gradients_finite():
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    DiceLoss(multiclass=True, per_sample=False)(x * 1e3, torch.randint(0, 4, (2, 3, 3))).backward()
    assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- metrics

def _sk_binary(t, p):
    t, p = np.asarray(t).ravel(), np.asarray(p).ravel()
    zd = 1.0 if not t.any() and not p.any() else 0.0                       # the module's rule for empty denominators
    return {"iou": skm.jaccard_score(t, p, zero_division=zd), "dice": skm.f1_score(t, p, zero_division=zd),
            "pixel_accuracy": skm.accuracy_score(t, p), "precision": skm.precision_score(t, p, zero_division=zd),
            "recall": skm.recall_score(t, p, zero_division=zd)}


def _check(r, ref):
    for k, v in ref.items(): assert r[k] == pytest.approx(v, abs=1e-12), k
    assert r["pixel_error"] == pytest.approx(1 - ref["pixel_accuracy"])


@pytest.mark.parametrize("seed", range(4))
def test_binary_metrics_vs_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 1, 7, 6, generator=g)
    t = torch.rand(3, 1, 7, 6, generator=g) < 0.3
    for thr in (0.5, 0.7):
        p = torch.sigmoid(logits) > thr
        _check(seg_metrics(logits, t, threshold=thr), _sk_binary(t, p))
        _check(seg_metrics(p, t), _sk_binary(t, p))                               # bool hard labels
        assert seg_predict(logits, thr).tolist() == p[:, 0].long().tolist()
    v = torch.rand(3, 1, 7, 6, generator=g) < 0.5
    p = logits > 0
    r = seg_metrics(logits, t, v)
    _check(r, _sk_binary(t[v], p[v]))
    assert r["n_pixels"] == int(v.sum())


def test_binary_edge_cases():
    z, o = torch.zeros(1, 3, 3, dtype=torch.long), torch.ones(1, 3, 3, dtype=torch.long)
    for t, p in ((z, z), (o, o), (o, z), (z, o)):                                  # empty/full, hit/miss
        _check(seg_metrics(p, t), _sk_binary(t, p))
    r = seg_metrics(z, z)
    assert (r["iou"], r["dice"], r["precision"], r["recall"]) == (1.0, 1.0, 1.0, 1.0)   # empty vs empty is 1.0
    r = seg_metrics(z, o)
    assert (r["iou"], r["precision"], r["recall"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="cm counts no pixels"):
        seg_metrics(z, z, torch.zeros(1, 1, 3, 3, dtype=torch.bool))


@pytest.mark.parametrize("seed", range(3))
def test_multiclass_metrics_vs_sklearn(seed):
    k = 4
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, k, 6, 5, generator=g)
    logits[:, 3] -= 100                                                            # class 3 never predicted ...
    t = torch.randint(0, 3, (2, 6, 5), generator=g)                                # ... nor present: empty vs empty
    p = logits.argmax(1)
    r = seg_metrics(logits, t)
    tf, pf = t.ravel().numpy(), p.ravel().numpy()
    labels = list(range(k))
    assert seg_confusion(p, t, k).tolist() == skm.confusion_matrix(tf, pf, labels=labels).tolist()
    iou = skm.jaccard_score(tf, pf, labels=labels, average=None, zero_division=1.0)
    dice = skm.f1_score(tf, pf, labels=labels, average=None, zero_division=1.0)
    np.testing.assert_allclose(r["iou_per_class"], iou)
    np.testing.assert_allclose(r["dice_per_class"], dice)
    assert r["iou_per_class"][3] == 1.0 and r["dice_per_class"][3] == 1.0
    assert r["mean_iou"] == pytest.approx(iou.mean()) and r["mean_dice"] == pytest.approx(dice.mean())
    assert r["pixel_accuracy"] == pytest.approx(skm.accuracy_score(tf, pf)) and "precision" not in r
    assert seg_metrics(p, t, n_classes=k)["iou_per_class"] == r["iou_per_class"]     # hard labels
    v = torch.rand(2, 1, 6, 5, generator=g) < 0.5
    rv = seg_metrics(logits, t, v)
    tv, pv = t[v[:, 0]].numpy(), p[v[:, 0]].numpy()
    np.testing.assert_allclose(rv["iou_per_class"], skm.jaccard_score(tv, pv, labels=labels, average=None, zero_division=1.0))
    assert rv["pixel_accuracy"] == pytest.approx(skm.accuracy_score(tv, pv))


@pytest.mark.parametrize("k", [1, 3])
def test_meter_over_batches_equals_one_call(k):
    g = torch.Generator().manual_seed(10 + k)
    logits = torch.randn(7, k, 5, 4, generator=g)
    t = (torch.rand(7, 1, 5, 4, generator=g) < 0.4).long() if k == 1 else torch.randint(0, k, (7, 5, 4), generator=g)
    v = torch.rand(7, 1, 5, 4, generator=g) < 0.7
    meter = SegMeter()
    for i in range(0, 7, 3): meter.update(logits[i:i + 3], t[i:i + 3], v[i:i + 3])
    assert meter.compute() == seg_metrics(logits, t, v)
    meter.reset()
    with pytest.raises(ValueError, match="no update yet"): meter.compute()


def test_bad_input_is_named():
    t = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"pred must have the target's shape \(1, 2, 2\), got \(1, 3, 2\)"):
        seg_confusion(torch.zeros(1, 3, 2, dtype=torch.long), t, 2)
    with pytest.raises(ValueError, match="n_classes must be an integer >= 2, got 1"): seg_confusion(t, t, 1)
    with pytest.raises(ValueError, match=r"valid must be \(1, 1, 2, 2\), got shape \(1, 1, 3, 3\)"):
        seg_metrics(t, t, torch.ones(1, 1, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"logits must be \(B, 1, H, W\) for a binary loss"): BCELoss()(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="smooth must be a number >= 0"): DiceLoss(smooth=-1)
    with pytest.raises(ValueError, match="n_classes=3 but the logits have shape"): seg_metrics(torch.zeros(1, 2, 2, 2), t, n_classes=3)
