#!/usr/bin/env python
"""Grid search: one run (or one pipeline) per combination of a parameter grid, under one sweep dir, launched on this
machine, on SLURM (submitit) or as shell scripts, with a results table (CSV, markdown) and a figure of a metric.

    python bin/s06-grid.py --base=examples/base.json --param_grid=examples/param_grid.json [--dry_run]
    python bin/s06-grid.py ... --launcher=local --workers=2                      (2 processes, the cores split)
    python bin/s06-grid.py ... --launcher=slurm --slurm.partition=gpu --slurm.gpus=1 --slurm.time=120
    python bin/s06-grid.py ... --launcher=scripts --scripts.header='#PBS -l walltime=02:00:00'
    python bin/s06-grid.py ... --collect --metric=eval.knn20                   (the table again, by another figure)

The same as `reprlab-grid` or `python -m reprlab grid` (reprlab.launch.grid_main).
"""
import sys

from reprlab.launch import grid_main

if __name__ == "__main__":
    sys.exit(grid_main())
