"""Does self-supervised pretraining help on cifar10-wang-mini? Val accuracy after fine-tuning on the 600 labels,
scratch vs each pretext task vs SimCLR vs DINO, at the same CPU budget, mean over seeds.

Each method: pretrain on unsup/ + train/ images (labels dropped) for `--pretrain_s` seconds, then fine-tune the
encoder on train/ labels for `--finetune_s` seconds (`--init_encoder`, the encoder at lr x 0.3 after a 2-epoch
frozen warm-up of the head). Scratch: supervised training for `pretrain_s + finetune_s` seconds. A budget becomes
a number of epochs from a one-epoch calibration run of the same command, so schedules anneal normally. Every run
is a separate `bin/s01-train.py` process (2 threads) and its val accuracy is read from its summary.json.
Claim: the best SSL method beats scratch by >= 5 points.

    python bench/ssl_vs_scratch.py [--quick] [--pretrain_s 600] [--finetune_s 180] [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import claim, table, write  # noqa: E402

from reprlab.tracking import read_history_csv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "bin" / "s01-train.py"
METHODS = ["rotation", "jigsaw", "patchwork", "mixup", "simclr", "dino"]
PRETRAIN = {"simclr": ["--lr=0.003", "--data.crop_scale=0.2"], "dino": ["--lr=0.001", "--data.crop_scale=0.3"],
            "jigsaw": [], "rotation": [], "patchwork": [], "mixup": []}


def run(args: list[str], runs: Path, threads: int) -> tuple[dict, float]:
    "Run s01-train with `args`; returns (summary.json, wall seconds)."
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), REPRLAB_QUIET="1")
    t = time.perf_counter()
    r = subprocess.run([sys.executable, str(TRAIN), f"--runs_dir={runs}", f"--threads={threads}", "--quiet",
                        "--data.num_workers=0", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode: sys.exit(f"s01-train {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    name = next(a.split("=", 1)[1] for a in args if a.startswith("--name="))
    summary = json.loads((runs / name / "summary.json").read_text())
    summary["final"] = read_history_csv(runs / name / "history.csv")[-1]
    return summary, wall


def budget_epochs(args, runs, threads, seconds, name) -> int:
    "Epochs of `args` that fit in `seconds` (from a one-epoch calibration run, start-up excluded)."
    s, _ = run([*args, "--epochs=1", f"--name={name}-cal", "--knn_every=0"], runs, threads)
    per = max(s.get("wall_time_s", 1.0), 1e-3)
    return max(1, int(seconds / per))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny budgets, one seed, two methods")
    ap.add_argument("--pretrain_s", type=float, default=600)
    ap.add_argument("--finetune_s", type=float, default=180)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--encoder", default="conv")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default="ssl_vs_scratch", help="name of the results file in bench/results/")
    a = ap.parse_args()
    if a.quick: a.pretrain_s, a.finetune_s, a.seeds, a.methods = 10, 5, "0", "rotation,simclr"
    seeds, methods = [int(s) for s in a.seeds.split(",")], a.methods.split(",")
    res: dict[str, list] = {m: [] for m in ["scratch", *methods]}
    walls: dict[str, list] = {m: [] for m in res}
    ft = ["--task=supervised", f"--encoder={a.encoder}"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        for seed in seeds:
            n = budget_epochs([*ft, f"--seed={seed}"], runs, a.threads, a.pretrain_s + a.finetune_s, f"scratch-{seed}")
            s, w = run([*ft, f"--seed={seed}", f"--epochs={n}", f"--name=scratch-{seed}"], runs, a.threads)
            res["scratch"].append(s["final"]["accuracy"]); walls["scratch"].append(w)
            print(f"seed {seed} scratch: {n} epochs, val accuracy {s['final']['accuracy']:.4f}, {w:.0f} s", flush=True)
            for m in methods:
                pre = [f"--task={m}", f"--encoder={a.encoder}", f"--seed={seed}", *PRETRAIN.get(m, [])]
                n = budget_epochs(pre, runs, a.threads, a.pretrain_s, f"{m}-{seed}")
                sp, w1 = run([*pre, f"--epochs={n}", f"--name={m}-{seed}", "--knn_every=1000"], runs, a.threads)
                init = runs / f"{m}-{seed}" / "checkpoints" / "last.pt"
                fine = [*ft, f"--seed={seed}", f"--init_encoder={init}", "--freeze_encoder_epochs=2", "--encoder_lr_mult=0.3"]
                nf = budget_epochs(fine, runs, a.threads, a.finetune_s, f"{m}-ft-{seed}")
                sf, w2 = run([*fine, f"--epochs={max(nf, 3)}", f"--name={m}-ft-{seed}"], runs, a.threads)
                res[m].append(sf["final"]["accuracy"]); walls[m].append(w1 + w2)
                print(f"seed {seed} {m}: pretrain {n} epochs (kNN {sp['final'].get('knn_accuracy', float('nan')):.4f}), "
                      f"fine-tune {max(nf, 3)} epochs, val accuracy {sf['final']['accuracy']:.4f}, {w1 + w2:.0f} s", flush=True)
    rows = [dict(method=m, val_acc=f"{statistics.mean(v):.4f}", per_seed=[round(x, 4) for x in v],
                 wall_s=round(statistics.mean(walls[m]), 1)) for m, v in res.items()]
    print(table(rows, ["method", "val_acc", "per_seed", "wall_s"]))
    best = max(methods, key=lambda m: statistics.mean(res[m]))
    gain = (statistics.mean(res[best]) - statistics.mean(res["scratch"])) * 100
    claims = [claim(f"best SSL method ({best}) val accuracy - scratch, points", gain, ">= 5")]
    write(a.results, dict(results=res, wall_s=walls), claims,
          settings=dict(pretrain_s=a.pretrain_s, finetune_s=a.finetune_s, seeds=seeds, encoder=a.encoder, threads=a.threads))


if __name__ == "__main__":
    main()
