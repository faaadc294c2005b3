"""kNN evaluation speed on the CPU: reprlab's weighted kNN against scikit-learn and faiss-cpu, and feature extraction
against a bare `torch.no_grad()` loop.

Cases: 15,000 train x 5,000 test features of dimension 512, and 50,000 x 10,000 of dimension 384 (random normal,
L2-normalised, 10 random classes), k = 20, 2 threads for everyone (torch, faiss's OpenMP, numpy's and
scikit-learn's BLAS). Every side starts from the same float32 arrays (numpy views of the same tensors).

(a) `knn_classify(k=20, weighting="uniform")` against scikit-learn `KNeighborsClassifier(n_neighbors=20,
    algorithm="brute", metric="cosine")` fit + predict (uniform weights: the same majority vote, ties to the lower
    class in both). Agreement: the fraction of equal predictions, where a differing one still counts as equal when
    scikit-learn's prediction is the vote of another choice among the training rows tied at the 20th place (exact
    float64 similarities within 1e-6: scikit-learn rounds its own distances, and its predict and kneighbors even
    round differently from each other).
(b) `knn_classify(k=20, temperature=0.07)` (DINO's setting) against faiss `IndexFlatIP` (exact inner-product search:
    add + search) followed by the same vote in torch (`exp(sim / T)` summed per class, argmax). Agreement: the
    fraction of queries with the same neighbour index set as faiss, where a differing set still counts when the two
    sets' exact (float64) similarities are equal to 1e-6, i.e. the sets differ only among neighbours whose
    similarities are equal up to float32 rounding (each library rounds its own matrix product).
(c) images/s of `reprlab.evaluate.extract_features` against a hand-written `torch.no_grad()` loop over the same
    encoder (`create_encoder("conv")`, eval mode), the same 4,096 (--quick: 2,048) random uint8 32x32 images (an
    `ImageDataset` for reprlab, the tensor itself for the loop), the same scaling to [0, 1], batch 256; the
    features are compared (max |diff| is recorded).

Repetitions are interleaved (a b c a b c ...) after one untimed warm-up each, and each ratio is the median of the
per-repetition ratios, so machine noise hits both sides alike. Each timed call starts after a 0.2 s pause: BLAS
worker threads (OpenBLAS's spin ~0.1 s after a call) and OpenMP threads left spinning by the previous side would
otherwise slow down whichever side runs next (measured: reprlab timed right after scikit-learn ran 10-50 % slower). The
the load average before and after is recorded. Claims are over the worst case (smallest speed-up, largest ratio).
The full run also times k=200, T=0.1 (the evaluation script's second setting) against faiss, as a figure only.

    python bench/knn_speed.py [--quick] [--reps 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import claim, table, write  # noqa: E402

from reprlab.data import ImageDataset  # noqa: E402
from reprlab.encoders import create_encoder  # noqa: E402
from reprlab.evaluate import extract_features, knn_classify, knn_search  # noqa: E402

CASES = {"15k x 5k, d=512": (15_000, 5_000, 512), "50k x 10k, d=384": (50_000, 10_000, 384)}
K, T, N_CLASSES, TIE = 20, 0.07, 10, 1e-6


def make_case(n: int, m: int, d: int, seed: int = 0):
    "L2-normalised random normal train / test features and random labels."
    g = torch.Generator().manual_seed(seed)
    tr, te = F.normalize(torch.randn(n, d, generator=g), dim=1), F.normalize(torch.randn(m, d, generator=g), dim=1)
    return tr, torch.randint(0, N_CLASSES, (n,), generator=g), te


def vote(sims: torch.Tensor, idx: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    "The same weighted vote as knn_classify, from someone else's neighbours."
    w = (torch.as_tensor(sims) / temperature).exp()
    s = torch.zeros(len(w), N_CLASSES).scatter_add_(1, y[torch.as_tensor(idx).long()], w)
    return s.argmax(1)


def tie_equal(tr: np.ndarray, te: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    "Per query: neighbour sets `a` and `b` are the same, or their exact similarities agree to TIE (a tie at the k-th place)."
    same = np.array([set(x) == set(y) for x, y in zip(a, b)])
    t64 = tr.astype(np.float64) if not same.all() else None
    for q in np.flatnonzero(~same):
        q64 = te[q].astype(np.float64)
        sa, sb = np.sort(t64[a[q]] @ q64), np.sort(t64[b[q]] @ q64)
        same[q] = np.abs(sa - sb).max() <= TIE
    return same


def tie_explains(t64: np.ndarray, q: np.ndarray, y: np.ndarray, pred: int, k: int = K) -> bool:
    "Whether some choice among the training rows tied (to TIE, exact similarities) at the k-th place votes `pred`."
    s = t64 @ q.astype(np.float64)
    sk = np.sort(s)[::-1][k - 1]
    sure, tied = np.flatnonzero(s > sk + TIE), np.flatnonzero(np.abs(s - sk) <= TIE)
    return any(int(np.bincount(y[np.r_[sure, list(pick)]], minlength=N_CLASSES).argmax()) == pred
               for pick in itertools.combinations(tied, k - len(sure)))


def interleaved(fns: dict, reps: int, pause: float = 0.2) -> dict:
    "Seconds per call of each function, `reps` rounds of one call each in turn (after one untimed warm-up each)."
    for f in fns.values(): f()
    ts = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            gc.collect(); time.sleep(pause)      # the previous call's BLAS / OpenMP threads stop spinning (~0.1 s)
            t = time.perf_counter(); f(); ts[k].append(time.perf_counter() - t)
    return ts


def med_ratio(a: list, b: list) -> float:
    "The median of the per-repetition ratios a / b."
    return statistics.median(x / y for x, y in zip(a, b))


def knn_case(name: str, n: int, m: int, d: int, reps: int, threads: int, wide: bool = False) -> dict:
    "Times and agreement of one case; `wide` also times k=200, T=0.1 against faiss (a figure, not a claim)."
    import faiss
    from sklearn.neighbors import KNeighborsClassifier
    from threadpoolctl import threadpool_limits
    tr, y, te = make_case(n, m, d)
    trn, ten, yn = tr.numpy(), te.numpy(), y.numpy()

    def sklearn_run():
        return KNeighborsClassifier(n_neighbors=K, algorithm="brute", metric="cosine").fit(trn, yn).predict(ten)

    def faiss_run(k=K, t=T):
        index = faiss.IndexFlatIP(d); index.add(trn)
        sims, idx = index.search(ten, k)
        return vote(torch.from_numpy(sims), torch.from_numpy(idx), y, t), idx

    with threadpool_limits(threads, user_api="blas"):
        # agreement, once, outside the timing
        ours_uniform = knn_classify(tr, y, te, k=K, weighting="uniform")[0].numpy()
        skl = sklearn_run()
        diff = np.flatnonzero(ours_uniform != skl)
        _, ours_idx = knn_search(tr, te, K)
        ours_idx = ours_idx.numpy()
        # a differing prediction counts as equal when another choice among neighbours tied at the k-th place gives it
        t64 = trn.astype(np.float64) if len(diff) else None
        explained = sum(tie_explains(t64, ten[q], yn, int(skl[q])) for q in diff)
        f_pred, (fa_pred, fa_idx) = knn_classify(tr, y, te, k=K, temperature=T)[0], faiss_run()
        identical = np.array([set(a) == set(b) for a, b in zip(ours_idx, fa_idx)])
        tie_ok = tie_equal(trn, ten, ours_idx, fa_idx)
        fns = {"reprlab_uniform": lambda: knn_classify(tr, y, te, k=K, weighting="uniform"),
               "sklearn": sklearn_run,
               "reprlab": lambda: knn_classify(tr, y, te, k=K, temperature=T),
               "faiss": faiss_run}
        if wide: fns.update(reprlab_k200=lambda: knn_classify(tr, y, te, k=200, temperature=0.1), faiss_k200=lambda: faiss_run(200, 0.1))
        ts = interleaved(fns, reps)
    out = dict(n_train=n, n_test=m, dim=d, k=K, temperature=T, reps=reps,
               seconds={k: statistics.median(v) for k, v in ts.items()}, seconds_all={k: [round(x, 4) for x in v] for k, v in ts.items()},
               speedup_vs_sklearn=med_ratio(ts["sklearn"], ts["reprlab_uniform"]),
               ratio_to_faiss=med_ratio(ts["reprlab"], ts["faiss"]),
               sklearn_equal_predictions=float((ours_uniform == skl).mean()),
               sklearn_differing=int(len(diff)), sklearn_differing_explained_by_ties=explained,
               sklearn_agreement=float(((ours_uniform == skl).sum() + explained) / m),
               faiss_identical_sets=float(identical.mean()), faiss_sets_equal_but_ties=float(tie_ok.mean()),
               faiss_equal_predictions=float((f_pred == fa_pred).float().mean()))
    if wide: out["ratio_to_faiss_k200"] = med_ratio(ts["reprlab_k200"], ts["faiss_k200"])
    print(f"{name}: reprlab {out['seconds']['reprlab']:.3f} s (uniform {out['seconds']['reprlab_uniform']:.3f} s), "
          f"faiss {out['seconds']['faiss']:.3f} s, scikit-learn {out['seconds']['sklearn']:.2f} s; "
          f"speed-up {out['speedup_vs_sklearn']:.1f}x, ratio to faiss {out['ratio_to_faiss']:.3f}; "
          f"sets as faiss {out['faiss_identical_sets']:.4f} ({out['faiss_sets_equal_but_ties']:.4f} with ties), "
          f"predictions as scikit-learn {out['sklearn_equal_predictions']:.4f} ({out['sklearn_agreement']:.4f} with ties)", flush=True)
    return out


def extraction(n_images: int, reps: int, bs: int = 256) -> dict:
    "images/s of extract_features and of a bare no_grad loop over the same encoder and images."
    g = torch.Generator().manual_seed(1)
    imgs = torch.randint(0, 256, (n_images, 3, 32, 32), dtype=torch.uint8, generator=g)
    ds = ImageDataset(images=imgs, labels=np.arange(n_images) % N_CLASSES)
    torch.manual_seed(0)
    enc = create_encoder("conv").eval()

    def bare():
        with torch.no_grad():
            return torch.cat([enc(imgs[i:i + bs].float().div_(255)) for i in range(0, n_images, bs)])

    ours, ref = extract_features(enc, ds, batch_size=bs, device="cpu")[0], bare()
    max_diff = float((ours - ref).abs().max())
    ts = interleaved({"extract_features": lambda: extract_features(enc, ds, batch_size=bs, device="cpu"), "bare": bare}, reps)
    out = dict(n_images=n_images, batch_size=bs, reps=reps, feature_dim=ours.shape[1], max_abs_diff=max_diff,
               img_s={k: n_images / statistics.median(v) for k, v in ts.items()},
               ratio=med_ratio(ts["bare"], ts["extract_features"]))     # time ratio bare / ours = img/s ours / bare
    print(f"extraction: extract_features {out['img_s']['extract_features']:,.0f} img/s, bare loop {out['img_s']['bare']:,.0f} img/s, "
          f"ratio {out['ratio']:.3f}, max |diff| {max_diff:.2g}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the smaller case only, 3 repetitions; extraction: 2,048 images, 7 repetitions (about a minute)")
    ap.add_argument("--reps", type=int, default=5, help="kNN repetitions (the larger case: 2 fewer, at least 3); extraction: at least 9")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=None, help="images for the extraction (default 4,096; --quick: 2,048)")
    a = ap.parse_args()
    import faiss
    torch.set_num_threads(a.threads); faiss.omp_set_num_threads(a.threads)
    reps = 3 if a.quick else a.reps
    # extraction: single repetitions scatter by +-10 % here, so more and shorter ones
    images, ext_reps = a.images or (2048 if a.quick else 4096), 7 if a.quick else max(a.reps, 9)
    load_before = os.getloadavg()
    cases = {k: v for k, v in CASES.items() if not a.quick or v[0] == 15_000}
    figures = {"knn": {}, "load_avg_before": load_before}
    for name, (n, m, d) in cases.items():
        figures["knn"][name] = knn_case(name, n, m, d, reps if n < 50_000 else max(3, reps - 2), a.threads, wide=not a.quick)
    figures["extraction"] = extraction(images, ext_reps)
    figures["load_avg_after"] = os.getloadavg()
    rows = []
    for name, f in figures["knn"].items():
        s = f["seconds"]
        rows += [dict(case=name, method="reprlab knn_classify (exp, T=0.07)", seconds=f"{s['reprlab']:.3f}", vs=f"{f['ratio_to_faiss']:.2f}x faiss",
                      agreement=f"sets {f['faiss_sets_equal_but_ties']:.4f} (identical {f['faiss_identical_sets']:.4f})"),
                 dict(case=name, method="faiss IndexFlatIP + vote", seconds=f"{s['faiss']:.3f}", vs="", agreement=""),
                 *([dict(case=name, method="reprlab knn_classify (k=200, T=0.1)", seconds=f"{s['reprlab_k200']:.3f}",
                         vs=f"{f['ratio_to_faiss_k200']:.2f}x faiss", agreement="(not claimed)"),
                    dict(case=name, method="faiss IndexFlatIP + vote (k=200)", seconds=f"{s['faiss_k200']:.3f}", vs="", agreement="")]
                   if "reprlab_k200" in s else []),
                 dict(case=name, method="reprlab knn_classify (uniform)", seconds=f"{s['reprlab_uniform']:.3f}", vs=f"{f['speedup_vs_sklearn']:.1f}x faster",
                      agreement=f"pred {f['sklearn_agreement']:.4f} (equal {f['sklearn_equal_predictions']:.4f})"),
                 dict(case=name, method="sklearn brute cosine fit+predict", seconds=f"{s['sklearn']:.3f}", vs="", agreement="")]
    e = figures["extraction"]
    rows += [dict(case=f"{e['n_images']} imgs 32px", method="extract_features (conv)", seconds=f"{e['n_images'] / e['img_s']['extract_features']:.3f}",
                  vs=f"{e['ratio']:.3f}x bare img/s", agreement=f"max diff {e['max_abs_diff']:.1g}"),
             dict(case=f"{e['n_images']} imgs 32px", method="bare no_grad loop", seconds=f"{e['n_images'] / e['img_s']['bare']:.3f}", vs="", agreement="")]
    print(table(rows, ["case", "method", "seconds", "vs", "agreement"]))
    print(f"load average (1, 5, 15 min) before {load_before}, after {figures['load_avg_after']}")
    knn = figures["knn"].values()
    claims = [
        claim("reprlab kNN speed-up over scikit-learn brute cosine fit+predict (k=20, uniform vote), x, smallest over cases",
              min(f["speedup_vs_sklearn"] for f in knn), ">= 10"),
        claim("fraction of predictions equal to scikit-learn's (a difference counts as equal only when explained by a tie at the k-th neighbour), smallest over cases",
              min(f["sklearn_agreement"] for f in knn), ">= 1.0"),
        claim("reprlab kNN time / faiss IndexFlatIP search + the same vote (k=20, T=0.07), largest over cases",
              max(f["ratio_to_faiss"] for f in knn), "<= 1.2"),
        claim("fraction of neighbour sets equal to faiss's (differences only among similarities equal to 1e-6), smallest over cases",
              min(f["faiss_sets_equal_but_ties"] for f in knn), ">= 1.0"),
        claim("extract_features images/s / hand-written no_grad loop images/s (conv encoder, 32 px, batch 256)", e["ratio"], ">= 0.95"),
    ]
    write("knn_speed", figures, claims, extra_versions=("faiss-cpu", "scikit-learn", "numpy"),
          settings=dict(threads=a.threads, reps=reps, k=K, temperature=T, images=images, extraction_reps=ext_reps), quick=a.quick)


if __name__ == "__main__":
    main()
