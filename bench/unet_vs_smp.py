"""reprlab's U-Net against segmentation_models_pytorch's on the CPU: same encoder, data, loss, tiles, optimiser and seed.

Models: `reprlab.segmentation.EncoderUNet('resnet18', n_classes=1, in_chans=1)` and `smp.Unet('resnet18',
encoder_weights=None, in_channels=1, classes=1)`: both torchvision's resnet18 (random init, a new 1-channel stem conv),
decoder widths (256, 128, 64, 32, 16), two 3x3 conv-BN-ReLU per decoder step, nearest up-sampling, a 3x3 conv head.
They differ in the weight init of the decoder (PyTorch's defaults against smp's kaiming / xavier) and of the new
1-channel stem conv (PyTorch's default against smp's sum of torchvision's three RGB kernels); both are followed by
BatchNorm. Until reprlab's `EncoderUNet` took smp's 3x3 head (`head_kernel=3`, now its default), its 1x1 head trained to
a clearly higher loss than smp's (0.87 against 0.60 after 4 epochs, 0.68 against 0.48 after 10) and a lower Dice (-2.4
points after 4 epochs, -3.6 after 10, 3 seeds; notes/benchmarks.md keeps those rows). smp's decoder init instead of
PyTorch's did not close that gap (loss 0.74-0.84 after 4 epochs; a one-off check, not part of this script).

Data: ISBI 2012 EM membranes (`isbi2012-em.tar.gz`: data/ in the repo, else ../shared/data), extracted into a
temporary folder: slices 00-19 train, 20-24 validation (filelists/), 512 x 512 grey, masks 255 = membrane (the
foreground). Images are scaled by the training slices' mean and std. Each epoch draws `--tiles` random
`--tile` x `--tile` crops per training slice with random horizontal / vertical flips, shuffled, from a generator
seeded by (seed, epoch): both models see the same batches in the same order.

Training: reprlab's `Learner` for both (AdamW lr 1e-3, weight decay 0.01, batch `--bs`, `DiceBCELoss()`), no
schedule, `torch.set_num_threads(--threads)`. The two models are trained side by side in one process, one epoch
each in turn (the first alternating, so machine load and order effects hit both), after one untimed warm-up
forward / backward of a copy of each; s/epoch is the training pass's wall time, median over every epoch of every seed.
The speed claim is on the median of the per-epoch ratios reprlab / smp (the two epochs of a pair run back to back):
on a machine shared with other jobs the epoch times are bimodal (e.g. 21 s quiet, 65-80 s busy), and a ratio of
the two medians then mostly says which model drew more quiet epochs. Also recorded: that ratio of medians, and
process CPU seconds per epoch. Validation Dice: the 5 whole 512 x 512 validation slices through each model in eval
mode (fp32), `seg_metrics` at threshold 0.5, after the last epoch.
`--precision bf16` runs both with `MixedPrecisionCB` (bf16 autocast) + `ChannelsLastCB` (written as unet_vs_smp_bf16).
Claims: median per-epoch reprlab s / smp s <= 1.0; reprlab Dice - smp Dice (mean over seeds, points) >= -1.

    python bench/unet_vs_smp.py [--quick] [--epochs 4] [--tiles 4] [--tile 256] [--bs 8] [--seeds 0,1,2]
                                [--threads 2] [--precision fp32|bf16] [--tag NAME]
"""
from __future__ import annotations

import argparse
import copy
import csv
import gc
import os
import statistics
import sys
import tarfile
import tempfile
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import claim, table, write  # noqa: E402

from reprlab.testing import shared_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = "isbi2012-em.tar.gz"


def find_archive() -> Path | None:
    "The ISBI 2012 archive: data/ in the repo first, then the shared data folder; None if neither has it."
    here = ROOT / "data" / ARCHIVE
    return here if here.exists() else shared_data(ARCHIVE)


def load_isbi(archive: Path) -> dict:
    "Extract `archive` into a temporary folder and read its train / val slices: uint8 images and 0/1 masks, (N, 512, 512)."
    from PIL import Image
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive) as t: t.extractall(tmp, filter="data")
        root = Path(tmp) / "isbi2012-em"
        out = {}
        for split in ("train", "val"):
            with open(root / "filelists" / f"{split}.csv", newline="") as f: names = [r["name"] for r in csv.DictReader(f)]
            out[split] = (np.stack([np.asarray(Image.open(root / "scenes" / n).convert("L")) for n in names]),
                          np.stack([np.asarray(Image.open(root / "masks" / n).convert("L")) > 127 for n in names]).astype(np.uint8),
                          names)
    return out


