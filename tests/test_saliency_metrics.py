"reprlab.saliency_metrics against hand-computed values, scipy / scikit-learn, line-by-line ports of the MIT benchmark code and pysaliency."
from __future__ import annotations

import math
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score

from reprlab.saliency_metrics import (METRICS, MIT_EPS, auc_judd, auc_shuffled, cc, kld, nss, resize_map, saliency_scores,
                                      saliency_scores_per_image, sim)


def _maps(seed, shape=(24, 32), p_fix=0.04, ties=False):
    "A random saliency map (quantised to 6 levels if `ties`), a fixation map and a strictly positive density map."
    rng = np.random.default_rng(seed)
    sal = rng.integers(0, 6, shape).astype(float) if ties else rng.random(shape)
    fix = rng.random(shape) < p_fix
    fix.flat[rng.integers(fix.size)] = True
    dens = rng.random(shape) ** 3 + 1e-3
    return sal, fix, dens


# --- line-by-line ports of the MIT benchmark's Matlab code (the references the module documents) ---------------------

def _minmax(s):
    return (s - s.min()) / (s.max() - s.min())


def _mit_nss(sal, fix):
    "NSS.m: Matlab's std divides by n - 1."
    m = (sal - sal.mean()) / sal.std(ddof=1)
    return m[fix].mean()


def _mit_kldiv(sal, dens):
    "KLdiv.m."
    p, q = sal / sal.sum(), dens / dens.sum()
    return (q * np.log(MIT_EPS + q / (p + MIT_EPS))).sum()


def _mit_auc_judd(sal, fix):
    "AUC_Judd.m with jitter = 0."
    S, F = _minmax(sal).ravel(), fix.ravel()
    Sth = S[F]
    n_fix, n_pix = len(Sth), len(S)
    threshes = np.sort(Sth)[::-1]
    tp, fp = np.zeros(n_fix + 2), np.zeros(n_fix + 2)
    tp[-1] = fp[-1] = 1
    for i in range(1, n_fix + 1):
        above = (S >= threshes[i - 1]).sum()
        tp[i] = i / n_fix
        fp[i] = (above - i) / (n_pix - n_fix)
    return np.trapezoid(tp, fp)


def _mit_auc_shuffled(sal, fix, other, n_splits, step, rng):
    "AUC_shuffled.m (randperm replaced by numpy's permutation)."
    S, F, O = _minmax(sal).ravel(), fix.ravel(), other.ravel()
    Sth = S[F]
    n_fix = len(Sth)
    ind = np.flatnonzero(O > 0)
    n_oth = min(n_fix, len(ind))
    aucs = []
    for _ in range(n_splits):
        cur = S[ind[rng.permutation(len(ind))][:n_oth]]
        top = max(Sth.max(), cur.max())
        threshes = (np.arange(int(math.floor(top / step + 1e-9)) + 1) * step)[::-1]   # fliplr(0:step:top)
        tp = np.r_[0, [(Sth >= t).sum() / n_fix for t in threshes], 1]
        fp = np.r_[0, [(cur >= t).sum() / n_oth for t in threshes], 1]
        aucs.append(np.trapezoid(tp, fp))
    return np.mean(aucs)


# --- hand-computed values on 2 x 3 maps ------------------------------------------------------------------------------

def test_hand_computed():
    sal = np.array([[1.0, 1, 1], [3, 3, 3]])                   # mean 2, population std 1
    assert nss(sal, np.array([[0, 0, 0], [1, 0, 1]])) == pytest.approx(1.0)
    assert nss(sal, np.array([[1, 0, 0], [0, 0, 0]])) == pytest.approx(-1.0)
    dens = np.array([[0.0, 0, 0], [1, 1, 1]])
    assert cc(sal, dens) == pytest.approx(1.0)
    assert cc(sal, np.array([[0.0, 1, 0], [1, 0, 1]])) == pytest.approx(1 / 3)   # 1 / sqrt(6 * 1.5)
    assert sim(sal, dens) == pytest.approx(0.75)                 # min(3/12, 1/3) three times
    assert kld(sal, dens) == pytest.approx(math.log(4 / 3), abs=1e-12)          # 3 * 1/3 * log((1/3) / (3/12))
    ramp = np.array([[1.0, 2, 3], [4, 5, 6]])
    fix = np.array([[0, 0, 1], [0, 0, 1]], bool)                 # positives 3, 6; negatives 1, 2, 4, 5
    assert auc_judd(ramp, fix) == pytest.approx(0.875)           # points (0,0) (0,.5) (.5,1) (1,1)
    oth = np.array([[0, 1, 0], [0, 1, 0]], bool)                 # rescaled negatives .2, .8 vs positives .4, 1
    assert auc_shuffled(ramp, fix, oth) == pytest.approx(0.75)
    assert auc_shuffled(ramp, fix, oth, step=0.5) == pytest.approx(0.625)        # (0,.5) (.5,.5) (1,1)
    assert auc_shuffled(ramp, fix, oth, step=None, n_splits=0) == pytest.approx(0.75)


