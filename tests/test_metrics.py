"reprlab.metrics against scikit-learn: random data, absent classes, the binary case, a hand-computed example, bad inputs."
from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from reprlab.metrics import classification_report, confusion_matrix_csv, roc_curves


def _data(seed, n, c, present=None):
    "Labels drawn from `present` (default all c classes), noisy predictions and row-normalised scores that favour the truth."
    rng = np.random.default_rng(seed)
    present = np.arange(c) if present is None else np.asarray(present)
    y = rng.choice(present, n)
    probs = rng.dirichlet(np.ones(c), n)
    probs[np.arange(n), y] += rng.uniform(0, 0.6, n)
    probs /= probs.sum(1, keepdims=True)
    yp = np.where(rng.random(n) < 0.3, rng.integers(0, c, n), probs.argmax(1))
    return y, yp, probs


def _none_is_nan(v):
    return np.array([np.nan if x is None else x for x in v], dtype=float)


def _check_against_sklearn(r, y, yp, probs, c, names):
    labels = list(range(c))
    assert r["n"] == len(y) and r["n_classes"] == c
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, yp))
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, yp))
    assert r["confusion_matrix"] == skm.confusion_matrix(y, yp, labels=labels).tolist()
    p, rc, f, s = skm.precision_recall_fscore_support(y, yp, labels=labels, average=None, zero_division=np.nan)
    for key, ref in (("precision", p), ("recall", rc), ("f1", f)):
        np.testing.assert_allclose(_none_is_nan(r["per_class"][nm][key] for nm in names), ref, equal_nan=True)
    assert [r["per_class"][nm]["support"] for nm in names] == s.tolist()
    mp, mr, mf, _ = skm.precision_recall_fscore_support(y, yp, labels=labels, average="macro", zero_division=np.nan)
    assert (r["precision_macro"], r["recall_macro"], r["f1_macro"]) == pytest.approx((mp, mr, mf))
    assert r["f1_weighted"] == pytest.approx(skm.f1_score(y, yp, labels=labels, average="weighted", zero_division=np.nan))
    # where every class is predicted and present, the nan convention changes nothing: sklearn's defaults agree
    if set(y) == set(yp) == set(labels):
        assert r["f1_macro"] == pytest.approx(skm.f1_score(y, yp, average="macro"))
        assert r["precision_macro"] == pytest.approx(skm.precision_score(y, yp, average="macro"))
    for k in (1, 2, 3, 5):
        kk = min(k, c)
        if f"top{kk}" in r:
            assert r[f"top{kk}"] == pytest.approx(skm.top_k_accuracy_score(y, probs if c > 2 else probs[:, 1], k=kk, labels=labels))
    for k, nm in enumerate(names):
        pos = y == k
        ref = skm.roc_auc_score(pos, probs[:, k]) if pos.any() and not pos.all() else None
        assert r["roc_auc_per_class"][nm] == (pytest.approx(ref) if ref is not None else None)
    json.dumps(r, allow_nan=False)


