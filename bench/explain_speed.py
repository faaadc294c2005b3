"""Explanation speed on the CPU: reprlab.explain's Grad-CAM against pytorch-grad-cam, and its LIME against the `lime`
package, on resnet18 (CIFAR stem) and the conv encoder at 64 px, 2 threads.

Models: `classifier("resnet18", encoder_kwargs=dict(cifar_stem=True))` and `classifier("conv")`, 10 classes, seeded
random weights (speed does not depend on them), eval mode. Images: CIFAR-10 test images from ../shared/data upsampled
to 64 px (bilinear), else smooth random ones; normalised with the CIFAR-10 mean and std for the models.

(a) Grad-CAM: a batch of 32 images, the same target layer (`find_target_layer`: encoder.features.7.1 / encoder.blocks.3)
    and the same targets (each image's predicted class) on both sides: `gradcam(model, x, targets, layer=name)` against
    `with GradCAM(model=model, target_layers=[layer]) as cam: cam(input_tensor=x, targets=[ClassifierOutputTarget(c)...])`
    (the construction inside the timing: it is how the library is used per batch, and it costs nothing). Images/s; the
    maps are compared (smallest Pearson correlation over the images, largest absolute difference). Grad-CAM++ the same
    way with `GradCAMPlusPlus` (a figure). reprlab also with `layer=None` (the layer found on each call; a figure).
(b) LIME: the same SLIC superpixels (`segment(image, n_segments=50)`, computed once, outside the timing), the same
    classifier (softmax of the model on normalised pixels, under `torch.no_grad`), the same target (the predicted class)
    and 1,000 samples: `lime(predict, image, segmenter=labels)` (its default batch of 16) against
    `LimeImageExplainer().explain_instance(image, classifier_fn, labels=(target,), top_labels=None, hide_color=None,
    num_samples=1000, segmentation_fn=lambda _: labels)` (its default batch of 10), `classifier_fn` converting its
    (N, H, W, 3) float64 batch to the same tensors. lime draws its on/off samples from a `RandomState` that replays
    reprlab's, so both fit the same data and the weights are compared (largest difference over the largest |weight|).
    Seconds per image, and the seconds spent in the classifier on each side (the rest is each library's own work).

Repetitions are interleaved (reprlab, then the library) after an untimed warm-up, each timed call after a 0.2 s pause
and a garbage collection; a ratio is the median of the per-repetition ratios (LIME: 3 repetitions per image for conv,
1 for resnet18, whose runs take 25 s each). Claims: the smallest Grad-CAM ratio over
the two models (goal >= 2x), and the smallest LIME ratio (goal >= 5x). `--quick` runs 2 Grad-CAM repetitions (no Grad-CAM++) and 1
LIME image per model with 200 samples for resnet18 (both sides scale with the samples alike), in about a minute.

`bound_same_classifier_time` is lime's time over the time its classifier calls take: the largest ratio any LIME could
reach with the same classifier calls (its own work free). Both sides call the same classifier on the same 1,000 images
(reprlab in batches of 16, lime of 10: about the same speed on a CPU), so this bounds the LIME claim.

    python bench/explain_speed.py [--quick] [--threads 2] [--reps 5] [--lime-images 2]
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")                    # lime's per-sample progress bar: not part of its work
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import claim, table, write  # noqa: E402

from reprlab.explain import find_target_layer, get_layer, gradcam, lime, segment  # noqa: E402
from reprlab.heads import classifier  # noqa: E402
from reprlab.testing import shared_data  # noqa: E402

MODELS = {"resnet18": dict(cifar_stem=True), "conv": {}}
LIME_REPS = {"resnet18": 1, "conv": 3}                          # timed LIME runs per image and side (resnet18: 25 s each)
MEAN, STD = torch.tensor([0.491, 0.482, 0.447]).view(3, 1, 1), torch.tensor([0.247, 0.243, 0.261]).view(3, 1, 1)
SIZE, BATCH = 64, 32


def load_images(n: int) -> tuple[torch.Tensor, str]:
    "`n` float (n, 3, 64, 64) images in [0, 1]: CIFAR-10 test images upsampled, or smooth random ones; and where from."
    p = shared_data("cifar10-test.npz")
    if p is not None:
        x, origin = torch.from_numpy(np.load(p)["images"][:n]).permute(0, 3, 1, 2).float() / 255, p.name
    else:
        x, origin = F.interpolate(torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0)), size=32, mode="bilinear"), "generated"
    return F.interpolate(x, size=SIZE, mode="bilinear", align_corners=False).clamp(0, 1), str(origin)


def pause():
    gc.collect(); time.sleep(0.2)


def timed(f):
    pause()
    t = time.perf_counter(); out = f()
    return time.perf_counter() - t, out


def pearson_min(a, b) -> float:
    a, b = np.asarray(a, np.float64).reshape(len(a), -1), np.asarray(b, np.float64).reshape(len(b), -1)
    keep = (a.std(1) > 0) & (b.std(1) > 0)
    return float(min(np.corrcoef(x, y)[0, 1] for x, y in zip(a[keep], b[keep]))) if keep.any() else float("nan")


def bench_gradcam(m, x, reps: int, pgc, plus_plus: bool = True) -> dict:
    "Images/s of reprlab's gradcam and pytorch-grad-cam's, plain and ++, with the maps compared."
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    name, layer = find_target_layer(m)
    with torch.no_grad(): cls = m(x).argmax(1)
    tg = [ClassifierOutputTarget(int(c)) for c in cls]
    out = dict(layer=name)
    for kind, pp, cam_cls in (("gradcam", False, pgc.GradCAM), ("gradcam++", True, pgc.GradCAMPlusPlus))[:2 if plus_plus else 1]:
        def ours(): return gradcam(m, x, targets=cls, layer=name, plus_plus=pp)[0]
        def ours_auto(): return gradcam(m, x, targets=cls, plus_plus=pp)[0]
        def theirs():
            with cam_cls(model=m, target_layers=[layer]) as cam: return cam(input_tensor=x, targets=tg)
        a, b = ours(), theirs(); ours_auto()                                   # warm-up, and the maps to compare
        t_o, t_t, t_a = [], [], []
        for _ in range(reps):
            t_o.append(timed(ours)[0]); t_t.append(timed(theirs)[0])
            if kind == "gradcam": t_a.append(timed(ours_auto)[0])
        m.zero_grad(set_to_none=True)                                          # pytorch-grad-cam leaves parameter gradients
        out[kind] = dict(reprlab_img_s=len(x) / statistics.median(t_o), pytorch_grad_cam_img_s=len(x) / statistics.median(t_t),
                         ratio=statistics.median([t / o for o, t in zip(t_o, t_t)]),
                         min_pearson=pearson_min(a, b), max_abs_diff=float(np.abs(a.numpy() - b).max()),
                         reprlab_seconds=[round(v, 4) for v in t_o], pytorch_grad_cam_seconds=[round(v, 4) for v in t_t])
        if t_a: out[kind]["reprlab_layer_none_img_s"] = len(x) / statistics.median(t_a)
    return out


class Counted:
    "The classifier both LIMEs call: softmax of the model on normalised pixels, timing its own calls."
    def __init__(self, m): self.m, self.seconds, self.calls = m, 0.0, 0
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        with torch.no_grad(): p = self.m((x - MEAN) / STD).softmax(1)
        self.seconds += time.perf_counter() - t; self.calls += 1
        return p


def bench_lime(m, images: torch.Tensor, samples: int, reps: int, lime_image) -> dict:
    "Seconds per image of reprlab's lime and the lime package's on the same superpixels, classifier and samples."
    rows = []
    for img in images:
        labels = segment(img, "slic", n_segments=50)
        with torch.no_grad(): target = int(m(((img - MEAN) / STD)[None]).argmax())
        replay = {}

        class Replay(np.random.RandomState):
            "lime's on/off samples: reprlab's (lime sets the first to all on, as reprlab does)."
            def randint(self, low, high=None, size=None): return 0 if size is None else replay["samples"].astype(np.int64).ravel()

        def ours(n=samples):
            p = Counted(m); res = lime(p, img, num_samples=n, segmenter=labels, target=target)
            replay["samples"] = res["samples"]
            return p, res

        def theirs(n=samples):
            p = Counted(m)
            e = lime_image.LimeImageExplainer(random_state=Replay(0)).explain_instance(
                img.permute(1, 2, 0).double().numpy(), lambda a: p(torch.from_numpy(a).float().permute(0, 3, 1, 2)).numpy(),
                labels=(target,), top_labels=None, hide_color=None, num_samples=n, segmentation_fn=lambda _: labels)
            return p, e
        ours(64); theirs(64)                                                     # warm-up
        runs = []
        for _ in range(reps):
            t_o, (p_o, res) = timed(ours)
            t_t, (p_t, e) = timed(theirs)                                        # the same samples as reprlab's timed run
            runs.append((t_o, t_t, p_o.seconds, p_t.seconds))
        w = np.zeros_like(res["weights"])
        for j, v in e.local_exp[target]: w[j] = v
        scale = max(np.abs(w).max(), 1e-300)
        col = lambda k: statistics.median(r_[k] for r_ in runs)
        rows.append(dict(reprlab_s=col(0), lime_s=col(1), ratio=statistics.median(r_[1] / r_[0] for r_ in runs),
                         reprlab_classifier_s=col(2), lime_classifier_s=col(3), reps=reps, reprlab_calls=p_o.calls,
                         lime_calls=p_t.calls, superpixels=int(labels.max()) + 1,
                         max_rel_weight_diff=float(np.abs(res["weights"] - w).max() / scale),
                         seconds=[[round(v, 4) for v in r_] for r_ in runs]))
    med = lambda k: statistics.median(r_[k] for r_ in rows)
    own_o, own_t = med("reprlab_s") - med("reprlab_classifier_s"), med("lime_s") - med("lime_classifier_s")
    return dict(samples=samples, images=len(rows), reprlab_s_per_image=med("reprlab_s"), lime_s_per_image=med("lime_s"),
                ratio=statistics.median(r_["ratio"] for r_ in rows), reprlab_own_s=own_o, lime_own_s=own_t,
                own_work_ratio=own_t / own_o if own_o > 0 else None,
                classifier_share_of_lime=med("lime_classifier_s") / med("lime_s"),
                bound_same_classifier_time=med("lime_s") / med("lime_classifier_s"), per_image=rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 Grad-CAM repetitions (no ++), 1 LIME image per model, 200 samples for resnet18 (about a minute)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5, help="timed Grad-CAM repetitions per side (median)")
    ap.add_argument("--lime-images", type=int, default=2, help="images LIME explains per model (median seconds per image)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    try:
        import pytorch_grad_cam as pgc
        from lime import lime_image
    except ImportError as e:
        sys.exit(f"explain_speed needs pytorch-grad-cam and lime: pip install grad-cam lime (the bench extra); {e}")
    from threadpoolctl import threadpool_limits
    threadpool_limits(a.threads)                                                  # scikit-learn's BLAS in both LIMEs
    reps, n_lime = (2, 1) if a.quick else (a.reps, a.lime_images)
    raw, origin = load_images(BATCH)
    x = (raw - MEAN) / STD
    load_before = os.getloadavg()
    figures = dict(images=origin, size=SIZE, batch=BATCH, threads=a.threads, gradcam={}, lime={})
    for name, kw in MODELS.items():
        torch.manual_seed(0)
        m = classifier(name, n_classes=10, encoder_kwargs=kw).eval()
        figures["gradcam"][name] = bench_gradcam(m, x, reps, pgc, plus_plus=not a.quick)
        print(f"{name}: Grad-CAM done", flush=True)
        samples = 200 if a.quick and name == "resnet18" else 1000
        figures["lime"][name] = bench_lime(m, raw[:n_lime], samples, LIME_REPS[name], lime_image)
        print(f"{name}: LIME done", flush=True)
    figures["load_avg_before"], figures["load_avg_after"] = load_before, os.getloadavg()
    g, li = figures["gradcam"], figures["lime"]
    rows = [dict(case=f"{k} {n}", reprlab=f"{v[k]['reprlab_img_s']:,.1f}", library=f"{v[k]['pytorch_grad_cam_img_s']:,.1f}",
                 ratio=f"{v[k]['ratio']:.2f}x", agreement=f"r >= {v[k]['min_pearson']:.4f}") for n, v in g.items() for k in ("gradcam", "gradcam++") if k in v]
    print(table(rows, ["case", "reprlab", "library", "ratio", "agreement"]) + f"   (images / second, batch {BATCH}, {SIZE} px; library: pytorch-grad-cam)")
    rows = [dict(model=n, samples=v["samples"], reprlab=f"{v['reprlab_s_per_image']:.2f}", lime=f"{v['lime_s_per_image']:.2f}",
                 ratio=f"{v['ratio']:.2f}x", own_work=f"{v['reprlab_own_s']:.3f} / {v['lime_own_s']:.3f}",
                 classifier_share=f"{100 * v['classifier_share_of_lime']:.0f} %", bound=f"{v['bound_same_classifier_time']:.2f}x")
            for n, v in li.items()]
    print(table(rows, ["model", "samples", "reprlab", "lime", "ratio", "own_work", "classifier_share", "bound"])
          + "   (seconds per image; own work = outside the classifier, reprlab / lime; bound = lime / its classifier time)")
    print(f"load average (1, 5, 15 min) before {load_before}, after {figures['load_avg_after']}")
    claims = [claim(f"Grad-CAM images/s, reprlab / pytorch-grad-cam, the smaller over resnet18 and conv (batch {BATCH}, {SIZE} px)",
                    min(v["gradcam"]["ratio"] for v in g.values()), ">= 2"),
              claim("LIME seconds per image, lime package / reprlab, the smaller over resnet18 and conv (same superpixels, classifier, samples)",
                    min(v["ratio"] for v in li.values()), ">= 5")]
    write("explain_speed", figures, claims, extra_versions=("grad-cam", "lime", "scikit-image", "scikit-learn", "numpy"),
          settings=dict(threads=a.threads, reps=reps, lime_images=n_lime), quick=a.quick)


if __name__ == "__main__":
    main()