# --- against scipy, scikit-learn and the MIT code ------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nss_cc_sim_kld_references(seed):
    sal, fix, dens = _maps(seed)
    z = stats.zscore(sal, axis=None)
    assert nss(sal, fix) == pytest.approx(z[fix].mean(), rel=1e-12)
    n = sal.size                                                  # the MIT code's n - 1 std: a factor sqrt((n-1)/n)
    assert _mit_nss(sal, fix) == pytest.approx(nss(sal, fix) * math.sqrt((n - 1) / n), rel=1e-12)
    assert cc(sal, dens) == pytest.approx(stats.pearsonr(sal.ravel(), dens.ravel())[0], rel=1e-10)
    assert cc(torch.tensor(sal, dtype=torch.float32), dens) == pytest.approx(cc(sal, dens), rel=1e-5)
    p, q = sal / sal.sum(), dens / dens.sum()
    assert sim(sal, dens) == pytest.approx(np.minimum(p, q).sum(), rel=1e-12)
    assert sim(sal, dens) == pytest.approx(sim(dens, sal), rel=1e-12)
    assert kld(sal, dens) == pytest.approx(stats.entropy(dens.ravel(), sal.ravel()), rel=1e-9)
    assert kld(sal, dens, eps=0) == pytest.approx(stats.entropy(dens.ravel(), sal.ravel()), rel=1e-12)
    assert kld(sal, dens) == pytest.approx(_mit_kldiv(sal, dens), rel=1e-12)


def _judd_from_roc(sal, fix):
    "roc_auc_score plus the documented gap: 1/2 sum_k a_k h_k."
    pos, neg = sal[fix], sal[~fix]
    t = np.unique(pos)[::-1]
    upper = np.r_[np.inf, t[:-1]]
    a = np.array([((neg > lo) & (neg < hi)).mean() for lo, hi in zip(t, upper)])
    h = np.array([(pos == v).mean() for v in t])
    return roc_auc_score(fix.ravel(), sal.ravel()) + 0.5 * (a * h).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_judd_references(seed):
    sal, fix, _ = _maps(seed)
    got = auc_judd(sal, fix)
    assert got == pytest.approx(_mit_auc_judd(sal, fix), abs=1e-12)            # no ties: the MIT loop exactly
    roc = roc_auc_score(fix.ravel(), sal.ravel())
    fpr_min = (sal[~fix] >= sal[fix].min()).mean()
    assert got == pytest.approx(roc + fpr_min / (2 * fix.sum()), abs=1e-12)     # the no-ties form of the gap
    assert got >= roc
    tied, _, _ = _maps(seed, ties=True)                                          # many ties
    assert auc_judd(tied, fix) == pytest.approx(_judd_from_roc(tied, fix), abs=1e-12)
    # jitter: the MIT procedure (noise added, then the MIT loop) with the same noise
    noise = np.random.default_rng(7).random(tied.shape) * 1e-7 * (tied.max() - tied.min())
    assert auc_judd(tied, fix, jitter=True, seed=7) == pytest.approx(_mit_auc_judd(tied + noise, fix), abs=1e-12)
    assert auc_judd(sal, fix, jitter=True, seed=3) == pytest.approx(got, abs=1e-9)   # no ties: jitter changes nothing


