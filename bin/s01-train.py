#!/usr/bin/env python
"""Train a model on a registered dataset (default: the small conv classifier on the embedded cifar10-wang-mini)
and write a run directory: config.json, cmd.txt, env.json, history.csv/png, log.jsonl, checkpoints/{last,best}.pt.

    python bin/s01-train.py [--config=file.json] [--key=value ...]      (--help lists every option)
    torchrun --nproc_per_node=2 bin/s01-train.py ...                   (DDP: gloo on CPU, nccl on CUDA)
    python bin/s01-train.py --resume=runs/<name>                       (continue exactly where it stopped)
    python bin/s01-train.py --protocol=imagewang --task=simclr          (pretrain + fine-tune vs scratch, same CPU budget)
"""
from __future__ import annotations

import sys
import warnings

from reprlab.callbacks import NonFiniteLossError
from reprlab.checkpoint import CheckpointError
from reprlab.config import ConfigError
from reprlab.core import Terminated, is_main_process
from reprlab.data import DataError
from reprlab.experiments import parse_train_args, train
from reprlab.protocols import run_protocol


def _message(e: BaseException) -> str:
    "One line for the user: a KeyError's text without its quotes; the exception's type when it has no text."
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(text.split()) or f"{type(e).__name__}: {e!r}"


def main(argv=None) -> int:
    "Exit codes: 0 done, 1 bad data or files, a NaN loss or a missing extra, 2 usage (options), 130 Ctrl-C, 143 SIGTERM."
    argv = sys.argv[1:] if argv is None else list(argv)
    warnings.formatwarning = lambda message, category, *args, **kw: f"warning: {message}\n"   # one line, no source echo
    cfg = parse_train_args(argv, prog="s01-train.py", description=__doc__.splitlines()[0])   # exits 2 on a bad option
    try:
        if cfg.protocol != "none": return 0 if run_protocol(cfg, ["bin/s01-train.py", *argv]) else 1
        summary = train(cfg, ["bin/s01-train.py", *argv])
    except Terminated: return 143
    except KeyboardInterrupt: return 130
    except (ConfigError, KeyError) as e:
        print(f"error: {_message(e)}", file=sys.stderr)
        return 2
    except (DataError, CheckpointError, NonFiniteLossError, OSError, ImportError) as e:   # ImportError: an optional extra
        print(f"error: {_message(e)}", file=sys.stderr)
        return 1
    if summary.get("dry_run"):
        print(f"dry run: the options, data and model are fine; nothing was trained or written (run dir: {summary['run_dir']})")
        return 0
    if is_main_process():
        final = summary.get("final", {})
        acc = final.get("accuracy")
        print(f"final val accuracy: {acc:.4f}" if acc is not None else f"final: {final}")
        print(f"run dir: {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