@pytest.mark.filterwarnings("ignore:'k' .* greater than or equal to 'n_classes'")
@pytest.mark.parametrize("seed,c", [(0, 3), (1, 5), (2, 10), (3, 20)])
def test_random_multiclass_equals_sklearn(seed, c):
    y, yp, probs = _data(seed, 400, c)
    names = [f"c{i}" for i in range(c)]
    r = classification_report(y, yp, probs, classes=names, topk=(1, 2, 3, 5))
    _check_against_sklearn(r, y, yp, probs, c, names)
    assert r["roc_auc_ovr_macro"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(c))))
    assert r["roc_auc_reason"] is None and "binary" not in r
    assert [k for k in r if k.startswith("top")] == [f"top{k}" for k in dict.fromkeys(min(k, c) for k in (1, 2, 3, 5))]


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_absent_classes_keep_their_rows_and_refuse_macro_auc():
    c = 6
    y, yp, probs = _data(4, 300, c, present=[0, 1, 3, 4])      # classes 2 and 5 never occur in y_true
    yp[yp == 4] = 2                                           # class 4 is never predicted, class 2 is (wrongly)
    names = list("abcdef")
    r = classification_report(torch.from_numpy(y), torch.from_numpy(yp), torch.from_numpy(probs), classes=names)
    _check_against_sklearn(r, y, yp, probs, c, names)
    cm = np.array(r["confusion_matrix"])
    assert cm.shape == (6, 6) and cm[2].sum() == 0 and cm[5].sum() == 0 and cm[:, 4].sum() == 0 and cm.sum() == 300
    assert r["per_class"]["c"]["support"] == 0 and r["per_class"]["c"]["recall"] is None and r["per_class"]["c"]["precision"] == 0.0
    assert r["per_class"]["e"]["precision"] is None and r["per_class"]["e"]["recall"] == 0.0
    assert r["roc_auc_ovr_macro"] is None and "'c'" in r["roc_auc_reason"] and "'f'" in r["roc_auc_reason"]
    assert r["roc_auc_per_class"]["c"] is None and r["roc_auc_per_class"]["a"] is not None
    # balanced accuracy = mean recall over the classes present in y_true (sklearn's definition)
    assert r["balanced_accuracy"] == pytest.approx(np.mean([r["per_class"][k]["recall"] for k in "abde"]))


def test_report_emits_no_warnings():
    y, yp, probs = _data(9, 200, 5, present=[0, 1, 2])
    yp[yp == 1] = 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for c in (5, 2):
            yy, pp = (y, yp) if c == 5 else (np.zeros(10, int), np.ones(10, int))
            pr = probs if c == 5 else np.full((10, 2), 0.5)
            json.dumps(classification_report(yy, pp, pr), allow_nan=False)
            roc_curves(yy, pr)
        json.dumps(classification_report([1, 1], [1, 1], np.full((2, 3), 1 / 3)), allow_nan=False)   # one class seen
        r = classification_report([0, 0], [0, 0], np.ones((2, 1)))
        assert r["confusion_matrix"] == [[2]] and r["roc_auc_reason"] == "one class: ROC AUC needs at least two"


