"""Train a small BN-free conv net on synthetic data, single process or under torchrun; rank 0 writes the history.

    python tests/scripts/ddp_train.py OUT.json            # one process, global batch 16
    torchrun --nproc_per_node=2 tests/scripts/ddp_train.py OUT.json   # two processes, 8 each
"""
import json
import sys

import torch
from torch import nn

from reprlab.core import get_world_size, is_main_process, seed_everything
from reprlab.data import ImageDataset
from reprlab.distributed import DDPCB, cleanup_distributed, init_distributed
from reprlab.learner import Learner, accuracy
from reprlab.loaders import DataLoaders, Loader
from reprlab.testing import make_images

torch.set_num_threads(1)
init_distributed()
world = get_world_size()
x = torch.from_numpy(__import__("numpy").concatenate([make_images(32, 8, k, 2, 3, seed=0) for k in range(2)])).permute(0, 3, 1, 2)
ds = ImageDataset(images=x.contiguous(), labels=[0] * 32 + [1] * 32, classes=["a", "b"])
dls = DataLoaders(Loader(ds, 16 // world, shuffle=True, seed=0), Loader(ds, 16 // world))
seed_everything(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
learn = Learner(model, dls, loss_func=nn.functional.cross_entropy, lr=0.05, opt_func=torch.optim.SGD,
                metrics=[accuracy], cbs=[DDPCB()])
learn.fit(4)
if is_main_process():
    w = torch.cat([p.detach().flatten() for p in learn.model.parameters()])
    json.dump(dict(world=world, history=learn.history, weights=w.tolist()), open(sys.argv[1], "w"))
cleanup_distributed()
