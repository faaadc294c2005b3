"""One hypernetwork for several saliency tasks against one separately trained main network per task, same CPU budget.

Data: the embedded scene-saliency photos (data/scene-saliency.tar.gz, else ../shared/data) at 96 x 128, the run's fixed
split (280 train / 40 val / 80 test images, `saliency_splits(seed=0)`). Tasks: classic saliency models computed on those
images (`--tasks`, default spectral_residual, frequency_tuned, itti_koch, centre_bias, and fine_grained when OpenCV
contrib is installed: the `saliency` extra).

Models: `SaliencyNet` (torchvision mobilenet_v2, random init, cut after 7 layers = 1/8 resolution, decoder 64, 32; 92,481
parameters) trained alone per task (`SeparateSaliency`), against `SaliencyHnet` over the same main network whose
decoder (36,993 parameters) is generated per task by a chunked hypernetwork (`--chunk` 1024, task embedding 8,
`--hidden` 128, 128) and whose encoder is shared. Training: reprlab's `Learner`, AdamW lr 2e-3, weight decay 0.05,
batch 16, KL(target || softmax over pixels) loss, seeded; the separate models get `--budget / n_tasks` CPU seconds
each, the hnet `--budget` CPU seconds on `MultitaskBatchProvider` (every task's batches each epoch, shuffled); both
sides multiply the learning rate by 0.1 after `--decay_at` of their budget; training stops at the first batch end past
the budget (process CPU time, so other jobs on the machine do not change the budget).

Metrics on the 80 test images: CC (and SIM, KL) of each model's map against the task's map, NSS against the human
fixations (how well the imitated map predicts where people looked). Claims: hnet parameters (hypernetwork + shared
main-network parameters) <= 0.5 x the sum of the separate models'; per task, hnet CC and NSS within 5 % of the
separate model's, read as "at most 5 % worse" (CC: hnet >= 0.95 x separate; NSS: hnet >= separate - 0.05 x |separate|;
an hnet better than the separate model passes).

    python bench/hnet_vs_separate.py [--quick] [--budget 1200] [--tasks a,b,c] [--threads 2] [--seed 0] [--decay_at 0.7]
                                     [--hidden 128,128] [--chunk 1024] [--tag NAME]
"""
from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, claim, machine_kind, table, write  # noqa: E402

from reprlab.core import seed_everything  # noqa: E402
from reprlab.data import default_cache_dir  # noqa: E402
from reprlab.hypernet import MultitaskBatchProvider, SaliencyNet, SingleTaskProvider  # noqa: E402
from reprlab.learner import CancelFitException, Callback, Learner  # noqa: E402
from reprlab.saliency import (SaliencyHnet, evaluate_tasks, image_stats, logits_to_maps, map_dataset, normalized,  # noqa: E402
                              save_saliency_grid, score_maps, task_loaders, task_maps)
from reprlab.saliency_data import load_saliency, saliency_splits  # noqa: E402
from reprlab.saliency_models import classic_model_names  # noqa: E402
from reprlab.saliency_pipeline import SeparateSaliency  # noqa: E402


class CPUBudgetCB(Callback):
    "Stop fitting at the first batch end after `seconds` of this process's CPU time; the learning rate x `gamma` after `decay_at` of them."
    def __init__(self, seconds: float, decay_at: float = 1.0, gamma: float = 0.1):
        self.seconds, self.decay_at, self.gamma = seconds, decay_at, gamma
    def before_fit(self, learn): self.t0, self.decayed = time.process_time(), False
    def after_batch(self, learn):
        if not learn.training: return
        used = time.process_time() - self.t0
        if not self.decayed and used >= self.decay_at * self.seconds:
            for g in learn.opt.param_groups: g["lr"] *= self.gamma
            self.decayed = True
        if used >= self.seconds: raise CancelFitException


