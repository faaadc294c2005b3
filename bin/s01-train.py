#!/usr/bin/env python
"""Train a model on a registered dataset (default: the small conv classifier on the embedded cifar10-wang-mini)
and write a run directory: config.json, cmd.txt, env.json, history.csv/png, log.jsonl, checkpoints/{last,best}.pt.

    python bin/s01-train.py [--config=file.json] [--key=value ...]      (--help lists every option)
    torchrun --nproc_per_node=2 bin/s01-train.py ...                   (DDP: gloo on CPU, nccl on CUDA)
    python bin/s01-train.py --resume=runs/<name>                       (continue exactly where it stopped)
    python bin/s01-train.py --protocol=imagewang --task=simclr          (pretrain + fine-tune vs scratch, same CPU budget)

The same as the `reprlab-train` command that `pip install` puts on the PATH (reprlab.cli.train_main).
"""
import sys

from reprlab.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