@pytest.mark.filterwarnings("ignore:'k' .* greater than or equal to 'n_classes'")
def test_binary_equals_sklearn():
    y, yp, probs = _data(5, 250, 2)
    r = classification_report(y, yp, probs, classes=["neg", "pos"])
    _check_against_sklearn(r, y, yp, probs, 2, ["neg", "pos"])
    b = r["binary"]
    assert b["positive_class"] == "pos" and b["reason"] is None
    assert b["precision"] == pytest.approx(skm.precision_score(y, yp))
    assert b["recall"] == pytest.approx(skm.recall_score(y, yp))
    assert b["f1"] == pytest.approx(skm.f1_score(y, yp))
    assert b["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    assert b["average_precision"] == pytest.approx(skm.average_precision_score(y, probs[:, 1]))
    assert r["top1"] == pytest.approx(skm.top_k_accuracy_score(y, probs[:, 1], k=1))
    assert [k for k in r if k.startswith("top")] == ["top1", "top2"] and r["top2"] == 1.0   # top5 capped to 2 classes


def test_binary_without_positives_or_probs():
    r = classification_report([0, 0, 0], [0, 1, 0], np.array([[.9, .1], [.4, .6], [.8, .2]]))
    b = r["binary"]
    assert b["roc_auc"] is None and b["average_precision"] is None and "positive class '1'" in b["reason"]
    assert b["precision"] == 0.0 and b["recall"] is None
    r = classification_report([0, 1, 1], [0, 1, 0])
    assert r["binary"]["reason"] == "probs not given" and r["roc_auc_reason"] == "probs not given"
    assert r["binary"]["recall"] == 0.5 and not any(k.startswith("top") for k in r)
    json.dumps(r, allow_nan=False)


def test_hand_computed_example():
    # true:  a a a b b c      pred: a b a b c c     (c column: 1 wrong b, 1 right c)
    y, yp = [0, 0, 0, 1, 1, 2], [0, 1, 0, 1, 2, 2]
    probs = [[.7, .2, .1], [.3, .6, .1], [.5, .4, .1], [.2, .5, .3], [.1, .3, .6], [.1, .1, .8]]
    r = classification_report(y, yp, probs, classes=["a", "b", "c"], topk=(1, 2))
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert r["accuracy"] == pytest.approx(4 / 6)
    pc = r["per_class"]
    assert (pc["a"]["precision"], pc["a"]["recall"], pc["a"]["f1"]) == pytest.approx((1.0, 2 / 3, 0.8))
    assert (pc["b"]["precision"], pc["b"]["recall"], pc["b"]["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (pc["c"]["precision"], pc["c"]["recall"], pc["c"]["f1"]) == pytest.approx((0.5, 1.0, 2 / 3))
    assert [pc[k]["support"] for k in "abc"] == [3, 2, 1]
    assert r["precision_macro"] == pytest.approx(2 / 3)
    assert r["recall_macro"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert r["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert r["f1_weighted"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6)
    assert r["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert r["top1"] == pytest.approx(4 / 6)
    assert r["top2"] == pytest.approx(1.0)        # every true class is in its row's two highest scores
    # class c's scores: positive .8; negatives .1 .1 .1 .3 .6 -> all below: AUC 1. Class a: positives .7 .3 .5 vs .2 .1 .1
    assert r["roc_auc_per_class"]["c"] == 1.0 and r["roc_auc_per_class"]["a"] == 1.0
    # class b: positives .5 .3 vs negatives .2 .6 .4 .1 -> pairs won: .5 beats .2 .4 .1 (3), .3 beats .2 .1 (2) = 5 / 8
    assert r["roc_auc_per_class"]["b"] == pytest.approx(5 / 8)
    assert r["roc_auc_ovr_macro"] == pytest.approx((1 + 5 / 8 + 1) / 3)


def test_inputs_torch_numpy_lists_and_argmax_agree():
    y, yp, probs = _data(6, 120, 4)
    ref = classification_report(y, yp, probs)
    t = classification_report(torch.from_numpy(y), torch.from_numpy(yp), torch.from_numpy(probs))
    assert json.dumps(t, sort_keys=True) == json.dumps(ref, sort_keys=True)
    assert json.dumps(classification_report(y.tolist(), yp.tolist(), probs.tolist()), sort_keys=True) == json.dumps(ref, sort_keys=True)
    am = classification_report(y, None, probs)
    assert am["accuracy"] == am["top1"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert ref["classes"] == ["0", "1", "2", "3"]
    # without probs or classes, the class count is one more than the largest label seen
    assert classification_report([0, 2], [1, 1])["n_classes"] == 3


@pytest.mark.parametrize("kwargs,match", [
    (dict(y_true=np.zeros((4, 1), int), y_pred=[0, 0, 0, 0]), r"y_true: shape \(4, 1\), expected a 1-D"),
    (dict(y_true=[0, 1, 1], y_pred=[0, 1]), r"y_pred: length 2, expected 3"),
    (dict(y_true=[0, 1], y_pred=[0, 1], probs=np.zeros(2)), r"probs: shape \(2,\), expected \(N, C\)"),
    (dict(y_true=[0, 1], y_pred=[0, 1], probs=np.zeros((3, 2))), r"probs: shape \(3, 2\), expected \(N, C\) = \(2, "),
    (dict(y_true=[0, 1], y_pred=[0, 1], probs=np.zeros((2, 3)), classes=["a", "b"]), r"classes: 2 names, expected 3"),
    (dict(y_true=[0, 3], y_pred=[0, 1], probs=np.zeros((2, 3))), r"y_true: label 3 out of range, expected values in \[0, 3\)"),
    (dict(y_true=[0, 1], y_pred=[-1, 1], classes=["a", "b"]), r"y_pred: label -1 out of range, expected values in \[0, 2\)"),
    (dict(y_true=[0.5, 1], y_pred=[0, 1]), r"y_true: value 0.5 is not a class index"),
    (dict(y_true=["a", "b"], y_pred=[0, 1]), r"y_true: dtype <U1, expected integer"),
    (dict(y_true=[0, 1], y_pred=[0, 1], probs=[[np.nan, 1], [0, 1]]), r"probs: contains NaN"),
    (dict(y_true=[0, 1], y_pred=[0, 1], probs=[[0, 1], [0, 1]], topk=(0,)), r"topk: \(0,\), expected positive integers"),
    (dict(y_true=[0, 1], y_pred=[0, 1], classes=["a", "a"]), r"classes: names \['a', 'a'\] are not unique"),
    (dict(y_true=[], y_pred=[]), r"y_true: empty"),
    (dict(y_true=[0, 1]), r"y_pred: None, expected predicted labels"),
])
def test_bad_inputs_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match): classification_report(**kwargs)


def test_roc_curves_equal_sklearn():
    y, _, probs = _data(7, 200, 4, present=[0, 1, 2])
    cur = roc_curves(torch.from_numpy(y), probs)
    assert sorted(cur) == [0, 1, 2]                            # class 3 has no positives: no curve
    for k, (fpr, tpr) in cur.items():
        rf, rt, _ = skm.roc_curve(y == k, probs[:, k])
        np.testing.assert_allclose(fpr, rf); np.testing.assert_allclose(tpr, rt)
        assert skm.auc(fpr, tpr) == pytest.approx(skm.roc_auc_score(y == k, probs[:, k]))
    with pytest.raises(ValueError, match=r"probs: shape \(200, 4, 1\)"): roc_curves(y, probs[..., None])
    with pytest.raises(ValueError, match=r"y_true: label 4 out of range"): roc_curves(np.r_[y[:-1], 4], probs)


def test_confusion_matrix_csv(tmp_path):
    y, yp, _ = _data(8, 100, 3)
    r = classification_report(y, yp, classes=["cat", "dog", "hot, dog"])
    p = confusion_matrix_csv(r["confusion_matrix"], r["classes"], tmp_path / "sub" / "cm.csv")
    rows = list(csv.reader(open(p, newline="")))
    assert rows[0] == ["true\\predicted", "cat", "dog", "hot, dog"]
    assert [row[0] for row in rows[1:]] == ["cat", "dog", "hot, dog"]
    assert [[int(v) for v in row[1:]] for row in rows[1:]] == skm.confusion_matrix(y, yp).tolist()
    frac = confusion_matrix_csv(np.array([[0.75, 0.25], [0.0, 1.0]]), ["a", "b"], tmp_path / "f.csv")
    assert list(csv.reader(open(frac)))[1] == ["a", "0.75", "0.25"]
    assert not list(tmp_path.glob("**/.*tmp"))                 # written atomically, no temp file left
    with pytest.raises(ValueError, match=r"cm: shape \(3, 3\), expected \(2, 2\)"):
        confusion_matrix_csv(r["confusion_matrix"], ["a", "b"], tmp_path / "x.csv")


# ---------------------------------------------------------------- presentation-attack metrics (issue 20, first part)
from reprlab.metrics import attack_scores, eer, error_rates, pad_report, rate_at  # noqa: E402


def _brute_rates(y, s, t):
    y, s = np.asarray(y), np.asarray(s)
    return (s[y == 0] >= t).mean(), (s[y == 1] < t).mean()        # BPCER, APCER


@pytest.mark.parametrize("seed", range(5))
def test_eer_matches_a_brute_force_threshold_sweep(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300); s = rng.normal(y * rng.uniform(0.5, 2.5), 1.0)
    e, t = eer(y, s)
    # every threshold: the crossing lies between the error rates of the two thresholds around it
    ts = np.r_[np.sort(np.unique(s)), np.inf]
    rates = np.array([_brute_rates(y, s, u) for u in ts])
    k = int(np.argmax(rates[:, 0] <= rates[:, 1]))                # first threshold where BPCER <= APCER
    assert min(rates[k - 1].min(), rates[k].min()) - 1e-12 <= e <= max(rates[k - 1].max(), rates[k].max()) + 1e-12
    brute = min(max(b, a) for b, a in rates)                     # the classic min-max estimate
    assert abs(e - brute) <= 1.0 / min((y == 0).sum(), (y == 1).sum()) + 1e-12
    b, a = _brute_rates(y, s, t)
    assert abs(b - a) <= 2.0 / min((y == 0).sum(), (y == 1).sum()) + 1e-12   # the threshold sits at the crossing


def test_pad_figures_match_scikit_learn():
    from sklearn.metrics import roc_auc_score, roc_curve
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500); s = rng.normal(y * 1.2, 1.0)
    rep = pad_report(y, s, threshold=0.6, n_boot=0)
    assert rep["auc"] == pytest.approx(roc_auc_score(y, s))
    f, t, _ = roc_curve(y, s)
    for fpr in (1e-2, 1e-3):
        assert rep[f"tpr_at_fpr@{fpr:g}"] == pytest.approx(t[f <= fpr].max())
    b, a = _brute_rates(y, s, 0.6)
    assert (rep["bpcer"], rep["apcer_all"], rep["hter"]) == pytest.approx((b, a, (a + b) / 2))
    assert rep["threshold_source"] == "given"


def test_apcer_is_per_attack_class_and_acer_uses_the_worst():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    s = np.array([.1, .2, .7, .3, .9, .8, .2, .6, .1, .95])
    kind = np.array(["", "", "", "", "mask", "mask", "mask", "print", "print", "print"])
    r = error_rates(y, s, 0.5, kind)
    assert r["apcer_per_class"] == pytest.approx({"mask": 1 / 3, "print": 1 / 3}) and r["bpcer"] == 0.25
    assert r["apcer"] == pytest.approx(1 / 3) and r["acer"] == pytest.approx((1 / 3 + 0.25) / 2)


def test_the_threshold_is_chosen_on_validation_and_the_bootstrap_is_seeded():
    rng = np.random.default_rng(2)
    yv, yt = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    sv, st = rng.normal(yv, 1.0), rng.normal(yt + 0.5, 1.0)      # the test scores are shifted: the test EER threshold differs
    rep = pad_report(yt, st, val=(yv, sv), n_boot=100, seed=7)
    assert rep["threshold"] == eer(yv, sv)[1] != rep["eer_threshold"] and rep["threshold_source"] == "validation"
    assert rep["ci95"] == pad_report(yt, st, val=(yv, sv), n_boot=100, seed=7)["ci95"]
    assert rep["ci95"] != pad_report(yt, st, val=(yv, sv), n_boot=100, seed=8)["ci95"]
    assert "hter" not in pad_report(yt, st, n_boot=0)             # no threshold from validation: no HTER


def test_pad_bad_input_and_label_map():
    with pytest.raises(ValueError, match="expected 0 .bona fide. or 1 .attack."): eer([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="need both"): pad_report([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"): eer([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="bona_fide"): attack_scores(np.ones((2, 3)) / 3, [5])
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    assert attack_scores(p, bona_fide=[0, 1]) == pytest.approx([0.2, 0.8])
    assert rate_at([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.5) == {"tpr_at_fpr": 1.0, "frr_at_far": 0.0}   # thresholds 0.35 and 0.8