@pytest.mark.parametrize("seed", [0, 1])
def test_auc_shuffled_references(seed):
    sal, fix, _ = _maps(seed, p_fix=0.1)
    rng = np.random.default_rng(seed + 10)
    few = (rng.random(sal.shape) < 0.05) & ~fix                                  # L <= N: every split takes them all
    assert few.sum() <= fix.sum()
    assert auc_shuffled(sal, fix, few) == pytest.approx(_mit_auc_shuffled(sal, fix, few, 1, 0.1, rng), abs=1e-12)
    assert auc_shuffled(sal, fix, few, step=0.05) == pytest.approx(_mit_auc_shuffled(sal, fix, few, 1, 0.05, rng), abs=1e-12)
    pos, neg = sal[fix], sal[few]
    exact = roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])
    assert auc_shuffled(sal, fix, few, step=None) == pytest.approx(exact, abs=1e-12)
    # many negatives (K = N < L): random splits; their mean converges to the n_splits=0 limit, as the MIT loop's does
    many = rng.random(sal.shape) < 0.5
    limit = auc_shuffled(sal, fix, many, n_splits=0)
    assert auc_shuffled(sal, fix, many, n_splits=4000, seed=1) == pytest.approx(limit, abs=4e-3)
    assert _mit_auc_shuffled(sal, fix, many, 400, 0.1, rng) == pytest.approx(limit, abs=1e-2)
    assert auc_shuffled(sal, fix, many, seed=5) == auc_shuffled(torch.tensor(sal), fix, many, seed=5)   # seeded
    assert auc_shuffled(sal, fix, many, seed=5) != auc_shuffled(sal, fix, many, seed=6)
    # counts: the limit of exact thresholds is the ROC AUC with each location weighted by its count
    counts = rng.integers(0, 4, sal.shape)
    w = counts[counts > 0]
    exact = roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(w))], np.r_[pos, sal[counts > 0]],
                          sample_weight=np.r_[np.ones(len(pos)), w])
    assert auc_shuffled(sal, fix, counts, n_splits=0, step=None) == pytest.approx(exact, abs=1e-12)


# --- degenerate and bad input ----------------------------------------------------------------------------------------

def test_degenerate_inputs():
    sal, fix, dens = _maps(0)
    const = np.full(sal.shape, 0.7)
    assert (nss(const, fix), cc(const, dens), cc(sal, const), auc_judd(const, fix), auc_shuffled(const, fix, dens > 0.5)) == (0.0, 0.0, 0.0, 0.5, 0.5)
    uniform = np.full(sal.shape, 1 / sal.size)
    assert sim(np.zeros(sal.shape), dens) == pytest.approx(sim(uniform, dens))            # all zeros = uniform
    assert kld(np.zeros(sal.shape), dens) == pytest.approx(kld(const, dens))
    empty = np.zeros(sal.shape, bool)
    for f in (lambda: nss(sal, empty), lambda: auc_judd(sal, empty), lambda: auc_shuffled(sal, empty, fix)):
        with pytest.raises(ValueError, match="fixmap: no fixated pixel"): f()
    with pytest.raises(ValueError, match="other_fixmap: no fixation"): auc_shuffled(sal, fix, empty)
    with pytest.raises(ValueError, match="fixmap: every pixel is fixated"): auc_judd(sal, ~empty)
    with pytest.raises(ValueError, match="density: sums to 0"): kld(sal, np.zeros(sal.shape))
    with pytest.raises(ValueError, match=r"sal: minimum -0\.99\d* < 0, expected a non-negative map"): sim(sal - 1, dens)
    nan = sal.copy(); nan[3, 4] = np.nan
    for f in (nss, auc_judd):
        with pytest.raises(ValueError, match=r"sal: 1 NaN / inf value\(s\), first at \(3, 4\)"): f(nan, fix)
    with pytest.raises(ValueError, match="density: 1 NaN"): cc(sal, nan)
    with pytest.raises(ValueError, match=r"sal: shape \(12, 16\), expected \(24, 32\) \(the shape of fixmap\)"): nss(sal[::2, ::2], fix)
    with pytest.raises(ValueError, match=r"sal: shape \(12, 16\), expected \(24, 32\) \(the shape of density\)"): cc(sal[::2, ::2], dens)
    with pytest.raises(ValueError, match="fixmap: value 0.5"): nss(sal, fix * 0.5)
    with pytest.raises(ValueError, match="n_splits: -1"): auc_shuffled(sal, fix, fix, n_splits=-1)


# --- the batch -------------------------------------------------------------------------------------------------------

