#!/usr/bin/env python
"""Evaluate a training run: its best (or last) checkpoint on the run's validation split, or on any registered data,
seen with the run's own preprocessing. Writes runs/<name>/eval/<dataset>-<split>/: report.json, report.md,
confusion matrix (CSV, PNG), ROC curves, t-SNE map, grids of mistakes, predictions.npz.

    python bin/s02-eval.py --run=runs/<name>                                  (--help lists every option)
    python bin/s02-eval.py --run=runs/<name> --data.dataset=cifar10-wang-mini --data.split=val --checkpoint=last
    python bin/s02-eval.py --compare runs/a runs/b ...                        (one table of the main figures)

The same as the `reprlab-eval` command that `pip install` puts on the PATH (reprlab.cli.eval_main).
"""
import sys

from reprlab.cli import eval_main

if __name__ == "__main__":
    sys.exit(eval_main())
