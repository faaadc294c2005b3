#!/usr/bin/env python
"""Explain a training run's predictions, seen with the run's own preprocessing. Writes
runs/<name>/explain/<method>/: one PNG per image (image | heat map | overlay, titled true / predicted / probability),
explain.json, index.png and index.html (opens offline). Runs again with the same settings, it skips finished files.

    python bin/s03-explain.py --run=runs/<name>                                     (Grad-CAM, first 32 val images)
    python bin/s03-explain.py --run=runs/<name> --method=lime --mistakes --n=16      (--help lists every option)
    python bin/s03-explain.py --run=runs/<vit run> --method=attention --teacher       (DINO's teacher)
    python bin/s03-explain.py --run=runs/<name> --method=landscape --dims=2 --points=21
    python bin/s03-explain.py --compare runs/a runs/b --method=gradcam --n=64         (the same images, both runs)

The same as the `reprlab-explain` command that `pip install` puts on the PATH (reprlab.cli.explain_main).
"""
import sys

from reprlab.cli import explain_main

if __name__ == "__main__":
    sys.exit(explain_main())
