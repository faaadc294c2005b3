"""SimCLR in reprlab vs lightly: same backbone, data, augmentations, optimiser, epochs and batch size, side by side.

Data: `../shared/data/cifar10-train.npz` (first `--n_train` images) for pretraining, `cifar10-test.npz` (first
`--n_test`) for evaluation: weighted kNN (k=20, T=0.07) of the backbone's features, train labels -> test labels,
with the same `reprlab.evaluate` code for both. Backbone: reprlab's small conv encoder (the CIFAR-stem resnet18
runs at ~50 img/s on this CPU). Augmentations: SimCLR's (random resized crop scale 0.08-1, flip, colour jitter
0.4/0.4/0.4/0.1 with p=0.8, grayscale p=0.2, no blur at 32 px): lightly's `SimCLRTransform` per sample in PIL
through a DataLoader with 2 workers, reprlab's batched `simclr_augment` in the loader (no worker processes: the
faster setting for each). reprlab runs with the defaults of `s01-train` (bf16 autocast + channels_last); the
`reprlab_fp32` row (not in the claims) separates that from the data-path gain. Projection head 512 -> 128 (Linear-BN-ReLU-Linear), NT-Xent temperature 0.5,
SGD(0.06 x bs/256, momentum 0.9, wd 5e-4) with a cosine schedule, fp32, each in its own process.
Claims: reprlab's kNN accuracy >= lightly's; reprlab's s/epoch <= 0.8x lightly's.

    python bench/simclr_vs_lightly.py [--quick] [--epochs 5] [--n_train 10000] [--n_test 2000] [--bs 256] [--seeds 0,1]
                                      [--frameworks reprlab,lightly,reprlab_fp32]
With several seeds the claims use the mean kNN accuracy and the median s/epoch over seeds.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import claim, table, write  # noqa: E402

from reprlab.testing import shared_data  # noqa: E402


def load(name: str, n: int):
    p = shared_data(name)
    if p is None: sys.exit(f"{name} not found: this benchmark needs ../shared/data (or REPRLAB_SHARED_DATA)")
    z = np.load(p)
    return z["images"][:n], z["labels"][:n].astype(np.int64)


def knn_eval(encoder, a) -> float:
    "kNN accuracy of `encoder` features: cifar10-train subset labels -> cifar10-test subset."
    from reprlab.data import ImageDataset
    from reprlab.evaluate import extract_features, knn_accuracy
    from reprlab.transforms import Normalize
    xtr, ytr = load("cifar10-train.npz", a.n_train)
    xte, yte = load("cifar10-test.npz", a.n_test)
    norm = Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    mk = lambda x, y: ImageDataset(images=torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), labels=y, classes=[str(i) for i in range(10)])
    ftr, ltr = extract_features(encoder, mk(xtr, ytr), transform=norm)
    fte, lte = extract_features(encoder, mk(xte, yte), transform=norm)
    return knn_accuracy(ftr, ltr, fte, lte, k=20, temperature=0.07)


def cosine_lr(opt, base, step, total):
    for g in opt.param_groups: g["lr"] = base * 0.5 * (1 + math.cos(math.pi * step / total))


def run_reprlab(a, fast: bool = True) -> dict:
    from reprlab.checkpoint import create_model
    from reprlab.data import ImageDataset
    from reprlab.learner import Callback, Learner
    from reprlab.loaders import make_loaders
    from reprlab.transforms import MultiView, simclr_augment
    x, y = load("cifar10-train.npz", a.n_train)
    ds = ImageDataset(images=torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), labels=y, classes=[str(i) for i in range(10)])
    stats = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    aug = MultiView([simclr_augment(32, blur=False, normalize=stats), simclr_augment(32, blur=False, normalize=stats)])
    dls = make_loaders(ds, None, a.bs, transform=aug, seed=a.seed, num_workers=0)
    torch.manual_seed(a.seed)
    model = create_model("simclr", encoder="conv", proj_hidden=512, proj_dim=128, temperature=0.5)
    lr = 0.06 * a.bs / 256
    total = a.epochs * len(dls.train)

    class T(Callback):
        order = -5
        def __init__(self): self.stamps, self.losses = [], []
        def before_epoch(self, learn): self.stamps.append(time.perf_counter())
        def before_batch(self, learn):
            if learn.training: cosine_lr(learn.opt, lr, learn.step, total)
        def after_loss(self, learn): self.losses.append(float(learn.loss.detach()))
        def after_fit(self, learn): self.stamps.append(time.perf_counter())

    t = T()
    from reprlab.callbacks import ChannelsLastCB, MixedPrecisionCB
    learn = Learner(model, dls, opt_func=lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=5e-4),
                    lr=lr, cbs=[t] + ([MixedPrecisionCB(), ChannelsLastCB()] if fast else []), device="cpu")
    learn.fit(a.epochs)
    return dict(epoch_s=np.diff(t.stamps).tolist(), loss_last=float(np.mean(t.losses[-10:])), knn=knn_eval(model.encoder, a))


def run_lightly(a) -> dict:
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from PIL import Image
    from reprlab.encoders import create_encoder
    x, _ = load("cifar10-train.npz", a.n_train)
    tf = SimCLRTransform(input_size=32, cj_prob=0.8, cj_strength=0.5, min_scale=0.08, random_gray_scale=0.2,
                         gaussian_blur=0.0, normalize={"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]})

    class DS(torch.utils.data.Dataset):
        def __len__(self): return len(x)
        def __getitem__(self, i): return tf(Image.fromarray(x[i]))

    g = torch.Generator().manual_seed(a.seed)
    dl = torch.utils.data.DataLoader(DS(), batch_size=a.bs, shuffle=True, drop_last=True, num_workers=2,
                                     generator=g, persistent_workers=True)
    torch.manual_seed(a.seed)
    enc = create_encoder("conv")
    head = SimCLRProjectionHead(enc.num_features, 512, 128)
    model = nn.Sequential(enc, head)
    crit = NTXentLoss(temperature=0.5)
    lr = 0.06 * a.bs / 256
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    total, step, stamps, losses = a.epochs * len(dl), 0, [], []
    for _ in range(a.epochs):
        stamps.append(time.perf_counter())
        model.train()
        for v0, v1 in dl:
            cosine_lr(opt, lr, step, total)
            z = model(torch.cat([v0, v1]))
            loss = crit(*z.chunk(2))
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
            losses.append(float(loss)); step += 1
    stamps.append(time.perf_counter())
    return dict(epoch_s=np.diff(stamps).tolist(), loss_last=float(np.mean(losses[-10:])), knn=knn_eval(enc, a))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 epoch on 2,048 images")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--n_train", type=int, default=10000)
    ap.add_argument("--n_test", type=int, default=2000)
    ap.add_argument("--bs", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--seeds", default="0", help="seeds, comma separated: each framework runs once per seed")
    ap.add_argument("--frameworks", default="reprlab,lightly,reprlab_fp32", help="which runs (reprlab and lightly are needed for the claims)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.only:
        torch.set_num_threads(a.threads)
        fn = {"reprlab": run_reprlab, "reprlab_fp32": lambda a: run_reprlab(a, fast=False), "lightly": run_lightly}[a.only]
        Path(a.out).write_text(json.dumps(fn(a)))
        return
    if a.quick: a.epochs, a.n_train, a.n_test = 1, 2048, 1000
    seeds, fws = [int(x) for x in a.seeds.split(",")], a.frameworks.split(",")
    runs: dict[str, list] = {fw: [] for fw in fws}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for fw in fws:
                out = Path(tmp) / f"{fw}-{seed}.json"
                a.seed = seed
                cmd = [sys.executable, __file__, "--only", fw, "--out", str(out)] + [f"--{k}={getattr(a, k)}" for k in
                                                                                     ("epochs", "n_train", "n_test", "bs", "seed", "threads")]
                r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(a.threads)))
                if r.returncode: sys.exit(f"{fw} failed:\n{r.stderr[-3000:]}")
                runs[fw].append(json.loads(out.read_text()))
                print(f"seed {seed} {fw}: epochs {[round(e, 1) for e in runs[fw][-1]['epoch_s']]} s, kNN {runs[fw][-1]['knn']:.4f}", flush=True)
    spe = {k: float(np.median([e for r in v for e in (r["epoch_s"][1:] or r["epoch_s"])])) for k, v in runs.items()}
    knn = {k: float(np.mean([r["knn"] for r in v])) for k, v in runs.items()}
    rows = [dict(framework=k, s_epoch=f"{spe[k]:.2f}", knn_acc=f"{knn[k]:.4f}", per_seed=[round(r["knn"], 4) for r in v],
                 last_loss=f"{np.mean([r['loss_last'] for r in v]):.3f}") for k, v in runs.items()]
    print(table(rows, ["framework", "s_epoch", "knn_acc", "per_seed", "last_loss"]))
    claims = [claim("reprlab kNN accuracy - lightly kNN accuracy (mean over seeds)", knn["reprlab"] - knn["lightly"], ">= 0"),
              claim("reprlab s/epoch / lightly s/epoch", spe["reprlab"] / spe["lightly"], "<= 0.8")]
    write("simclr_vs_lightly", dict(results=runs, s_per_epoch=spe, knn_mean=knn), claims, extra_versions=("lightly",),
          settings=dict(epochs=a.epochs, n_train=a.n_train, n_test=a.n_test, bs=a.bs, seeds=seeds, threads=a.threads), quick=a.quick)

if __name__ == "__main__":
    main()