def test_batch_matches_per_image_functions():
    data = [_maps(s, shape=(12, 16)) for s in range(5)]
    preds = torch.tensor(np.stack([d[0] for d in data]), dtype=torch.float32)[:, None]   # (N, 1, H, W)
    fix = np.stack([d[1] for d in data]); dens = [d[2] for d in data]
    per = saliency_scores_per_image(preds, fix, dens, seed=3)
    p64 = preds[:, 0].double().numpy()
    for i in range(5):
        assert per["nss"][i] == pytest.approx(nss(p64[i], fix[i]))
        assert per["cc"][i] == pytest.approx(cc(p64[i], dens[i]))
        assert per["sim"][i] == pytest.approx(sim(p64[i], dens[i]))
        assert per["kld"][i] == pytest.approx(kld(p64[i], dens[i]))
        assert per["auc_judd"][i] == pytest.approx(auc_judd(p64[i], fix[i]))
        other = np.delete(fix, i, axis=0).sum(0)                                  # counts over the other images
        assert per["auc_shuffled"][i] == pytest.approx(auc_shuffled(p64[i], fix[i], other, seed=[3, i]))
    means = saliency_scores(preds, fix, dens, seed=3)
    assert list(means) == list(METRICS)
    assert [means[m] for m in METRICS] == pytest.approx([per[m].mean() for m in METRICS])
    only = saliency_scores_per_image(preds, fix, dens, metrics=("auc_shuffled", "nss"), seed=3)
    assert list(only) == ["auc_shuffled", "nss"] and np.array_equal(only["auc_shuffled"], per["auc_shuffled"])


