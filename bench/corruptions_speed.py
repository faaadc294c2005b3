"""CIFAR-10-C corruption speed on the CPU: reprlab.corruptions (batched torch) against the `imagecorruptions` package
(one image at a time, its only API), for the 15 corruptions both have, and the wall time to build all 75 variants
(15 corruptions x 5 severities) of 5,000 test images.

Images: 32 x 32 CIFAR-10 test images from ../shared/data/cifar10-test.npz when present, else smooth random images.
reprlab corrupts N images (default 5,000; --quick 1,000) at each severity 1-5 with `corrupt` (uint8 in, uint8 out);
imagecorruptions corrupts the first M of them (default 200; --quick 40) at each severity with
`imagecorruptions.corrupt(img, corruption_name=..., severity=...)` (uint8 HWC in, uint8 out). A corruption's speed is
images / second over its 5 severities. The two do the same operations with different constants: reprlab uses
CIFAR-10-C's (make_cifar_c.py), imagecorruptions ImageNet-C's scaled to the image size, so some of its kernels are
larger (motion blur radius 10-20 against 6-9, glass blur up to 4-pixel shifts), and its frost reads a photograph from
disk per call where reprlab crops a cached texture. Both sides get `--threads` (torch, OpenCV, BLAS); numpy's own
loops are single-threaded. The ratio per corruption is reprlab images/s / imagecorruptions images/s; the claim is on
its median over the 15.

imagecorruptions 1.1.2 predates numpy 2, scikit-image 0.19's `channel_axis` and setuptools without
`pkg_resources`; the benchmark imports it through small shims that change none of its computations
(`pkg_resources.resource_filename`, `np.float_`, `gaussian(multichannel=True)` -> `channel_axis=-1`). It is skipped with
a message when not installed (`pip install imagecorruptions`, the bench extra).

The 75-variant build: `corrupted_dataset` of the first 5,000 images (--quick: N) for every corruption and severity, one
after the other in one process, wall clock.

    python bench/corruptions_speed.py [--quick] [--threads 2] [--reps 3] [--images N] [--their-images M]
"""
from __future__ import annotations

import argparse
import gc
import importlib.resources
import os
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import claim, table, write  # noqa: E402

from reprlab.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corrupted_dataset  # noqa: E402
from reprlab.testing import shared_data  # noqa: E402


