"""Does self-supervised pretraining help on cifar10-wang-mini? Val accuracy after fine-tuning on the 600 labels,
scratch vs each pretext task vs SimCLR vs DINO, at the same CPU budget, mean over seeds.

Every run is `bin/s01-train.py --protocol=imagewang` in its own process: each SSL method pretrains on unsup/ +
train/ images (labels dropped) for `budget - finetune` seconds, then fine-tunes on the train labels for `finetune`
seconds (the encoder from the last pretraining checkpoint; head-only warm-up, lower encoder LR: the protocol's
defaults); scratch (`--task=supervised`) trains the same supervised recipe from random weights for the whole budget.
Budgets become epochs from a few seconds of timed steady-state training (`reprlab.protocols.epochs_for_budget`),
so each schedule anneals normally. `--jobs 2 --threads 1` runs two protocols side by side, one core each (the
budget is then one core's seconds, the same for every method). SimCLR pretrains on 16 px views (`--data.pretrain_size=16`:
~3x the epochs of 32 px views in the same seconds, kNN 0.52 vs 0.46); fine-tuning and evaluation stay at 32 px.
Fine-tuning is short by default (60 s, ~130 epochs): 438 epochs of it lost ~3 points of the pretraining's gain.
Results: each run's protocol.json. With `--runs_dir`, runs that finished earlier there with the same command are read
back and runs that were cut short are resumed exactly (`s01-train --protocol=imagewang --resume`), so a benchmark can
be completed over several sessions.
Claim: the best SSL method beats scratch by >= 5 points.

    python bench/ssl_vs_scratch.py [--quick] [--budget_s 780] [--finetune_s 60] [--seeds 0,1,2] [--methods ...]
                                   [--first_seed_only rotation,...] [--jobs 2 --threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import claim, table, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "bin" / "s01-train.py"
METHODS = ["rotation", "jigsaw", "patchwork", "mixup", "simclr", "dino"]
PRETRAIN = {"simclr": ["--lr=0.003", "--data.crop_scale=0.2", "--data.pretrain_size=16"],
            "byol": ["--lr=0.003", "--data.crop_scale=0.2", "--data.pretrain_size=16"],     # not in METHODS: below SimCLR
            "nnclr": ["--lr=0.003", "--data.crop_scale=0.2", "--data.pretrain_size=16", "--nnclr.temperature=0.1"],   # not in METHODS: ties SimCLR
            "dino": ["--lr=0.001", "--data.crop_scale=0.3", "--data.pretrain_size=16", "--dino.local_size=8"]}


def run(args: list[str], runs: Path, threads: int) -> dict:
    """Run `s01-train --protocol=imagewang` with `args`; returns its protocol.json (marked `read_back` when an earlier
    run of the same command in `runs` had finished; a run that was cut short is resumed with `--resume`)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), REPRLAB_QUIET="1")
    args = ["--protocol=imagewang", f"--runs_dir={runs}", f"--threads={threads}", "--data.num_workers=0", "--knn_every=1000", *args]
    name = next(a.split("=", 1)[1] for a in args if a.startswith("--name="))
    d = runs / name
    if (d / "cmd.txt").exists():
        saved = shlex.split((d / "cmd.txt").read_text())[2:]          # drop "python bin/s01-train.py"
        if saved != args:
            sys.exit(f"{d} holds a run of another command:\n  {' '.join(saved)}\nnot\n  {' '.join(args)}\n"
                     "use another --runs_dir or delete that folder")
        if (d / "protocol.json").exists(): return dict(json.loads((d / "protocol.json").read_text()), read_back=True)
        cmd = ["--protocol=imagewang", f"--resume={d}", f"--threads={threads}"]     # the saved config, arm by arm
    else: cmd = args
    r = subprocess.run([sys.executable, str(TRAIN), *cmd], env=env, capture_output=True, text=True)
    if r.returncode: sys.exit(f"s01-train {' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return json.loads((d / "protocol.json").read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny budgets, one seed, two methods")
    ap.add_argument("--budget_s", type=float, default=780, help="seconds per arm: pretraining + fine-tuning, or scratch")
    ap.add_argument("--finetune_s", type=float, default=60)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated tasks (byol and nnclr too: not run by default)")
    ap.add_argument("--first_seed_only", default="", help="methods run with the first seed only (to fit a session); the claim "
                    "compares the methods run with every seed")
    ap.add_argument("--encoder", default="conv")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=1, help="protocols run side by side (use --threads 1 with --jobs 2)")
    ap.add_argument("--extra", default="", help="more s01-train options for every run, space separated")
    ap.add_argument("--results", default="ssl_vs_scratch", help="name of the results file in bench/results/")
    ap.add_argument("--runs_dir", default="", help="keep the runs here (default: a temporary folder)")
    a = ap.parse_args()
    if a.quick: a.budget_s, a.finetune_s, a.seeds, a.methods = 20, 8, "0", "rotation,simclr"
    seeds, methods = [int(s) for s in a.seeds.split(",")], a.methods.split(",")
    common = [f"--encoder={a.encoder}", f"--budget_s={a.budget_s:g}", f"--finetune_s={a.finetune_s:g}", *a.extra.split()]
    once = set(filter(None, a.first_seed_only.split(",")))
    jobs = [(m, s) for s in seeds for m in ["scratch", *methods] if m not in once]       # the claim's runs first,
    jobs += [(m, seeds[0]) for m in methods if m in once]                                # then the single-seed ones
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(a.runs_dir or tmp)                  # --runs_dir keeps every run (finished ones survive a kill)
        def one(job):
            m, s = job
            task = ["--task=supervised"] if m == "scratch" else [f"--task={m}", "--scratch=false", *PRETRAIN.get(m, [])]
            p = run([*common, *task, f"--seed={s}", f"--name={m}-{s}"], runs, a.threads)
            arm = p["arms"]["scratch" if m == "scratch" else "finetune"]
            knn = p["arms"].get("pretrain", {}).get("knn_accuracy")
            print(f"seed {s} {m}: " + ", ".join(f"{k} {v['epochs']} epochs {v['time_s']:.0f} s" for k, v in p["arms"].items())
                  + (f", kNN after pretraining {knn:.4f}" if knn is not None else "") + f", val accuracy {arm['accuracy']:.4f}"
                  + (" (read back: finished earlier in --runs_dir)" if p.get("read_back") else ""), flush=True)
            return m, s, p
        with ThreadPoolExecutor(a.jobs) as ex: done = list(ex.map(one, jobs))
    res = {m: [p["arms"]["scratch" if m == "scratch" else "finetune"]["accuracy"] for mm, s, p in done if mm == m] for m in ["scratch", *methods]}
    knn = {m: [p["arms"]["pretrain"]["knn_accuracy"] for mm, s, p in done if mm == m] for m in methods}
    secs = {m: [sum(v["time_s"] for v in p["arms"].values()) for mm, s, p in done if mm == m] for m in res}
    epochs = {m: [{k: v["epochs"] for k, v in p["arms"].items()} for mm, s, p in done if mm == m] for m in res}
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else float("nan")
    rows = [dict(method=m, val_acc=f"{statistics.mean(v):.4f}", sd=f"{sd(v):.4f}", per_seed=[round(x, 4) for x in v],
                 knn=f"{statistics.mean(knn[m]):.4f}" if m in knn and None not in knn[m] else "-",
                 seconds=round(statistics.mean(secs[m]), 1)) for m, v in res.items()]
    print(table(rows, ["method", "val_acc", "sd", "per_seed", "knn", "seconds"]))
    full = [m for m in methods if m not in once] or methods
    best = max(full, key=lambda m: statistics.mean(res[m]))
    gain = (statistics.mean(res[best]) - statistics.mean(res["scratch"])) * 100
    claims = [claim(f"best SSL method ({best}) val accuracy - scratch, points", gain, ">= 5")]
    write(a.results, dict(val_accuracy=res, knn_after_pretraining=knn, seconds=secs, epochs=epochs), claims,
          settings=dict(budget_s=a.budget_s, finetune_s=a.finetune_s, seeds=seeds, encoder=a.encoder, threads=a.threads,
                        jobs=a.jobs, extra=a.extra, first_seed_only=sorted(once)), quick=a.quick)


if __name__ == "__main__":
    main()
