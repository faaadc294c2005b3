#!/usr/bin/env python
"""Data tour: load a registered dataset (default: the embedded cifar10-wang-mini), print the images per class,
decode it into the uint8 cache, measure its channel statistics and save grids of images and augmented views.

    python bin/s00-data.py [--dataset=NAME] [--out=runs/data-tour] [--augment=simclr] ...   (--help lists every option)

The same as the `reprlab-data` command that `pip install` puts on the PATH (reprlab.cli.data_main).
"""
import sys

from reprlab.cli import data_main

if __name__ == "__main__":
    sys.exit(data_main())