def load_images(n: int) -> tuple[torch.Tensor, str]:
    "`n` uint8 (n, 3, 32, 32) CIFAR-10 test images (repeated if fewer), or smooth random ones; and where they came from."
    p = shared_data("cifar10-test.npz")
    if p is not None:
        a = np.load(p)["images"]
        a = np.concatenate([a] * (-(-n // len(a))))[:n]
        return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(), str(p.name)
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=32, mode="bilinear")
    return (x * 255).to(torch.uint8), "generated (smooth random)"


def import_imagecorruptions():
    "imagecorruptions with compatibility shims for today's numpy / scikit-image / setuptools, or None (with why)."
    shims = []
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        m = types.ModuleType("pkg_resources")
        m.resource_filename = lambda pkg, name: str(importlib.resources.files(pkg.rsplit(".", 1)[0] if pkg.endswith(".corruptions") else pkg).joinpath(name))
        sys.modules["pkg_resources"] = m; shims.append("pkg_resources.resource_filename")
    if not hasattr(np, "float_"): np.float_ = np.float64; shims.append("np.float_ = np.float64")
    try:
        import skimage.filters
        import imagecorruptions
        import imagecorruptions.corruptions as icc
    except ImportError as e:
        return None, f"imagecorruptions not importable ({e}); pip install imagecorruptions (bench extra)", shims
    import inspect
    if "multichannel" not in inspect.signature(skimage.filters.gaussian).parameters:
        orig = skimage.filters.gaussian

        def gaussian(*a, multichannel=None, **k):
            if multichannel: k.setdefault("channel_axis", -1)
            return orig(*a, **k)
        icc.gaussian = gaussian; shims.append("skimage.filters.gaussian(multichannel=True) -> channel_axis=-1")
    return imagecorruptions, None, shims


def time_ours(x: torch.Tensor, name: str) -> float:
    "Seconds to corrupt `x` at every severity."
    t = time.perf_counter()
    for s in SEVERITIES: corrupt(x, name, s)
    return time.perf_counter() - t


def time_theirs(ic, imgs: np.ndarray, name: str) -> float:
    "Seconds for imagecorruptions to corrupt each image of `imgs` (HWC uint8) at every severity, one call per image."
    t = time.perf_counter()
    for s in SEVERITIES:
        for im in imgs: ic.corrupt(im, corruption_name=name, severity=s)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 images for reprlab, 40 for imagecorruptions, 2 repetitions (about a minute)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions of reprlab's side (median); imagecorruptions runs once per repetition too")
    ap.add_argument("--images", type=int, default=None, help="images reprlab corrupts per severity (default 5,000; --quick 1,000)")
    ap.add_argument("--their-images", type=int, default=None, help="images imagecorruptions corrupts per severity (default 200; --quick 40)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    n, m, reps = a.images or (1000 if a.quick else 5000), a.their_images or (40 if a.quick else 200), 2 if a.quick else a.reps
    x, origin = load_images(max(n, m))
    x = x[:n] if n >= m else x
    theirs_imgs = x[:m].permute(0, 2, 3, 1).contiguous().numpy()
    ic, why, shims = import_imagecorruptions()
    if ic is None: print(f"skipping imagecorruptions: {why}", flush=True)
    else:
        import cv2
        from threadpoolctl import threadpool_limits
        cv2.setNumThreads(a.threads); threadpool_limits(a.threads)
    load_before = os.getloadavg()
    for name in CORRUPTIONS:                                                     # warm-up: caches, tables, textures, imports
        time_ours(x[:64], name)
        if ic is not None: time_theirs(ic, theirs_imgs[:2], name)
    ours = {k: [] for k in CORRUPTIONS}; theirs = {k: [] for k in CORRUPTIONS}
    for r in range(reps):                                                        # interleaved: machine noise hits both sides
        for name in CORRUPTIONS:
            gc.collect(); time.sleep(0.1)
            ours[name].append(time_ours(x[:n], name))
            if ic is not None and (r == 0 or not a.quick):
                gc.collect(); time.sleep(0.1)
                theirs[name].append(time_theirs(ic, theirs_imgs, name))
        print(f"repetition {r + 1}/{reps} done", flush=True)
    per = {}
    for name in CORRUPTIONS:
        o = 5 * n / statistics.median(ours[name])
        t = 5 * m / statistics.median(theirs[name]) if theirs[name] else None
        per[name] = dict(reprlab_img_s=o, imagecorruptions_img_s=t, ratio=o / t if t else None,
                         reprlab_seconds=[round(v, 4) for v in ours[name]], imagecorruptions_seconds=[round(v, 4) for v in theirs[name]])
    # the 75-variant build, end to end
    build_n = min(5000, n)
    gc.collect(); time.sleep(0.2)
    t0 = time.perf_counter()
    for name in CORRUPTIONS:
        for s in SEVERITIES: corrupted_dataset(x[:build_n], name, s, batch_size=1024)
    build_s = time.perf_counter() - t0
    figures = dict(per_corruption=per, images=origin, reprlab_images=n, imagecorruptions_images=m if ic else None,
                   build_75=dict(images=build_n, seconds=build_s, variants=75, img_s=75 * build_n / build_s),
                   imagecorruptions_shims=shims if ic else None, imagecorruptions_skipped=why,
                   load_avg_before=load_before, load_avg_after=os.getloadavg())
    rows = [dict(corruption=k, reprlab=f"{v['reprlab_img_s']:,.0f}",
                 imagecorruptions="" if v["imagecorruptions_img_s"] is None else f"{v['imagecorruptions_img_s']:,.0f}",
                 ratio="" if v["ratio"] is None else f"{v['ratio']:.1f}x") for k, v in per.items()]
    print(table(rows, ["corruption", "reprlab", "imagecorruptions", "ratio"]) + "   (images / second, 32 x 32, severities 1-5)")
    print(f"all 75 variants of {build_n:,} images: {build_s:.1f} s ({75 * build_n / build_s:,.0f} images/s), {a.threads} threads")
    print(f"load average (1, 5, 15 min) before {load_before}, after {figures['load_avg_after']}")
    claims = []
    if ic is not None:
        ratios = [v["ratio"] for v in per.values()]
        figures["median_ratio"] = statistics.median(ratios)
        figures["min_ratio"], figures["below_3x"] = min(ratios), [k for k, v in per.items() if v["ratio"] < 3]
        print(f"median ratio {figures['median_ratio']:.2f}x; under 3x: {', '.join(figures['below_3x']) or 'none'}")
        claims.append(claim("median over the 15 corruptions of reprlab images/s / imagecorruptions images/s (32 x 32, severities 1-5)",
                            figures["median_ratio"], ">= 3"))
    write("corruptions_speed", figures, claims, extra_versions=("imagecorruptions", "numpy", "scikit-image", "opencv-python", "scipy", "pillow"),
          settings=dict(threads=a.threads, reps=reps, images=n, their_images=m), quick=a.quick)


if __name__ == "__main__":
    main()
