"""Human fixations on held-out images: the centre-bias prior, each classic model, the multi-task hnet adapted few-shot,
and a main network trained on the fixations directly (NSS and CC on the 80 test images of scene-saliency).

The hnet is trained by the product's own pipeline (`s01-train --task=saliency_hnet`, every stage: pretrain_weights,
pretrain_one_task, train_catchup, train, few_shot, test) on the classic models' maps of the 280 training images, with
the human fixations held out (`--saliency_hnet.holdout=fixations`); its few_shot stage fits a new task embedding (8
numbers, everything else frozen) from k = 10, 50 and all 280 training images' fixation density maps. The direct
baseline is the same `SaliencyNet` trained on the 280 fixation density maps (`--direct_epochs`). Held-out viewers are
not available, so images are held out: the run's fixed split (seed 0) puts 80 images in test. Density maps blur the
fixations with sigma = 1/30 of the longer side (`reprlab.saliency_data.default_sigma`); NSS uses the fixated pixels,
CC the density map, both at 96 x 128.

Claim: the hnet adapted with k = 50 beats the centre-bias prior (a Gaussian at the centre, `saliency_models.centre_bias`)
on NSS and on CC.

    python bench/saliency_fixations.py [--quick] [--epochs 8] [--direct_epochs 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, claim, machine_kind, table, write  # noqa: E402

from reprlab.cli import train_main  # noqa: E402
from reprlab.core import seed_everything  # noqa: E402
from reprlab.hypernet import SaliencyNet, SingleTaskProvider  # noqa: E402
from reprlab.learner import Learner  # noqa: E402
from reprlab.saliency import image_stats, logits_to_maps, map_dataset, normalized, save_saliency_grid, score_maps, task_loaders, task_maps  # noqa: E402
from reprlab.saliency_data import load_saliency, saliency_splits  # noqa: E402
from reprlab.saliency_models import classic_model_names  # noqa: E402
from reprlab.saliency_pipeline import SeparateSaliency  # noqa: E402
from reprlab.data import default_cache_dir  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 epochs everywhere, 3 classic tasks")
    ap.add_argument("--epochs", type=int, default=8, help="epochs of the pipeline's train stage")
    ap.add_argument("--direct_epochs", type=int, default=20, help="epochs of the main network trained on the fixations directly")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    classic = [t for t in classic_model_names() if t != "spectral_residual_cv2"]
    if a.quick: a.epochs, a.direct_epochs, classic = 2, 2, classic[:3]
    t0 = time.perf_counter()
    sset = load_saliency("scene-saliency", size=(96, 128), progress=False)
    sp = saliency_splits(sset.names, n_test=80, n_val=40, seed=0)
    tr, te = sp["train"], sp["test"]
    stats = image_stats(sset.images[tr])
    fix = torch.as_tensor(np.asarray(sset.fixation_maps()))
    dens = task_maps(sset, "fixations")[0]
    cache = default_cache_dir() / "saliency_maps"
    rows = []
    for t in classic + (["centre_bias"] if "centre_bias" not in classic else []):      # the classic models as they are
        m = task_maps(sset, t, cache_dir=cache)[0]
        rows.append(dict(model=("centre-bias prior" if t == "centre_bias" else f"classic: {t}"), **score_maps(m[te], dens[te], fix[te])))
    # the product's pipeline: hnet on the classic tasks, fixations held out and fitted few-shot
    out = RESULTS / f"saliency_fixations{'-quick' if a.quick else ''}-{machine_kind()}"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--task=saliency_hnet", f"--saliency_hnet.tasks={','.join(classic)},fixations", "--saliency_hnet.holdout=fixations",
                "--saliency_hnet.few_shot=10,50,all", f"--epochs={a.epochs}", f"--runs_dir={tmp}", "--name=hnet", f"--threads={a.threads}",
                "--quiet", "--skip=run"] + (["--saliency_hnet.separate_epochs=1", "--saliency_hnet.one_task_epochs=1", "--saliency_hnet.adapt_steps=10"] if a.quick else [])
        t1 = time.process_time()
        code = train_main(argv)
        if code != 0: sys.exit(f"the pipeline failed (exit {code})")
        pipeline_cpu = time.process_time() - t1
        run = Path(tmp) / "hnet"
        with open(run / "stages" / "few_shot" / "few_shot.csv") as f:
            for r in csv.DictReader(f):
                rows.append(dict(model=f"hnet adapted, k = {r['k']} (from {r['start']})", **{k: float(v) for k, v in r.items() if k not in ("k", "start")}))
        for f in ("few_shot.png", "few_shot.md"): shutil.copy(run / "stages" / "few_shot" / f, out / f)
        for f in (run / "stages" / "test").glob("grid_*.png"): shutil.copy(f, out / f.name)
        shutil.copy(run / "stages" / "test" / "metrics.md", out / "hnet_test_metrics.md")
    # a main network trained on the fixations directly
    seed_everything(0)
    direct = SeparateSaliency(SaliencyNet(generated=()))
    dl = task_loaders([map_dataset(sset.images[tr], dens[tr], name="fixations")], 16, stats, seed=0)[0]
    learn = Learner(direct, SimpleNamespace(train=SingleTaskProvider(dl, 0), valid=None), loss_func=None, lr=2e-3, device="cpu")
    t2 = time.process_time(); learn.fit(a.direct_epochs); direct_cpu = time.process_time() - t2
    direct.eval()
    with torch.no_grad(): pred = logits_to_maps(direct.mnet(normalized(sset.images[te], stats)))
    rows.append(dict(model="mnet trained on fixations", **score_maps(pred, dens[te], fix[te])))
    save_saliency_grid(sset.images[te[:6]], dens[te[:6]], pred[:6], out / "direct_fixations.png", target_name="fixations")
    cols = ["model", "nss", "cc", "sim", "kld", "auc_judd", "auc_shuffled"]
    print(table([{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows], cols))
    by = {r["model"]: r for r in rows}
    k50 = next(r for r in rows if r["model"].startswith("hnet adapted, k = 50 "))
    prior = by["centre-bias prior"]
    print(f"pipeline {pipeline_cpu:.0f} CPU s, direct {direct_cpu:.0f} CPU s; total wall {time.perf_counter() - t0:.0f} s")
    claims = [claim("hnet adapted (k = 50) NSS - centre-bias prior NSS", k50["nss"] - prior["nss"], ">= 0"),
              claim("hnet adapted (k = 50) CC - centre-bias prior CC", k50["cc"] - prior["cc"], ">= 0")]
    write("saliency_fixations", dict(rows=rows, pipeline_cpu_s=pipeline_cpu, direct_cpu_s=direct_cpu, classic=classic,
                                     figures=str(out.relative_to(RESULTS.parent))), claims,
          settings=dict(epochs=a.epochs, direct_epochs=a.direct_epochs, threads=a.threads, size=[96, 128], n_test=80), quick=a.quick)


if __name__ == "__main__":
    main()