class TileLoader:
    "`tiles` random `tile` x `tile` crops per slice with random flips, shuffled into batches; the same for a (seed, epoch)."
    def __init__(self, images: torch.Tensor, masks: torch.Tensor, tiles: int, tile: int, bs: int, seed: int):
        self.images, self.masks, self.tiles, self.tile, self.bs, self.seed, self.epoch = images, masks, tiles, tile, bs, seed, 0

    def __len__(self): return -(-len(self.images) * self.tiles // self.bs)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n, (h, w), t = len(self.images), self.images.shape[-2:], self.tile
        idx = torch.arange(n).repeat_interleave(self.tiles)
        tops, lefts = torch.randint(0, h - t + 1, (len(idx),), generator=g), torch.randint(0, w - t + 1, (len(idx),), generator=g)
        flips = torch.rand(len(idx), 2, generator=g) < 0.5
        order = torch.randperm(len(idx), generator=g)
        for s in range(0, len(order), self.bs):
            xs, ys = [], []
            for j in order[s:s + self.bs].tolist():
                i, y0, x0 = idx[j].item(), tops[j].item(), lefts[j].item()
                x, m = self.images[i, :, y0:y0 + t, x0:x0 + t], self.masks[i, :, y0:y0 + t, x0:x0 + t]
                dims = [d for d, f in zip((-2, -1), flips[j].tolist()) if f]
                if dims: x, m = x.flip(dims), m.flip(dims)
                xs.append(x); ys.append(m)
            yield {"image": torch.stack(xs), "label": torch.stack(ys)}


def build(kind: str, seed: int) -> torch.nn.Module:
    "reprlab's or smp's U-Net over a randomly initialised resnet18, 1 channel in, 1 logit out."
    torch.manual_seed(seed)
    if kind == "reprlab":
        from reprlab.segmentation import EncoderUNet
        return EncoderUNet("resnet18", n_classes=1, in_chans=1)
    import segmentation_models_pytorch as smp
    return smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=1)


@torch.no_grad()
def val_metrics(model: torch.nn.Module, x: torch.Tensor, m: torch.Tensor) -> dict:
    "seg_metrics of whole validation slices (one at a time, eval mode, fp32) at threshold 0.5."
    from reprlab.seg_losses import seg_metrics
    model.eval()
    logits = torch.cat([model(x[i:i + 1]) for i in range(len(x))])
    r = seg_metrics(logits, m.long())
    return dict(dice=r["dice"], iou=r["iou"], pixel_error=r["pixel_error"])


