"""Under torchrun: NT-Xent (and SupCon) over each rank's slice of a global batch (negatives gathered from every rank) gives the
single-process loss and gradients of the whole batch; NNCLR enqueues every rank's rows. Rank 0 writes the comparison to OUT.json.

    torchrun --nproc_per_node=2 tests/scripts/ddp_ntxent.py OUT.json
"""
import json
import sys

import torch
import torch.nn.functional as F

from reprlab.core import get_rank, get_world_size
from reprlab.distributed import all_gather_cat, all_reduce_sum, cleanup_distributed, init_distributed
from reprlab.losses import NTXentLoss, SupConLoss
from reprlab.methods import nnclr

torch.set_num_threads(1)
init_distributed()
rank, world = get_rank(), get_world_size()
g = torch.Generator().manual_seed(0)
z0, z1 = (torch.randn(8, 5, generator=g).requires_grad_() for _ in range(2))         # the global batch, on every rank
full = NTXentLoss(0.3, gather=False)(z0, z1)
gf0, gf1 = torch.autograd.grad(full, (z0, z1))
b = len(z0) // world
mine = slice(rank * b, (rank + 1) * b)
local = NTXentLoss(0.3)(z0[mine], z1[mine])                                           # this rank's rows only
gl0, gl1 = torch.autograd.grad(local, (z0, z1))
loss = all_reduce_sum(local.detach()) / world                                         # what DDP optimises: the mean
g0, g1 = all_reduce_sum(gl0) / world, all_reduce_sum(gl1) / world                    # DDP averages gradients
zs, y = torch.randn(8, 2, 5, generator=g).requires_grad_(), torch.randint(0, 3, (8,), generator=g)
sfull = SupConLoss(0.3, gather=False)(zs, y)
(gsf,) = torch.autograd.grad(sfull, zs)
slocal = SupConLoss(0.3)(zs[mine], y[mine])
(gsl,) = torch.autograd.grad(slocal, zs)
sloss, gs = all_reduce_sum(slocal.detach()) / world, all_reduce_sum(gsl) / world
torch.manual_seed(0)                                                                  # the same start on every rank, as s01-train seeds
nn_model = nnclr(queue_size=16).train()                                             # NNCLR: each rank enqueues every rank's rows
x = torch.rand(2 * world, 3, 16, 16, generator=g)[rank * 2:(rank + 1) * 2]
zq = nn_model(dict(image=[x, x.flip(-1)]))["z"]
want = F.normalize(all_gather_cat(zq), dim=1)                                         # the global batch's first views, in rank order
q = all_gather_cat(nn_model.queue[None])                                              # (world, 16, d): every rank's queue
nnclr_err = max((q[0, :len(want)] - want).abs().max().item(), (q[0] - q[-1]).abs().max().item())
nnclr_ptr = nn_model.queue_ptr.item()
try:
    NTXentLoss(0.3)(z0[: 2 + rank], z1[: 2 + rank]); uneven = "no error"                 # 2 rows on rank 0, 3 on rank 1
except ValueError as e: uneven = str(e)
if rank == 0:
    json.dump(dict(world=world, uneven=uneven, full=full.item(), ddp=loss.item(), local=local.item(),
                   grad_err=max((g0 - gf0).abs().max().item(), (g1 - gf1).abs().max().item()),
                   supcon_full=sfull.item(), supcon_ddp=sloss.item(), supcon_local=slocal.item(),
                   supcon_grad_err=(gs - gsf).abs().max().item(), nnclr_err=nnclr_err, nnclr_ptr=nnclr_ptr), open(sys.argv[1], "w"))
cleanup_distributed()
