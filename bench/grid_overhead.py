"""Overhead of the grid runner: the same 8 one-epoch runs (the default conv classifier on the embedded cifar10-wang-mini,
lr x 4 values, seed x 2) launched (a) by hand from a shell loop of `python bin/s01-train.py ...`, one process per run,
and (b) by `python bin/s06-grid.py --launcher=local` (its default: the runs one after another in one process, with the
sweep's bookkeeping: configs, markers, the results table and figure), and (c) the grid's process-per-run path
(`--launcher=scripts`, `bash submit_all.sh`: each run a `python -m reprlab grid-run` process, as on a cluster, which
rewrites the results table when it ends), which isolates the bookkeeping from the saving of one torch import per run. Repetitions are interleaved (a b a b ...), each
in a fresh folder, and the wall time of each whole batch of 8 runs is measured from the outside (process start to end).

Claims: (b) and (c) total time <= 1.05x (a)'s (median over repetitions). Also checked: both give every run the same final
validation accuracy (same seeds, same numbers).

    python bench/grid_overhead.py [--reps 3] [--runs 8] [--threads 2] [--quick]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import claim, table, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE = {"epochs": 1, "quiet": True, "data": {"num_workers": 0}}
LRS, SEEDS = [0.001, 0.002, 0.004, 0.008], [0, 1]


def final_accuracies(folder: Path) -> dict:
    out = {}
    for h in sorted(folder.glob("*/history.csv")):
        rows = list(csv.DictReader(open(h)))
        out[h.parent.name] = float(rows[-1]["accuracy"])
    return out


def shell_loop(d: Path, runs: list, env: dict) -> float:
    lines = ["set -e"] + [" ".join([shlex.quote(sys.executable), shlex.quote(str(ROOT / "bin" / "s01-train.py")), f"--config={shlex.quote(str(d / 'base.json'))}",
                                    f"--lr={lr}", f"--seed={seed}", f"--runs_dir={shlex.quote(str(d / 'loop'))}", f"--name=lr={lr},seed={seed}",
                                    ">/dev/null"]) for lr, seed in runs]
    (d / "loop.sh").write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    subprocess.run(["bash", str(d / "loop.sh")], check=True, env=env)
    return time.perf_counter() - t0


def grid_runner(d: Path, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "bin" / "s06-grid.py"), f"--base={d / 'base.json'}", f"--param_grid={d / 'grid.json'}",
                    f"--runs_dir={d}", "--name=grid", "--quiet"], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def grid_scripts(d: Path, env: dict) -> float:
    "The process-per-run path: --launcher=scripts, then bash submit_all.sh (each run a `python -m reprlab grid-run` that rewrites the table)."
    t0 = time.perf_counter()
    common = [sys.executable, str(ROOT / "bin" / "s06-grid.py"), f"--base={d / 'base.json'}", f"--param_grid={d / 'grid.json'}",
              f"--runs_dir={d}", "--name=scripts", "--quiet"]
    subprocess.run([*common, "--launcher=scripts"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["bash", str(d / "scripts" / "scripts" / "submit_all.sh")], check=True, env=env, stdout=subprocess.DEVNULL)
    if not (d / "scripts" / "results.md").is_file(): raise SystemExit(f"the scripts' runs wrote no results table in {d / 'scripts'}")
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--runs", type=int, default=8, help="runs per batch (at most 8: lr x 4, seed x 2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 runs, 1 repetition")
    a = ap.parse_args()
    if a.quick: a.reps, a.runs = 1, 2
    lrs = LRS[:max(1, a.runs // 2)] if a.runs > 1 else LRS[:1]
    seeds = SEEDS[:min(2, a.runs)]
    runs = [(lr, s) for lr in lrs for s in seeds]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    times, accs = {"shell loop": [], "grid runner": [], "grid scripts": []}, {}
    for rep in range(a.reps):
        for arm in list(times):
            d = Path(tempfile.mkdtemp(prefix=f"grid-bench-{rep}-"))
            (d / "base.json").write_text(json.dumps(BASE))
            (d / "grid.json").write_text(json.dumps([["lr", lrs], ["seed", seeds]]))
            t = {"shell loop": shell_loop, "grid runner": grid_runner, "grid scripts": grid_scripts}[arm](*((d, runs, env) if arm == "shell loop" else (d, env)))
            times[arm].append(t)
            acc = final_accuracies(d / {"shell loop": "loop", "grid runner": "grid", "grid scripts": "scripts"}[arm])
            if len(acc) != len(runs): raise SystemExit(f"{arm}: {len(acc)} of {len(runs)} runs finished in {d}")
            accs.setdefault(arm, acc)
            print(f"rep {rep} {arm}: {t:.1f} s for {len(runs)} runs", flush=True)
    same = accs["shell loop"] == accs["grid runner"] == accs["grid scripts"]
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio, ratio_scripts = med["grid runner"] / med["shell loop"], med["grid scripts"] / med["shell loop"]
    rows = [dict(arm=k, median_s=med[k], per_run_s=med[k] / len(runs), all_s=", ".join(f"{t:.1f}" for t in v)) for k, v in times.items()]
    print(table(rows, ["arm", "median_s", "per_run_s", "all_s"]))
    print(f"grid / shell loop: {ratio:.3f}x; scripts (a process per run) / shell loop: {ratio_scripts:.3f}x; same final accuracies: {same}")
    write("grid_overhead", dict(runs=len(runs), reps=a.reps, threads=a.threads, seconds=times, median_s=med, ratio=round(ratio, 4), ratio_scripts=round(ratio_scripts, 4),
                                same_accuracies=same),
          [claim("grid runner total time / shell loop (8 one-epoch runs)", ratio, "<= 1.05"),
           claim("grid scripts launcher (a process per run) total time / shell loop", ratio_scripts, "<= 1.05"),
           claim("runs with the same final accuracy in both arms (fraction)", 1.0 if same else 0.0, ">= 1")], quick=a.quick)


if __name__ == "__main__":
    main()