def run_seed(seed: int, data: dict, a) -> dict:
    "Train both models side by side for `a.epochs` epochs; their epoch times, losses and validation metrics."
    from reprlab.callbacks import ChannelsLastCB, MixedPrecisionCB
    from reprlab.learner import Learner
    from reprlab.seg_losses import DiceBCELoss
    from reprlab.segmentation import n_parameters
    xtr, mtr, xva, mva = data["xtr"], data["mtr"], data["xva"], data["mva"]
    kinds = ("reprlab", "smp")
    learners, loaders, out = {}, {}, {}
    for k in kinds:
        loaders[k] = TileLoader(xtr, mtr, a.tiles, a.tile, a.bs, seed)
        cbs = [MixedPrecisionCB(enabled=True), ChannelsLastCB()] if a.precision == "bf16" else []
        model = build(k, seed)
        learners[k] = Learner(model, SimpleNamespace(train=loaders[k], valid=None), loss_func=DiceBCELoss(),
                              opt_func=partial(torch.optim.AdamW, weight_decay=0.01), lr=1e-3, cbs=cbs, device="cpu")
        out[k] = dict(params=n_parameters(model), epoch_s=[], epoch_cpu_s=[], train_loss=[])
        warm, xb = copy.deepcopy(model).train(), next(iter(loaders[k]))["image"]   # first-call costs (oneDNN, allocator) untimed
        if a.precision == "bf16": warm, xb = warm.to(memory_format=torch.channels_last), xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"): y = warm(xb)
        y.float().mean().backward()
        del warm, y
    for epoch in range(a.epochs):
        for k in (kinds if (epoch + seed) % 2 == 0 else kinds[::-1]):
            loaders[k].epoch = epoch
            gc.collect()
            t, c = time.perf_counter(), time.process_time()
            learners[k].fit(1)                          # no schedule: fit(1) e times = fit(e), the optimiser carries over
            out[k]["epoch_s"].append(time.perf_counter() - t)
            out[k]["epoch_cpu_s"].append(time.process_time() - c)
            out[k]["train_loss"].append(learners[k].history[-1]["train_loss"])
        print(f"seed {seed} epoch {epoch + 1}/{a.epochs}: " + ", ".join(
            f"{k} {out[k]['epoch_s'][-1]:.1f} s loss {out[k]['train_loss'][-1]:.3f}" for k in kinds), flush=True)
    for k in kinds: out[k].update(val_metrics(learners[k].model, xva, mva))
    print(f"seed {seed}: val Dice reprlab {out['reprlab']['dice']:.4f}, smp {out['smp']['dice']:.4f}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, 1 tile of 64 px per slice, batch 4, seed 0, 2 val slices")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--tiles", type=int, default=4, help="random tiles per training slice per epoch")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--bs", type=int, default=8)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16: bf16 autocast + channels_last for both")
    ap.add_argument("--tag", default="", help="suffix of the results name (unet_vs_smp_TAG-KIND.json), for runs with other settings")
    a = ap.parse_args()
    if a.quick: a.epochs, a.tiles, a.tile, a.bs, a.seeds = 2, 1, 64, 4, "0"
    try:
        import segmentation_models_pytorch  # noqa: F401
    except ImportError as e: sys.exit(f"segmentation_models_pytorch not importable ({e}); pip install segmentation-models-pytorch (bench extra)")
    archive = find_archive()
    if archive is None: sys.exit(f"{ARCHIVE} not found in data/ or ../shared/data (or $REPRLAB_SHARED_DATA)")
    torch.set_num_threads(a.threads)
    d = load_isbi(archive)
    (xtr, mtr, ntr), (xva, mva, nva) = d["train"], d["val"]
    if a.quick: xva, mva, nva = xva[:2], mva[:2], nva[:2]
    mean, std = float(xtr.mean()), float(xtr.std())
    f = lambda x: ((torch.from_numpy(x).float() - mean) / std)[:, None].contiguous()
    data = dict(xtr=f(xtr), mtr=torch.from_numpy(mtr).float()[:, None], xva=f(xva), mva=torch.from_numpy(mva)[:, None])
    seeds = [int(s) for s in a.seeds.split(",")]
    load_before, t0 = os.getloadavg(), time.perf_counter()
    runs = {s: run_seed(s, data, a) for s in seeds}
    kinds = ("reprlab", "smp")
    spe = {k: statistics.median(e for r in runs.values() for e in r[k]["epoch_s"]) for k in kinds}
    cpu = {k: statistics.median(e for r in runs.values() for e in r[k]["epoch_cpu_s"]) for k in kinds}
    paired = statistics.median(a / b for r in runs.values() for a, b in zip(r["reprlab"]["epoch_s"], r["smp"]["epoch_s"]))
    dice = {k: [runs[s][k]["dice"] for s in seeds] for k in kinds}
    mean_dice = {k: float(np.mean(v)) for k, v in dice.items()}
    diff_pts = 100 * (mean_dice["reprlab"] - mean_dice["smp"])
    params = {k: runs[seeds[0]][k]["params"] for k in kinds}
    rows = [dict(model=k, params=f"{params[k]:,}", s_epoch=f"{spe[k]:.2f}", cpu_s_epoch=f"{cpu[k]:.2f}", val_dice=f"{mean_dice[k]:.4f}",
                 per_seed=" ".join(f"{v:.4f}" for v in dice[k]),
                 last_loss=f"{np.mean([runs[s][k]['train_loss'][-1] for s in seeds]):.3f}") for k in kinds]
    print(table(rows, ["model", "params", "s_epoch", "cpu_s_epoch", "val_dice", "per_seed", "last_loss"]))
    print(f"ratio reprlab / smp s/epoch: median of the per-epoch ratios {paired:.3f} (of the medians {spe['reprlab'] / spe['smp']:.3f}, "
          f"of the CPU seconds {cpu['reprlab'] / cpu['smp']:.3f}); Dice reprlab - smp {diff_pts:+.2f} points "
          f"({len(seeds)} seeds, {a.epochs} epochs of {len(ntr) * a.tiles} {a.tile}-px tiles, {a.precision}, {a.threads} threads)")
    print(f"load average (1, 5, 15 min) before {load_before}, after {os.getloadavg()}; total {time.perf_counter() - t0:.0f} s")
    figures = dict(s_per_epoch=spe, ratio=paired, ratio_of_medians=spe["reprlab"] / spe["smp"], cpu_s_per_epoch=cpu,
                   ratio_cpu=cpu["reprlab"] / cpu["smp"], val_dice_per_seed=dice, val_dice_mean=mean_dice,
                   dice_diff_points=diff_pts, params=params, runs={str(s): r for s, r in runs.items()},
                   data=dict(archive=str(archive.name), train=ntr, val=nva, mean=mean, std=std),
                   load_avg_before=load_before, load_avg_after=os.getloadavg(), total_s=time.perf_counter() - t0)
    claims = [claim("reprlab s/epoch / smp s/epoch (median of the per-epoch ratios)", paired, "<= 1.0"),
              claim("reprlab val Dice - smp val Dice, points (mean over seeds)", diff_pts, ">= -1")]
    name = "unet_vs_smp" + ("_bf16" if a.precision == "bf16" else "") + (f"_{a.tag}" if a.tag else "")
    write(name, figures, claims, extra_versions=("segmentation_models_pytorch", "timm"),
          settings=dict(epochs=a.epochs, tiles=a.tiles, tile=a.tile, bs=a.bs, seeds=seeds, threads=a.threads, precision=a.precision,
                        lr=1e-3, weight_decay=0.01, loss="DiceBCELoss()"), quick=a.quick)


if __name__ == "__main__":
    main()
