#!/usr/bin/env python
"""Train a model on a registered dataset (default: the small conv classifier on the embedded cifar10-wang-mini)
and write a run directory: config.json, cmd.txt, env.json, history.csv/png, log.jsonl, checkpoints/{last,best}.pt.

    python bin/s01-train.py [--config=file.json] [--key=value ...]      (--help lists every option)
    torchrun --nproc_per_node=2 bin/s01-train.py ...                   (DDP: gloo on CPU, nccl on CUDA)
    python bin/s01-train.py --resume=runs/<name>/checkpoints/last.pt   (continue exactly where it stopped)
    python bin/s01-train.py --protocol=imagewang --task=simclr          (pretrain + fine-tune vs scratch, same CPU budget)
"""
from __future__ import annotations

import sys
from pathlib import Path

from reprlab.callbacks import NonFiniteLossError
from reprlab.checkpoint import CheckpointError
from reprlab.config import ConfigError, cli
from reprlab.core import is_main_process
from reprlab.data import DataError
from reprlab.experiments import TrainConfig, train
from reprlab.protocols import run_protocol


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    resume = next((a.split("=", 1)[1] for a in argv if a.startswith("--resume=")), None)
    if resume and not any(a.startswith("--config") for a in argv):   # a resumed run reuses its own config
        cfg_file = Path(resume).resolve().parent.parent / "config.json"
        if cfg_file.exists(): argv = [f"--config={cfg_file}", *argv]
    cfg = cli(TrainConfig, argv, prog="s01-train.py", description=__doc__.splitlines()[0])
    try:
        if cfg.protocol != "none": return 0 if run_protocol(cfg, ["bin/s01-train.py", *argv]) else 1
        summary = train(cfg, ["bin/s01-train.py", *argv])
    except KeyboardInterrupt: return 130
    except (ConfigError, DataError, CheckpointError, NonFiniteLossError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if is_main_process():
        final = summary.get("final", {})
        acc = final.get("accuracy")
        print(f"final val accuracy: {acc:.4f}" if acc is not None else f"final: {final}")
        print(f"run dir: {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