def test_batch_resizes_and_mixed_sizes():
    small, big = _maps(0, shape=(12, 16)), _maps(1, shape=(24, 32))
    preds = [small[0], big[0][::2, ::2]]                                          # the second at half its size
    with pytest.warns(UserWarning, match=r"1 of 2 maps resized .* preds\[1\] \(12, 16\) -> \(24, 32\)"):
        per = saliency_scores_per_image(preds, [small[1], big[1]], [small[2], big[2]], seed=0)
    up = resize_map(big[0][::2, ::2], (24, 32))
    assert per["nss"][1] == pytest.approx(nss(up, big[1]))
    assert per["cc"][1] == pytest.approx(cc(up, big[2]))
    # the other image's fixations, mapped by pixel centres into each grid
    r, c = np.nonzero(big[1])
    into_small = np.zeros((12, 16), np.int64); np.add.at(into_small, (r // 2, c // 2), 1)
    assert per["auc_shuffled"][0] == pytest.approx(auc_shuffled(small[0], small[1], into_small, seed=[0, 0]))
    r, c = np.nonzero(small[1])
    into_big = np.zeros((24, 32), np.int64); np.add.at(into_big, (2 * r + 1, 2 * c + 1), 1)
    assert per["auc_shuffled"][1] == pytest.approx(auc_shuffled(up, big[1], into_big, seed=[0, 1]))


def test_batch_empty_fixations_and_errors():
    data = [_maps(s, shape=(12, 16)) for s in range(4)]
    preds = np.stack([d[0] for d in data]); fix = np.stack([d[1] for d in data]); dens = np.stack([d[2] for d in data])
    fix[1] = False; dens[1] = 0
    with pytest.warns(UserWarning, match=r"fixmaps: image\(s\) \[1\] have no fixation; densities: image\(s\) \[1\] sum to 0"):
        per = saliency_scores_per_image(preds, fix, dens)
    assert all(np.isnan(per[m][1]) for m in METRICS) and not any(np.isnan(per[m][[0, 2, 3]]).any() for m in METRICS)
    with pytest.warns(UserWarning):
        means = saliency_scores(preds, fix, dens)
    assert means["nss"] == pytest.approx(per["nss"][[0, 2, 3]].mean())
    with pytest.warns(UserWarning):
        assert math.isnan(saliency_scores(preds[1:2], fix[1:2], dens[1:2], metrics="nss")["nss"])   # nothing to average
    with pytest.raises(ValueError, match="no fixation outside image 0"): saliency_scores(preds[:1], fix[:1], dens[:1])
    with pytest.raises(ValueError, match="densities: None"): saliency_scores(preds, fix, metrics=("nss", "kld"))
    assert set(saliency_scores(preds[[0, 2]], fix[[0, 2]], metrics=("nss", "auc_judd"))) == {"nss", "auc_judd"}   # no densities needed
    with pytest.raises(ValueError, match=r"densities\[0\]: shape \(6, 8\), expected \(12, 16\)"): saliency_scores(preds, fix, dens[:, ::2, ::2])
    with pytest.raises(ValueError, match="fixmaps: 2 maps, expected 4"): saliency_scores(preds, fix[:2], dens)
    with pytest.raises(ValueError, match="metrics: 'auc'"): saliency_scores(preds, fix, dens, metrics="auc")
    with pytest.raises(ValueError, match="seed: -1"): saliency_scores(preds, fix, dens, seed=-1)
    bad = preds.copy(); bad[2, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"preds\[2\]: 1 NaN / inf"): saliency_scores(bad, fix, dens)


# --- pysaliency (skipped where it does not install / import) -------------------------------------------------------

@pytest.fixture(scope="module")
def pysal():
    """pysaliency, or a skip. pysaliency 0.2.22 imports `pkg_resources` (gone from setuptools >= 81) for its bundled
    external models only: a stub stands in for it during the import and is removed again."""
    stub = None
    if "pkg_resources" not in sys.modules:
        try: import pkg_resources  # noqa: F401
        except ImportError:
            def _unavailable(*a, **k): raise RuntimeError("pkg_resources is not installed")
            stub = types.ModuleType("pkg_resources")
            stub.resource_string = stub.resource_listdir = stub.resource_filename = _unavailable
            sys.modules["pkg_resources"] = stub
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pysaliency
            import pysaliency.metrics
            import pysaliency.roc
    except Exception as e:                                                        # noqa: BLE001 (any import failure skips)
        pytest.skip(f"pysaliency not installed or not importable ({type(e).__name__}: {e})")
    finally:
        if stub is not None and sys.modules.get("pkg_resources") is stub: del sys.modules["pkg_resources"]
    return pysaliency


@pytest.fixture
def trapz(monkeypatch):
    "pysaliency 0.2.22 calls np.trapz, removed in numpy 2.4: the same function under its new name, for this test."
    if not hasattr(np, "trapz"): monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)


@pytest.mark.parametrize("seed", [0, 1])
def test_against_pysaliency_map_metrics(pysal, trapz, seed):
    m, roc = pysal.metrics, pysal.roc
    sal, fix, dens = _maps(seed)
    ys, xs = np.nonzero(fix)
    assert nss(sal, fix) == pytest.approx(m.NSS(sal, xs, ys).mean(), rel=1e-12)
    assert cc(sal, dens) == pytest.approx(m.CC(sal, dens), rel=1e-12)
    assert sim(sal, dens) == pytest.approx(m.SIM(sal, dens), rel=1e-12)
    assert kld(sal, dens) == pytest.approx(m.MIT_KLDiv(sal, dens), rel=1e-4)     # pysaliency's eps is 2.2204e-16
    const = np.ones_like(sal)
    assert (nss(const, fix), cc(const, dens)) == (m.NSS(const, xs, ys).mean(), m.CC(const, dens))
    for s in (sal, _maps(seed, ties=True)[0]):                                    # AUC-Judd, also with ties
        ref, _, _ = roc.general_roc(s[fix].astype(float), s[~fix].astype(float), judd=1)
        assert auc_judd(s, fix) == pytest.approx(ref, abs=1e-12)


def test_against_pysaliency_shuffled_auc(pysal, trapz):
    "pysaliency's shuffled AUC (all other images' fixations, exact thresholds) is auc_shuffled(n_splits=0, step=None) on counts."
    data = [_maps(s, shape=(12, 16), p_fix=0.15) for s in range(4)]
    maps, fix = [d[0] for d in data], np.stack([d[1] for d in data])
    n, ys, xs = np.nonzero(fix)
    stimuli = pysal.Stimuli([np.full((12, 16), i, np.uint8) for i in range(4)])
    fixations = pysal.Fixations.create_without_history(xs.astype(float), ys.astype(float), n)

    class Fixed(pysal.SaliencyMapModel):
        def _saliency_map(self, stimulus): return maps[int(stimulus[0, 0])]

    model = Fixed(caching=False)
    ref = model.AUC_per_image(stimuli, fixations, nonfixations="shuffled")
    ref_judd = model.AUC_per_image(stimuli, fixations, nonfixations="unfixated", thresholds="fixations")
    for i in range(4):
        other = np.delete(fix, i, axis=0).sum(0)
        assert auc_shuffled(maps[i], fix[i], other, n_splits=0, step=None) == pytest.approx(ref[i], abs=1e-12)
        assert auc_judd(maps[i], fix[i]) == pytest.approx(ref_judd[i], abs=1e-12)