def train(model, train_dl, budget: float, lr: float, seed: int, decay_at: float = 1.0) -> dict:
    "Train `model` on `train_dl` until `budget` CPU seconds are spent; CPU and wall seconds, epochs, steps."
    seed_everything(seed)
    learn = Learner(model, SimpleNamespace(train=train_dl, valid=None), loss_func=None,
                    opt_func=partial(torch.optim.AdamW, weight_decay=0.05), lr=lr, cbs=[CPUBudgetCB(budget, decay_at)], device="cpu")
    t, c = time.perf_counter(), time.process_time()
    learn.fit(100000)
    return dict(cpu_s=time.process_time() - c, wall_s=time.perf_counter() - t, steps=learn.step, epochs=learn.epoch + 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 tasks, 60 images, 30 CPU seconds")
    ap.add_argument("--budget", type=float, default=1200, help="CPU seconds in total for each side")
    ap.add_argument("--tasks", default="", help="comma-separated classic models (default: all available)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--decay_at", type=float, default=0.7, help="both sides: learning rate x 0.1 after this fraction of the budget (1: never)")
    ap.add_argument("--hidden", default="128,128", help="hypernetwork hidden layers")
    ap.add_argument("--chunk", type=int, default=1024, help="hypernetwork chunk size")
    ap.add_argument("--skip_layer", type=int, default=0, help="both sides: an encoder layer whose features also feed the decoder (0: none)")
    ap.add_argument("--tag", default="", help="suffix of the results name (hnet_vs_separate_TAG-KIND), for runs with other settings")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tasks = [t for t in a.tasks.split(",") if t] or [t for t in classic_model_names() if t != "spectral_residual_cv2"]
    limit = None
    if a.quick: tasks, a.budget, limit = tasks[:3], 30, 60
    sset = load_saliency("scene-saliency", size=(96, 128), limit=limit, progress=False)
    sp = saliency_splits(sset.names, n_test=16 if a.quick else 80, n_val=8 if a.quick else 40, seed=0)
    tr, te = sp["train"], sp["test"]
    stats = image_stats(sset.images[tr])
    cache = default_cache_dir() / "saliency_maps"
    maps = {t: task_maps(sset, t, cache_dir=cache)[0] for t in tasks}
    fix = torch.as_tensor(np.asarray(sset.fixation_maps()))
    dls = lambda: task_loaders([map_dataset(sset.images[tr], maps[t][tr], name=t) for t in tasks], 16, stats, seed=a.seed)
    t0 = time.perf_counter()
    # separate models: one per task, budget / n_tasks each
    sep, sep_time, sep_scores = {}, {}, {}
    x_te = normalized(sset.images[te], stats)
    for i, (t, dl) in enumerate(zip(tasks, dls())):
        seed_everything(a.seed)
        m = SeparateSaliency(SaliencyNet(generated=(), skip_layer=a.skip_layer))
        sep_time[t] = train(m, SingleTaskProvider(dl, 0), a.budget / len(tasks), a.lr, a.seed, a.decay_at)
        m.eval()
        with torch.no_grad(): pred = logits_to_maps(torch.cat([m.mnet(x_te[j:j + 32]) for j in range(0, len(te), 32)]))
        sep[t], sep_scores[t] = m, score_maps(pred, maps[t][te], fix[te], seed=a.seed)
        print(f"separate {t}: {sep_time[t]['epochs']} epochs, {sep_time[t]['cpu_s']:.0f} CPU s; " +
              ", ".join(f"{k} {v:.3f}" for k, v in sep_scores[t].items()), flush=True)
    # one hnet over every task, the whole budget
    seed_everything(a.seed)
    h = SaliencyHnet(tasks, chunk_size=a.chunk, hidden=tuple(int(c) for c in a.hidden.split(",")), skip_layer=a.skip_layer)
    loaders = dls()
    prov = MultitaskBatchProvider(loaders, batches_per_task=max(len(d) for d in loaders), seed=a.seed)
    h_time = train(h, prov, a.budget, a.lr, a.seed, a.decay_at)
    h_scores = evaluate_tasks(h, sset.images[te], {t: maps[t][te] for t in tasks}, fix[te], stats, seed=a.seed)
    print(f"hnet: {h_time['epochs']} epochs, {h_time['cpu_s']:.0f} CPU s", flush=True)
    # figures
    name = "hnet_vs_separate" + (f"_{a.tag}" if a.tag else "")
    out = RESULTS / f"{name}{'-quick' if a.quick else ''}-{machine_kind()}"
    out.mkdir(parents=True, exist_ok=True)
    g = te[:4]
    for t in tasks:
        with torch.no_grad(): sp_pred = logits_to_maps(sep[t].eval().mnet(normalized(sset.images[g], stats)))
        save_saliency_grid(sset.images[g], maps[t][g], h.predict_maps(normalized(sset.images[g], stats), t), out / f"hnet_{t}.png", target_name=t)
        save_saliency_grid(sset.images[g], maps[t][g], sp_pred, out / f"separate_{t}.png", target_name=t)
    n_sep = sum(sum(p.numel() for p in m.parameters()) for m in sep.values())
    n_h = sum(p.numel() for p in h.parameters())
    rows = [dict(task=t, sep_cc=f"{sep_scores[t]['cc']:.4f}", hnet_cc=f"{h_scores[t]['cc']:.4f}", sep_nss=f"{sep_scores[t]['nss']:.4f}",
                 hnet_nss=f"{h_scores[t]['nss']:.4f}", sep_kld=f"{sep_scores[t]['kld']:.4f}", hnet_kld=f"{h_scores[t]['kld']:.4f}",
                 sep_epochs=sep_time[t]["epochs"]) for t in tasks]
    print(table(rows, list(rows[0])))
    print(f"parameters: hnet {n_h:,} vs separate {n_sep:,} ({n_h / n_sep:.3f}x); CPU s: hnet {h_time['cpu_s']:.0f} ({h_time['epochs']} epochs), "
          f"separate {sum(v['cpu_s'] for v in sep_time.values()):.0f}; total wall {time.perf_counter() - t0:.0f} s")
    claims = [claim("hnet parameters / sum of the separate models' parameters", n_h / n_sep, "<= 0.5")]
    for t in tasks:
        claims.append(claim(f"{t}: hnet CC / separate CC", h_scores[t]["cc"] / sep_scores[t]["cc"], ">= 0.95"))
        claims.append(claim(f"{t}: (hnet NSS - separate NSS) / |separate NSS|",
                            (h_scores[t]["nss"] - sep_scores[t]["nss"]) / max(abs(sep_scores[t]["nss"]), 1e-9), ">= -0.05"))
    write(name, dict(tasks=tasks, params=dict(hnet=n_h, separate=n_sep), separate=sep_scores, hnet=h_scores,
                                   separate_time=sep_time, hnet_time=h_time, figures=str(out.relative_to(RESULTS.parent))),
          claims, settings=dict(budget_cpu_s=a.budget, threads=a.threads, seed=a.seed, lr=a.lr, decay_at=a.decay_at, hidden=a.hidden,
                        chunk=a.chunk, size=[96, 128], batch=16), quick=a.quick)


if __name__ == "__main__":
    main()
