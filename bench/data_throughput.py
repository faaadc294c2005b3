"""Images/s of reprlab's data path against torchvision's per-sample pipeline, side by side in one run.

(a) torchvision ImageFolder (JPEG folder) or a TensorDataset (npz) + per-sample RandomResizedCrop(32), flip,
    ColorJitter through a DataLoader with 2 workers;
(b) reprlab: images decoded once into a uint8 cache, the same augmentations batched (`basic_augment`), 2 workers.
Claim: (b) >= 5x (a) from the second epoch on, on both datasets. Also a batch size x num_workers sweep for (b).

    python bench/data_throughput.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets as tvd
from torchvision.transforms import v2 as T

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import claim, table, write  # noqa: E402

from reprlab.data import cache, from_folder, from_npz  # noqa: E402
from reprlab.loaders import Loader  # noqa: E402
from reprlab.testing import shared_data  # noqa: E402
from reprlab.transforms import basic_augment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def per_sample_tf():
    "torchvision's usual per-sample pipeline, the same augmentations as basic_augment(32)."
    return T.Compose([T.ToImage(), T.RandomResizedCrop(32, antialias=True), T.RandomHorizontalFlip(),
                      T.ColorJitter(0.4, 0.4, 0.4, 0.1), T.ToDtype(torch.float32, scale=True)])


class ArrayDataset(Dataset):
    "A TensorDataset-like view of uint8 NHWC arrays with a per-sample transform."
    def __init__(self, images, labels, tf): self.x, self.y, self.tf = torch.from_numpy(images).permute(0, 3, 1, 2), labels, tf
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return self.tf(self.x[i]), int(self.y[i])


def run_epochs(make_iter, epochs: int, n: int) -> list[float]:
    "Images/s of each epoch; the consumer only touches each batch."
    rates = []
    for e in range(epochs):
        t = time.perf_counter()
        seen = 0
        for b in make_iter(e):
            seen += len(b["image"] if isinstance(b, dict) else b[0])
        assert seen == n, f"saw {seen} images, expected {n}"
        rates.append(n / (time.perf_counter() - t))
    return rates


def torchvision_loader(ds, bs, workers):
    dl = DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers, persistent_workers=workers > 0, drop_last=False)
    return lambda e: dl


def reprlab_loader(make_ds, bs, workers, size=32):
    state = {}
    def it(e):
        if "dl" not in state:   # the first epoch pays the decoding, as (a)'s first epoch pays its worker start
            state["dl"] = Loader(cache(make_ds()), batch_size=bs, shuffle=True, transform=basic_augment(size),
                                 num_workers=workers, seed=0)
        state["dl"].set_epoch(e)
        return state["dl"]
    return it


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs and a smaller sweep (under a minute)")
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args()
    epochs = args.epochs or (2 if args.quick else 4)
    torch.set_num_threads(1)   # the main process only consumes; the 2 workers use the 2 cores
    tmp = Path(tempfile.mkdtemp())
    with tarfile.open(ROOT / "data" / "cifar10-wang-mini.tar.gz") as t: t.extractall(tmp, filter="data")
    folder = tmp / "cifar10-wang-mini"      # unsup/ + train/ + val/: 6,600 JPEGs, read recursively by both sides
    npz = shared_data("cifar10-train.npz")
    rows, figures = [], {}
    sets = [("wang-mini JPEG folder", folder)] + ([("cifar10-train.npz", npz)] if npz else [])
    bs = 256
    for name, src in sets:
        if src == folder:
            a_ds = tvd.ImageFolder(str(folder), transform=per_sample_tf())
            make = lambda: from_folder(folder)
            n = len(a_ds)
        else:
            z = np.load(src)
            if args.quick: z = {k: z[k][:5000] for k in ("images", "labels")}
            a_ds = ArrayDataset(z["images"], z["labels"], per_sample_tf())
            make = lambda z=z: from_npz_arrays(z)
            n = len(a_ds)
        a = run_epochs(torchvision_loader(a_ds, bs, 2), epochs, n)
        b = run_epochs(reprlab_loader(make, bs, 2), epochs, n)
        later_a, later_b = float(np.mean(a[1:])), float(np.mean(b[1:]))
        rows += [dict(data=name, pipeline="(a) torchvision per-sample, 2 workers", first=a[0], later=later_a, ratio=1.0),
                 dict(data=name, pipeline="(b) reprlab cached + batched, 2 workers", first=b[0], later=later_b, ratio=later_b / later_a)]
        figures[name] = dict(images=n, batch_size=bs, epochs=epochs, a_img_s=a, b_img_s=b, ratio_later=later_b / later_a)
    print(table(rows, ["data", "pipeline", "first", "later", "ratio"]))
    print("(images/s; 'first' = epoch 1, 'later' = mean of epochs 2+; ratio = later / (a) later)\n")
    # sweep for (b): batch size x num_workers, on the largest source
    make = (lambda: from_npz(npz)) if npz else (lambda: from_folder(folder))
    ds = cache(make())
    n = len(ds)
    sweep = []
    for bsz in ((128, 512) if args.quick else (64, 128, 256, 512)):
        for w in ((0, 2) if args.quick else (0, 1, 2)):
            dl = Loader(ds, batch_size=bsz, shuffle=True, transform=basic_augment(32), num_workers=w)
            r = run_epochs(lambda e: (dl.set_epoch(e), dl)[1], 2, n)
            sweep.append(dict(batch_size=bsz, num_workers=w, img_s=r[-1]))
            del dl
    print(table(sweep, ["batch_size", "num_workers", "img_s"]))
    figures["sweep_reprlab"] = sweep
    claims = [claim(f"reprlab / torchvision images/s from epoch 2, {k}", v["ratio_later"], ">= 5")
              for k, v in figures.items() if k != "sweep_reprlab"]
    write("data_throughput", figures, claims, quick=args.quick)


def from_npz_arrays(z):
    "An ImageDataset over the arrays already in memory (what from_npz does, without re-reading the file)."
    from reprlab.data import ImageDataset
    t = torch.from_numpy(np.ascontiguousarray(z["images"].transpose(0, 3, 1, 2)))
    return ImageDataset(images=t, labels=z["labels"], classes=[str(i) for i in range(10)], name="npz")


if __name__ == "__main__":
    main()
