"""Record a few training steps per task with the flat options of before the task plug-ins (issue 18).

Run once, before the refactor, with the code of that time (e.g. a worktree of the commit before it on PYTHONPATH):
`python tests/scripts/record_task_losses.py tests/data/task_losses-AVX512.json`, and with
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` for `task_losses-AVX2.json` (AVX2 kernels round float32 differently).
tests/test_tasks.py trains the same cases with the new grouped options (through `run` below) and compares the losses.
"""
import json
import sys
import tempfile
from pathlib import Path

import torch

torch.set_num_threads(1)
from reprlab.core import seed_everything  # noqa: E402
from reprlab.experiments import build_data, build_learner, parse_train_args, training_callbacks  # noqa: E402
from reprlab.learner import Callback  # noqa: E402
from reprlab.testing import make_imagewang  # noqa: E402

COMMON = ["--amp=false", "--channels_last=false", "--data.num_workers=0", "--epochs=2", "--data.batch_size=16",
          "--data.size=16", "--knn_every=0", "--seed=3", "--lr=0.002"]
CASES = {   # name: the options of before the refactor
    "supervised": ["--task=supervised", "--dropout=0.1"],
    "patchwork": ["--task=patchwork", "--patch_size=4"],
    "mixup": ["--task=mixup", "--pretext_n=2"],
    "mixup_pdist": ["--task=mixup", "--pretext_loss=pdist", "--proj_dim=16"],
    "mixup_bce": ["--task=mixup", "--pretext_loss=bce", "--pretext_n=4"],
    "scale": ["--task=scale", "--pretext_n=3", "--pretext_loss=mse"],
    "quadrant": ["--task=quadrant"],
    "rotation": ["--task=rotation"],
    "jigsaw": ["--task=jigsaw"],
    "transform_detect": ["--task=transform_detect"],
    "simclr": ["--task=simclr", "--temperature=0.3", "--proj_dim=32"],
    "simclr_multicrop": ["--task=simclr", "--simclr_n_local=2", "--simclr_local_size=8"],
    "simclr_mix": ["--task=simclr", "--simclr_mix=0.5"],
    "supcon": ["--task=supcon", "--temperature=0.5", "--proj_dim=16"],
    "byol": ["--task=byol", "--proj_dim=16", "--dino_momentum=0.99"],
    "nnclr": ["--task=nnclr", "--nnclr_queue=32", "--temperature=0.4"],
    "dino": ["--task=dino", "--dino_out_dim=64", "--dino_n_local=2", "--dino_local_size=8", "--teacher_temp=0.05",
             "--dino_momentum=0.99", "--dino_wd_end=0.2"],
}


class Losses(Callback):
    order = 99
    def __init__(self): self.losses = []
    def after_loss(self, learn):
        if learn.training: self.losses.append(float(learn.loss.detach()))


def run(argv, reg: Path, runs: Path) -> list:
    "The training losses of `argv` (+ COMMON) on the tiny dataset registered in `reg`."
    import os
    old = os.environ.get("REPRLAB_DATASETS")
    os.environ["REPRLAB_DATASETS"] = str(reg)
    try:
        cfg = parse_train_args([*COMMON, "--data.dataset=tiny", f"--runs_dir={runs}", *argv])
        seed_everything(cfg.seed)                      # as train() does before the data and the model
        data = build_data(cfg)
        rec = Losses()
        learn = build_learner(cfg, data, training_callbacks(cfg) + [rec], verbose=False)
        learn.fit(cfg.epochs)
        return rec.losses
    finally:
        if old is None: os.environ.pop("REPRLAB_DATASETS", None)
        else: os.environ["REPRLAB_DATASETS"] = old


def tiny_dataset(root: Path) -> Path:
    make_imagewang(root / "wang", classes=("a", "b", "c"), n_train=8, n_val=4, n_unsup=24, size=(16, 16))
    reg = root / "reg.json"
    reg.write_text(json.dumps({"tiny": {"root": str(root / "wang"), "layout": "imagewang"}}))
    return reg


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        reg = tiny_dataset(Path(tmp))
        out = {name: dict(old_argv=argv, losses=run(argv, reg, Path(tmp) / "runs")) for name, argv in CASES.items()}
    Path(sys.argv[1]).write_text(json.dumps(dict(common=COMMON, cases=out), indent=1) + "\n")
    for k, v in out.items(): print(k, [round(x, 5) for x in v["losses"]])
