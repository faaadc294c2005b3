"Every training task of s01-train end to end on a tiny synthetic Imagewang: one epoch, kNN monitor, checkpoint, transfer."
from __future__ import annotations

import json

import pytest
import torch

from reprlab.checkpoint import load_checkpoint, load_encoder, load_model
from reprlab.experiments import DataConfig, TrainConfig, train
from reprlab.testing import make_imagewang

TASKS = ["rotation", "quadrant", "jigsaw", "patchwork", "transform_detect", "mixup", "scale", "simclr", "supcon", "dino"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    make_imagewang(root / "wang", classes=("a", "b", "c"), n_train=8, n_val=4, n_unsup=24, size=(16, 16))
    reg = root / "reg.json"
    reg.write_text(json.dumps({"tiny": {"root": str(root / "wang"), "layout": "imagewang"}}))
    return root, reg


@pytest.mark.parametrize("task", TASKS)
def test_task_trains_monitors_and_transfers(task, tiny, monkeypatch):
    root, reg = tiny
    monkeypatch.setenv("REPRLAB_DATASETS", str(reg)); monkeypatch.setenv("REPRLAB_CACHE", str(root / "cache"))
    cfg = TrainConfig(
        task=task, name=task, runs_dir=root / "runs", epochs=2, quiet=True, threads=1, knn_k=3, dino_out_dim=32,
        dino_n_local=2, dino_local_size=8, pretext_n=2, patch_size=4,
        data=DataConfig(dataset="tiny", size=16, batch_size=8, num_workers=0))
    s = train(cfg, argv=["test"])
    run = root / "runs" / task
    hist = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if '"epoch"' in l and '"knn_accuracy"' in l]
    assert hist, "the kNN monitor wrote knn_accuracy into the epoch logs"
    assert 0 <= s["final"]["knn_accuracy"] <= 1 and s["final"]["train_loss"] == s["final"]["train_loss"]   # not NaN
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["epoch"] == 2 and ck["model_spec"]["name"] in (task, "pretext", "simclr", "supcon", "dino")
    model = load_model(run / "checkpoints" / "last.pt")                       # rebuilt from the checkpoint alone
    from reprlab.checkpoint import create_model
    clf = create_model("classifier", encoder="conv", n_classes=3)
    r = load_encoder(clf.encoder, run / "checkpoints" / "last.pt", verbose=False)
    assert r["missing"] == [] and r["prefix"] in ("encoder.", "teacher.encoder.")
    if task == "dino":
        t = {k: v for k, v in ck["model"].items() if k.startswith("teacher.")}
        st = {k: v for k, v in ck["model"].items() if k.startswith("student.")}
        assert t and not all(torch.equal(t[k], st["student." + k[8:]]) for k in t)   # the EMA teacher differs
