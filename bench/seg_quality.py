"""Segmentation quality after a fixed CPU budget: `s01-train --task=segmentation --data.dataset=isbi2012-em` for as many
epochs as fit in `--budget` seconds (10 minutes by default, measured on this machine first, as the Imagewang protocol
does), then `s02-eval` on the 5 validation slices: membrane Dice, IoU and the pixel error (the ISBI challenge's figure;
the U-Net paper reports 0.0611 on the challenge's test set, whose labels are not public) of whole 512 x 512 slices
predicted tile by tile with a Hann window.

The run is an ordinary run dir (`runs/bench-seg-quality-<kind>`): its history, checkpoints and
`eval/isbi2012-em-val/{report.md,segmentation.png}` are kept to look at.

    python bench/seg_quality.py [--budget 600] [--width 32] [--depth 4] [--tile 256] [--quick] [--threads 2] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import claim, machine_kind, write  # noqa: E402

from reprlab.core import set_threads  # noqa: E402
from reprlab.eval_run import EvalConfig, evaluate_run  # noqa: E402
from reprlab.experiments import parse_train_args, train  # noqa: E402
from reprlab.protocols import epochs_for_budget  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=600.0, help="seconds of training (the epoch count is fitted to it)")
    ap.add_argument("--width", type=int, default=32); ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--tile", type=int, default=256); ap.add_argument("--tiles-per-image", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8); ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--seed", type=int, default=0); ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs-dir", default="runs"); ap.add_argument("--quick", action="store_true", help="a 40 s smoke run")
    ap.add_argument("--evaluate-only", action="store_true", help="evaluate the run this command trained before (its summary.json) again")
    a = ap.parse_args(argv)
    budget = 40.0 if a.quick else a.budget
    set_threads(a.threads)
    name = f"bench-seg-quality{'-quick' if a.quick else ''}-{machine_kind()}"
    args = ["--task=segmentation", "--data.dataset=isbi2012-em", f"--segmentation.width={a.width}", f"--segmentation.depth={a.depth}",
            f"--segmentation.tile={a.tile}", f"--segmentation.tiles_per_image={2 if a.quick else a.tiles_per_image}",
            f"--data.batch_size={a.batch_size}", f"--lr={a.lr}", f"--seed={a.seed}", f"--threads={a.threads}",
            f"--runs_dir={a.runs_dir}", f"--name={name}", "--overwrite", "--quiet"]
    run = Path(a.runs_dir) / name
    if a.evaluate_only:
        summary = json.loads((run / "summary.json").read_text())
        epochs, train_s = summary["epochs_run"], summary["train_time_s"]
        per = train_s / epochs
    else:
        cfg = parse_train_args(args)
        t0 = time.perf_counter()
        epochs, per = epochs_for_budget(cfg, budget)
        print(f"{per:.1f} s per epoch -> {epochs} epochs in {budget:.0f} s (calibration {time.perf_counter() - t0:.0f} s)", flush=True)
        t0 = time.perf_counter()
        train(parse_train_args(args + [f"--epochs={epochs}"]))
        train_s = time.perf_counter() - t0
    summary = dict(run_dir=str(run))
    rep = evaluate_run(EvalConfig(run=run, checkpoint="last", quiet=True, threads=a.threads))
    m = rep["segmentation"]["metrics"]
    print(f"whole validation slices: Dice {m['dice']:.4f}, IoU {m['iou']:.4f}, pixel error {m['pixel_error']:.4f} "
          f"(precision {m['precision']:.4f}, recall {m['recall']:.4f}); training {train_s:.0f} s")
    figures = dict(budget_s=budget, epochs=epochs, seconds_per_epoch=round(per, 2), train_seconds=round(train_s, 1),
                   tiles_seen=epochs * 20 * (2 if a.quick else a.tiles_per_image), dice=m["dice"], iou=m["iou"],
                   pixel_error=m["pixel_error"], precision=m["precision"], recall=m["recall"],
                   best_history_dice=max(h.get("dice", 0) for h in _history(Path(summary["run_dir"]))),
                   per_image=rep["segmentation"]["per_image"], run_dir=summary["run_dir"], settings=vars(a),
                   unet_paper_pixel_error_test_set=0.0611)
    claims = [claim("membrane Dice on the 5 validation slices after the CPU budget", m["dice"], ">= 0.80")] if not a.quick else []
    write("seg_quality", figures, claims, quick=a.quick)


def _history(run: Path) -> list[dict]:
    import csv
    with open(run / "history.csv") as f: return [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)]


if __name__ == "__main__":
    main()
