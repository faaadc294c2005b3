#!/usr/bin/env python
"""Data tour: load a registered dataset (default: the embedded cifar10-wang-mini), print the images per class,
decode it into the uint8 cache, measure its channel statistics and save grids of images and augmented views.

    python bin/s00-data.py [--dataset=NAME] [--out=runs/data-tour] [--augment=simclr] ...   (--help lists every option)
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from reprlab.config import cli, format_config, opt, save_config
from reprlab.data import cache, channel_stats
from reprlab.datasets import load_dataset
from reprlab.loaders import Loader
from reprlab.transforms import MultiView, basic_augment, simclr_augment
from reprlab.viz import save_image_grid


@dataclass
class DataTourConfig:
    "Look at a dataset before training on it."
    dataset: str = opt("cifar10-wang-mini", "dataset name in the registry (data/datasets.json or $REPRLAB_DATASETS)")
    out: Path = opt(Path("runs/data-tour"), "folder for the figures and stats.json")
    size: int = opt(32, "image size of the cache and of the augmented views")
    augment: Literal["basic", "simclr"] = opt("simclr", "augmentation preset shown in the views grid")
    n_views: int = opt(4, "augmented views per image in the grid")
    n_images: int = opt(8, "images shown in the views grid")
    seed: int = opt(0, "seed of the loader order and the augmentations")
    download: bool = opt(False, "download a public dataset that is not on disk yet")


def main(argv=None) -> int:
    cfg = cli(DataTourConfig, argv, prog="s00-data.py")
    print(format_config(cfg))
    cfg.out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, cfg.out / "config.json")
    t = time.perf_counter()
    splits = load_dataset(cfg.dataset, size=cfg.size, download=cfg.download)
    print(f"\nloaded {cfg.dataset} in {time.perf_counter() - t:.1f}s: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    labeled = {k: v for k, v in splits.items() if (v.labels >= 0).any()}
    classes = next(iter(labeled.values())).classes if labeled else []
    if classes:
        w = max(len(c) for c in classes)
        print(f"\n{'class':<{w}}  " + "  ".join(f"{k:>6}" for k in labeled))
        for c in classes: print(f"{c:<{w}}  " + "  ".join(f"{v.class_counts.get(c, 0):>6}" for v in labeled.values()))
    stats = {}
    for k, ds in splits.items():
        t = time.perf_counter(); cache(ds); dt = time.perf_counter() - t
        mean, std = channel_stats(ds)
        stats[k] = dict(images=len(ds), decode_s=round(dt, 2), mean=[round(m, 4) for m in mean], std=[round(s, 4) for s in std])
        print(f"{k}: decoded {len(ds)} images in {dt:.1f}s into a uint8 tensor {tuple(ds.images.shape)}; "
              f"mean {stats[k]['mean']} std {stats[k]['std']}")
    (cfg.out / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    show = labeled.get("train") or next(iter(splits.values()))
    # one row per class: the first images of each class
    per = 8
    idx = [i for c in range(len(show.classes)) for i in (show.labels == c).nonzero()[0][:per]] if show.classes else list(range(32))
    grid = save_image_grid(show.images[idx], cfg.out / "images.png", nrow=per,
                           row_titles=show.classes if show.classes else None)
    aug = simclr_augment if cfg.augment == "simclr" else basic_augment
    views = MultiView([aug(cfg.size) for _ in range(cfg.n_views)])
    b = next(iter(Loader(show, batch_size=cfg.n_images, shuffle=True, seed=cfg.seed, transform=views)))
    originals = show.images[b["index"]].float() / 255
    rows = torch.stack([originals, *b["image"]], 1).flatten(0, 1)     # per image: original, view 1..n
    vgrid = save_image_grid(rows, cfg.out / "views.png", nrow=cfg.n_views + 1,
                            titles=["original"] + [f"view {j + 1}" for j in range(cfg.n_views)])
    print(f"\nfigures: {grid} (images per class), {vgrid} ({cfg.augment} views); stats: {cfg.out / 'stats.json'}")
    print(f"results are in {cfg.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
