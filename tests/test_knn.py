"""Weighted kNN (`knn_search`, `knn_classify`, `knn_report`) against a brute-force numpy loop and scikit-learn.

Two kinds of data. *Exact* data: rows of 16 entries +-1 among 32 (norm 4), so every normalised feature and every
cosine similarity (a multiple of 1/16) is exact in float32 and float64 alike: ties everywhere, and results can be
compared bit for bit. *Continuous* data: Gaussian features, no exact ties; float32 and float64 similarities differ
by < 1e-6, so exact comparisons are made on the queries whose reference similarities and class scores are
separated by more than that (asserted to be most of them), and the rest are checked to within rounding.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import top_k_accuracy_score
from sklearn.neighbors import KNeighborsClassifier

from reprlab.evaluate import knn_accuracy, knn_classify, knn_report, knn_search

SEP = 3e-6     # float32 cosine of unit vectors in d <= 32 is within ~1.2e-6 of the exact value: two apart by more never swap


def exact_data(n, m, n_classes, seed, d=32):
    "Features of 16 entries +-1 among `d` (exact in float32) and labels."
    rng = np.random.default_rng(seed)
    def rows(r):
        x = np.zeros((r, d), np.float32)
        for i in range(r): x[i, rng.choice(d, 16, replace=False)] = rng.choice([-1.0, 1.0], 16)
        return torch.from_numpy(x)
    return rows(n), torch.from_numpy(rng.integers(0, n_classes, n)), rows(m)


def gauss_data(n, m, n_classes, seed, d=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, n_classes, (n,), generator=g), torch.randn(m, d, generator=g)


def brute(tx, ty, qx, k, temperature=0.07, weighting="exp", n_classes=None):
    "One query at a time in float64: cosine similarities, the k best (similarity descending, then lower index), votes."
    tx, qx, ty = np.asarray(tx, np.float64), np.asarray(qx, np.float64), np.asarray(ty)
    tn = tx / np.maximum(np.linalg.norm(tx, axis=1, keepdims=True), 1e-12)
    c, k = n_classes or int(ty.max()) + 1, min(k, len(tx))
    out = dict(sims=[], idx=[], scores=[], pred=[], all_sims=[])
    for q in qx:
        s = tn @ (q / max(np.linalg.norm(q), 1e-12))
        order = np.lexsort((np.arange(len(s)), -s))[:k]
        votes = [0.0] * c
        for j in order: votes[ty[j]] += math.exp(s[j] / temperature) if weighting == "exp" else 1.0
        out["sims"].append(s[order]); out["idx"].append(order); out["scores"].append(votes)
        out["pred"].append(max(range(c), key=lambda i: (votes[i], -i)))     # the best score, then the lower class
        out["all_sims"].append(np.sort(s)[::-1][:k + 1])
    return {key: np.array(v) for key, v in out.items()}


def separated(ref, weighting="exp"):
    "Queries whose k+1 best reference similarities are pairwise > SEP apart and whose best class score is clear."
    s = ref["all_sims"]
    ok = (np.diff(s, axis=1) < -SEP).all(1) if s.shape[1] > 1 else np.ones(len(s), bool)
    top2 = np.sort(ref["scores"], axis=1)[:, ::-1][:, :2]
    clear = top2[:, 0] > top2[:, 1] * (1 + 1e-5) if weighting == "exp" else top2[:, 0] > top2[:, 1]
    return ok & clear


def check_against(ref, sims, idx, pred, scores, mask=None):
    "Same neighbours (order too), similarities, scores and predictions on the rows in `mask` (all rows if None)."
    m = slice(None) if mask is None else torch.from_numpy(mask)
    np.testing.assert_array_equal(idx[m].numpy(), ref["idx"][mask if mask is not None else slice(None)])
    mm = mask if mask is not None else slice(None)
    np.testing.assert_allclose(sims[m].numpy(), ref["sims"][mm], atol=SEP, rtol=0)
    np.testing.assert_allclose(scores[m].numpy(), ref["scores"][mm], rtol=2e-5)
    np.testing.assert_array_equal(pred[m].numpy(), ref["pred"][mm])


@pytest.mark.parametrize("n,k,rows", [(300, 5, 1), (300, 20, 7), (300, 300, 64), (3003, 20, 13), (2048, 5, 100), (1500, 3, 11), (40, 50, 3)])
@pytest.mark.parametrize("weighting", ["exp", "uniform"])
def test_exact_data_equals_brute_force_with_ties(n, k, rows, weighting):
    tx, ty, qx = exact_data(n, 100, 5, seed=n + k + rows)
    ref = brute(tx, ty, qx, k, weighting=weighting)
    assert (np.diff(ref["sims"], axis=1) == 0).any(), "the data has ties among the k best"
    sims, idx = knn_search(tx, qx, k, max_bytes=4 * n * rows)
    pred, scores = knn_classify(tx, ty, qx, k, weighting=weighting, max_bytes=4 * n * rows)
    np.testing.assert_array_equal(idx.numpy(), ref["idx"])                      # the tie rule, bit for bit
    np.testing.assert_array_equal(sims.numpy(), ref["sims"].astype(np.float32))  # exact similarities
    np.testing.assert_allclose(scores.numpy(), ref["scores"], rtol=2e-5)
    # equal class scores come from equal neighbour similarities and are then exactly equal in both (lower class wins);
    # any other pair of scores is far apart
    top2 = np.sort(ref["scores"], axis=1)[:, ::-1][:, :2]
    assert ((top2[:, 0] == top2[:, 1]) | (top2[:, 0] > top2[:, 1] * (1 + 1e-5))).all()
    np.testing.assert_array_equal(pred.numpy(), ref["pred"])


@pytest.mark.parametrize("n,k", [(300, 5), (300, 20), (3000, 20), (3000, 5), (2048, 1)])
def test_continuous_data_equals_brute_force_at_chunk_boundaries(n, k):
    tx, ty, qx = gauss_data(n, 61, 6, seed=n + k)
    ref = brute(tx, ty, qx, k, temperature=0.1)
    mask = separated(ref)
    assert mask.mean() > 0.5, mask.mean()
    for rows in (1, 2, 7, 60, 61, 1000):
        sims, idx = knn_search(tx, qx, k, max_bytes=4 * n * rows)
        pred, scores = knn_classify(tx, ty, qx, k, temperature=0.1, max_bytes=4 * n * rows)
        check_against(ref, sims, idx, pred, scores, mask)
        np.testing.assert_allclose(sims.numpy(), ref["sims"], atol=SEP, rtol=0)   # every row, to within rounding
    pred, scores = knn_classify(tx, ty, qx, k, temperature=0.1, chunk=5)          # the old argument still caps the rows
    check_against(ref, *knn_search(tx, qx, k, chunk=5), pred, scores, mask)


def test_two_threads_split_the_rows_alike():
    tx, ty, qx = gauss_data(3000, 101, 6, seed=3)
    ref = brute(tx, ty, qx, 20, temperature=0.1)
    mask = separated(ref)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        sims, idx = knn_search(tx, qx, 20, max_bytes=4 * 3000 * 33)
        pred, scores = knn_classify(tx, ty, qx, 20, temperature=0.1, max_bytes=4 * 3000 * 33)
    finally: torch.set_num_threads(before)
    check_against(ref, sims, idx, pred, scores, mask)


def test_memory_cap_gives_identical_results():
    tx, ty, qx = exact_data(500, 90, 4, seed=7)                       # exact data: identical bit for bit
    base = knn_classify(tx, ty, qx, k=15)
    for mb in (4 * 500, 4 * 500 * 3, 4 * 500 * 89, 10**9):
        out = knn_classify(tx, ty, qx, k=15, max_bytes=mb)
        assert torch.equal(out[0], base[0]) and torch.equal(out[1], base[1]), mb
    tx, ty, qx = gauss_data(2000, 90, 4, seed=8)                      # continuous data: same neighbours and votes
    s0, i0 = knn_search(tx, qx, k=15)
    p0, c0 = knn_classify(tx, ty, qx, k=15)
    for mb in (4 * 2000, 4 * 2000 * 7, 4 * 2000 * 45):
        s, i = knn_search(tx, qx, k=15, max_bytes=mb)
        p, c = knn_classify(tx, ty, qx, k=15, max_bytes=mb)
        assert torch.equal(i, i0) and torch.equal(p, p0), mb
        torch.testing.assert_close(s, s0, atol=1e-6, rtol=0); torch.testing.assert_close(c, c0, rtol=1e-5, atol=0)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_uniform_votes_equal_sklearn_brute_cosine(k):
    tx, ty, qx = gauss_data(400, 150, 5, seed=k)
    ref = brute(tx, ty, qx, k, weighting="uniform")
    counts = np.sort(ref["scores"], axis=1)[:, ::-1]
    no_ties = separated(ref, "uniform") & (counts[:, 0] > counts[:, 1])   # no near-tie in distance, no tied vote
    assert no_ties.mean() > 0.5, no_ties.mean()
    ours, _ = knn_classify(tx, ty, qx, k=k, weighting="uniform")
    skl = KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="cosine").fit(tx.numpy(), ty.numpy())
    np.testing.assert_array_equal(ours.numpy()[no_ties], skl.predict(qx.numpy())[no_ties])
    _, nb = skl.kneighbors(qx.numpy())
    _, idx = knn_search(tx, qx, k)
    sep = separated(ref, "uniform")
    assert all(set(a) == set(b) for a, b in zip(idx.numpy()[sep], nb[sep]))


def test_top5_equals_sklearn_top_k_accuracy():
    tx, ty, qx = gauss_data(300, 200, 8, seed=11)
    qy = torch.randint(0, 8, (200,), generator=torch.Generator().manual_seed(12))
    r = knn_report(tx, ty, qx, qy, k=300, temperature=0.1)            # every sample votes: no equal class scores
    assert (r["scores"] > 0).all()
    labels = np.arange(8)
    assert r["top5"] == pytest.approx(top_k_accuracy_score(qy.numpy(), r["scores"].numpy(), k=5, labels=labels))
    assert r["top1"] == pytest.approx(top_k_accuracy_score(qy.numpy(), r["scores"].numpy(), k=1, labels=labels))
    assert r["top1"] == pytest.approx(knn_accuracy(tx, ty, qx, qy, k=300, temperature=0.1))


def test_report_ties_rank_the_lower_class_first_and_cap_topk():
    tx, ty, qx = gauss_data(300, 200, 10, seed=13)
    qy = torch.randint(0, 10, (200,), generator=torch.Generator().manual_seed(14))
    r = knn_report(tx, ty, qx, qy, k=3, topk=(1, 2, 5))            # 3 neighbours, 10 classes: many zero scores tie
    sc = r["scores"].numpy()
    for t in (1, 2, 5):
        hit = [list(np.lexsort((np.arange(10), -row)))[:t].count(y) for row, y in zip(sc, qy.numpy())]
        assert r[f"top{t}"] == pytest.approx(np.mean(hit)), t
    assert r["top1"] == pytest.approx(float((r["pred"] == qy).float().mean()))
    per = {c: float((r["pred"][qy == c] == c).float().mean()) for c in range(10) if (qy == c).any()}
    assert r["per_class"] == pytest.approx(per)
    small = knn_report(tx[ty < 3], ty[ty < 3], qx[qy < 3], qy[qy < 3], topk=(1, 5), classes=["x", "y", "z"])
    assert small["top5"] == 1.0 and set(small["per_class"]) <= {"x", "y", "z"} and small["n_classes"] == 3
    assert {k: small[k] for k in ("k", "temperature", "n_train", "n_test")} == dict(
        k=20, temperature=0.07, n_train=int((ty < 3).sum()), n_test=int((qy < 3).sum()))


def test_bad_arguments_are_named():
    tx, ty, qx = gauss_data(50, 10, 3, seed=0)
    qy = torch.zeros(10, dtype=torch.long)
    bad = [
        (dict(k=0), "k must be an integer >= 1, got 0"), (dict(k=2.5), "k must be"), (dict(k=True), "k must be"),
        (dict(temperature=0), "temperature must be a finite number > 0, got 0"), (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=-1.0), "temperature"), (dict(weighting="rank"), "'rank'"),
        (dict(max_bytes=199), "max_bytes must be an integer >= 4 * n_train = 200"), (dict(n_classes=2), "n_classes=2"),
    ]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg.replace("*", r"\*").replace("(", r"\(")): knn_classify(tx, ty, qx, **kw)
    with pytest.raises(ValueError, match="train_x must be 2-D"): knn_classify(tx[0], ty, qx)
    with pytest.raises(ValueError, match="16 features per row but test_x has 15"): knn_classify(tx, ty, qx[:, :15])
    with pytest.raises(ValueError, match="50 training features but 49 labels"): knn_classify(tx, ty[:49], qx)
    with pytest.raises(ValueError, match="train_y must be a 1-D integer"): knn_classify(tx, ty.float(), qx)
    with pytest.raises(ValueError, match="labels < 0"): knn_classify(tx, ty - 1, qx)
    with pytest.raises(ValueError, match="test_x holds NaN"): knn_search(tx, qx.masked_fill(qx > 2, float("nan")))
    with pytest.raises(ValueError, match="train_x holds NaN"): knn_search(tx.masked_fill(tx > 2, float("inf")), qx)
    with pytest.raises(ValueError, match="train_x is empty"): knn_search(tx[:0], qx)
    big = gauss_data(3000, 1, 3, seed=1)[0]
    big[1234, 5] = float("nan")                                      # one bad row, found on the grouped top-k path too
    with pytest.raises(ValueError, match="train_x holds NaN"): knn_search(big, qx, k=5)
    with pytest.raises(ValueError, match="temperature=0.001 is too small"): knn_classify(tx, ty, tx, temperature=0.001)
    with pytest.raises(ValueError, match="test_y holds label 3"): knn_report(tx, ty, qx, qy + 3)
    with pytest.raises(ValueError, match="test_y must be 1-D"): knn_report(tx, ty, qx, qy[:5])
    with pytest.raises(ValueError, match="topk must be"): knn_report(tx, ty, qx, qy, topk=(1, 0))
    with pytest.raises(ValueError, match="n_classes=4 but 3 class names"): knn_report(tx, ty, qx, qy, n_classes=4, classes="abc")
    assert knn_search(tx, qx[:0], 5)[1].shape == (0, 5)               # an empty test set is fine for the search


@pytest.mark.parametrize("n", [2047, 3001, 3003])
def test_the_last_training_rows_are_searched(n):
    tx, ty, _ = gauss_data(n, 1, 4, seed=n)
    qx = tx[-3:] + 1e-3 * torch.randn(3, tx.shape[1], generator=torch.Generator().manual_seed(0))
    for k in (1, 5, 20):
        assert knn_search(tx, qx, k)[1][:, 0].tolist() == [n - 3, n - 2, n - 1]
