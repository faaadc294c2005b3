"Every training task of s01-train end to end on a tiny synthetic Imagewang: one epoch, kNN monitor, checkpoint, transfer."
from __future__ import annotations

import json

import pytest
import torch

from reprlab.checkpoint import load_checkpoint, load_encoder, load_model
from reprlab.experiments import DataConfig, TrainConfig, train
from reprlab.tasks.dino import DINOOptions
from reprlab.tasks.nnclr import NNCLROptions
from reprlab.tasks.pretext import MixOptions, PatchworkOptions
from reprlab.tasks.simclr import SimCLROptions

TASKS = ["rotation", "quadrant", "jigsaw", "patchwork", "transform_detect", "mixup", "scale", "simclr", "supcon", "byol", "nnclr", "dino"]


@pytest.mark.parametrize("task", TASKS)
def test_task_trains_monitors_and_transfers(task, tiny, monkeypatch):
    root, reg = tiny
    monkeypatch.setenv("REPRLAB_DATASETS", str(reg)); monkeypatch.setenv("REPRLAB_CACHE", str(root / "cache"))
    cfg = TrainConfig(
        task=task, name=task, runs_dir=root / "runs", epochs=2, quiet=True, threads=1, knn_k=3,
        dino=DINOOptions(out_dim=32, n_local=2, local_size=8), mixup=MixOptions(n=2), scale=MixOptions(n=2),
        patchwork=PatchworkOptions(patch_size=4), data=DataConfig(dataset="tiny", size=16, batch_size=8, num_workers=0))
    s = train(cfg, argv=["test"])
    run = root / "runs" / task
    hist = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if '"epoch"' in l and '"knn_accuracy"' in l]
    assert hist, "the kNN monitor wrote knn_accuracy into the epoch logs"
    assert 0 <= s["final"]["knn_accuracy"] <= 1 and s["final"]["train_loss"] == s["final"]["train_loss"]   # not NaN
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["epoch"] == 2 and ck["model_spec"]["name"] in (task, "pretext")
    model = load_model(run / "checkpoints" / "last.pt")                       # rebuilt from the checkpoint alone
    from reprlab.checkpoint import create_model
    clf = create_model("classifier", encoder="conv", n_classes=3)
    r = load_encoder(clf.encoder, run / "checkpoints" / "last.pt", verbose=False)
    assert r["missing"] == [] and r["prefix"] in ("encoder.", "teacher.encoder.")
    if task in ("dino", "byol"):
        t = {k: v for k, v in ck["model"].items() if k.startswith("teacher.")}
        st = {k: v for k, v in ck["model"].items() if k.startswith("student.")}
        assert t and not all(torch.equal(t[k], st["student." + k[8:]]) for k in t)   # the EMA teacher differs


@pytest.mark.parametrize("objective", ["pdist", "bce", "mse"])
def test_mixup_objectives_are_selectable(objective, tiny, monkeypatch):
    root, reg = tiny
    monkeypatch.setenv("REPRLAB_DATASETS", str(reg)); monkeypatch.setenv("REPRLAB_CACHE", str(root / "cache"))
    cfg = TrainConfig(task="mixup", mixup=MixOptions(n=2, loss=objective), name=f"mix-{objective}", runs_dir=root / "runs", epochs=1,
                      quiet=True, threads=1, knn_every=0, data=DataConfig(dataset="tiny", size=16, batch_size=8, num_workers=0))
    s = train(cfg, argv=["test"])
    model = load_model(root / "runs" / f"mix-{objective}" / "checkpoints" / "last.pt")
    assert model.loss_kind == {"pdist": "pdist", "bce": "bce", "mse": "mse"}[objective]
    assert s["final"]["train_loss"] == s["final"]["train_loss"]


def test_pretext_loss_needs_a_multi_image_task(capsys):
    "The objective is an option of mixup and scale only: given to another task it is refused, not ignored."
    from reprlab.experiments import parse_train_args
    with pytest.raises(SystemExit): parse_train_args(["--task=rotation", "--mixup.loss=pdist"])
    assert "--mixup.loss is an option of --task=mixup" in capsys.readouterr().err


def test_pretrain_size_sets_the_views(tiny, monkeypatch):
    from reprlab.config import ConfigError
    from reprlab.experiments import build_data, check_config
    root, reg = tiny
    monkeypatch.setenv("REPRLAB_DATASETS", str(reg)); monkeypatch.setenv("REPRLAB_CACHE", str(root / "cache"))
    data = lambda task, ps: DataConfig(dataset="tiny", size=16, batch_size=8, num_workers=0, pretrain_size=ps)
    for task, ps in (("simclr", 8), ("simclr", 0), ("rotation", 12)):
        dls, train_set, valid, _ = build_data(TrainConfig(task=task, data=data(task, ps)))
        b = next(iter(dls.train))
        views = b["image"] if isinstance(b["image"], list) else [b["image"]]
        assert all(v.shape[-2:] == (ps or 16, ps or 16) for v in views), (task, [v.shape for v in views])
        assert valid[0]["image"].shape[-1] == 16                                 # kNN / fine-tuning stay at --data.size
    with pytest.raises(ConfigError, match="pretrain_size"): build_data(TrainConfig(task="simclr", data=data("simclr", 32)))
    dls, *_ = build_data(TrainConfig(task="simclr", simclr=SimCLROptions(n_local=2, local_size=4), data=data("simclr", 8)))
    assert [v.shape[-1] for v in next(iter(dls.train))["image"]] == [8, 8, 4, 4]          # multi-crop SimCLR
    with pytest.raises(ConfigError, match="--simclr.local_size=8 must be between 0 and the views' size .8 px"):
        build_data(TrainConfig(task="simclr", simclr=SimCLROptions(n_local=2), data=data("simclr", 8)))
    with pytest.raises(ConfigError, match="--data.jitter: expected a value >= 0 and <= 2.5, got 3"):
        check_config(TrainConfig(task="simclr", data=DataConfig(dataset="tiny", size=16, jitter=3.0)))
    with pytest.raises(ConfigError, match="--simclr.n_local: expected a value >= 0, got -1"):
        check_config(TrainConfig(task="simclr", simclr=SimCLROptions(n_local=-1), data=data("simclr", 8)))
    with pytest.raises(ConfigError, match="--dino.local_size=8 must be smaller than the global crops .8 px"):
        build_data(TrainConfig(task="dino", dino=DINOOptions(local_size=8), data=data("dino", 8)))
    with pytest.warns(UserWarning, match="pretrain_size=8 applies to self-supervised tasks"):   # not silently ignored
        build_data(TrainConfig(task="supervised", data=data("supervised", 8)))
    from reprlab.protocols import protocol_configs
    arms = protocol_configs(TrainConfig(task="simclr", protocol="imagewang", name="p", data=data("simclr", 8)))
    assert arms["pretrain"].data.pretrain_size == 8 and arms["finetune"].data.pretrain_size == arms["scratch"].data.pretrain_size == 0


def test_imagewang_protocol_from_the_command_line(tiny, tmp_path):
    import os, subprocess, sys
    from pathlib import Path
    root, reg = tiny
    env = dict(os.environ, OMP_NUM_THREADS="1", REPRLAB_DATASETS=str(reg), REPRLAB_CACHE=str(root / "cache"))
    train_py = Path(__file__).resolve().parents[1] / "bin" / "s01-train.py"
    r = subprocess.run([sys.executable, str(train_py), "--protocol=imagewang", "--task=rotation", "--name=iw", "--budget_s=4",
                        "--finetune_s=1.5", "--threads=1", "--knn_k=3", "--data.dataset=tiny", "--data.size=16",
                        "--data.batch_size=8", "--data.num_workers=0", "--quiet"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "iw"
    p = json.loads((run / "protocol.json").read_text())
    assert sorted(p["arms"]) == ["finetune", "pretrain", "scratch"] and "gain_points" in p
    for arm in ("pretrain", "finetune", "scratch"):
        assert (run / arm / "checkpoints" / "last.pt").exists() and p["arms"][arm]["epochs"] >= 1
        assert json.loads((run / arm / "config.json").read_text())["protocol"] == "none"   # each arm resumes on its own
    ft = json.loads((run / "finetune" / "config.json").read_text())
    assert ft["task"] == "supervised" and ft["init_encoder"].endswith("iw/pretrain/checkpoints/last.pt")
    assert ft["freeze_encoder_epochs"] == 2 and ft["encoder_lr_mult"] == 0.3
    assert (run / "protocol.png").stat().st_size > 0 and (run / "config.json").exists()
    bad = subprocess.run([sys.executable, str(train_py), "--protocol=imagewang", "--task=rotation", "--finetune_s=900", "--budget_s=60", "--quiet"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--finetune_s" in bad.stderr                # a usage error


def test_interrupted_protocol_resumes_exactly(tiny, tmp_path, monkeypatch):
    "Ctrl-C in the fine-tuning arm, then `--resume=runs/<name>`: same weights and accuracy as an uninterrupted protocol."
    import dataclasses
    import reprlab.experiments as E
    import reprlab.protocols as P
    from reprlab.learner import Callback
    root, reg = tiny
    monkeypatch.setenv("REPRLAB_DATASETS", str(reg)); monkeypatch.setenv("REPRLAB_CACHE", str(root / "cache"))
    monkeypatch.setattr(P, "epochs_for_budget", lambda cfg, budget, **kw: (8, 0.1))   # epochs free of timing noise
    base = TrainConfig(protocol="imagewang", task="rotation", runs_dir=tmp_path, quiet=True, threads=1, budget_s=4, finetune_s=2,
                       knn_k=3, data=DataConfig(dataset="tiny", size=16, batch_size=8, num_workers=0))
    ref = P.run_protocol(dataclasses.replace(base, name="ref"), argv=["test"])

    class CtrlC(Callback):
        order = 1000                                   # after the checkpoint of the epoch
        def after_epoch(self, learn):
            if learn.epoch == 1: raise KeyboardInterrupt
    real = E.build_callbacks
    monkeypatch.setattr(E, "build_callbacks", lambda cfg, run, data=None: real(cfg, run, data) + ([CtrlC()] if cfg.name == "finetune" else []))
    with pytest.raises(KeyboardInterrupt): P.run_protocol(dataclasses.replace(base, name="int"), argv=["test"])
    assert not (tmp_path / "int" / "scratch").exists() and (tmp_path / "int" / "finetune" / "checkpoints" / "last.pt").exists()
    monkeypatch.setattr(E, "build_callbacks", real)
    res = P.run_protocol(dataclasses.replace(base, name="", scratch=False, resume=tmp_path / "int"), argv=["test"])
    assert res["run_dir"] == str(tmp_path / "int") and sorted(res["arms"]) == ["finetune", "pretrain", "scratch"]   # the saved config wins
    for arm in ("pretrain", "finetune", "scratch"):
        assert res["arms"][arm]["epochs"] == 8 and res["arms"][arm]["accuracy"] == ref["arms"][arm]["accuracy"], arm
        a, b = (load_checkpoint(tmp_path / n / arm / "checkpoints" / "last.pt")["model"] for n in ("ref", "int"))
        assert all(torch.equal(a[k], b[k]) for k in a), arm
    starts = [l for l in (tmp_path / "int" / "pretrain" / "log.jsonl").read_text().splitlines() if '"start"' in l]
    assert len(starts) == 1                                                    # the finished arm was not trained again


def test_imix_trains_and_is_recorded(tiny, monkeypatch):
    from reprlab.config import ConfigError
    from reprlab.experiments import build_model
    root, reg = tiny
    monkeypatch.setenv("REPRLAB_DATASETS", str(reg)); monkeypatch.setenv("REPRLAB_CACHE", str(root / "cache"))
    cfg = TrainConfig(task="simclr", simclr=SimCLROptions(mix=1.0), name="imix", runs_dir=root / "runs", epochs=1, quiet=True, threads=1,
                      knn_k=3, data=DataConfig(dataset="tiny", size=16, batch_size=8, num_workers=0))
    s = train(cfg, argv=["test"])
    assert s["final"]["train_loss"] == s["final"]["train_loss"] and 0 <= s["final"]["knn_accuracy"] <= 1
    assert load_model(root / "runs" / "imix" / "checkpoints" / "last.pt").mix_alpha == 1.0   # rebuilt with i-Mix on
    from reprlab.experiments import check_config
    with pytest.raises(ConfigError, match="--simclr.mix=1.0 applies to 2 views .--simclr.n_local=0., got --simclr.n_local=2"):
        check_config(TrainConfig(task="simclr", simclr=SimCLROptions(mix=1.0, n_local=2)))
    with pytest.raises(ConfigError, match="--simclr.mix: expected a value >= 0, got -0.5"):
        check_config(TrainConfig(task="simclr", simclr=SimCLROptions(mix=-0.5)))
    with pytest.raises(ConfigError, match="--nnclr.queue: expected a value >= 1, got 0"):
        check_config(TrainConfig(task="nnclr", nnclr=NNCLROptions(queue=0)))


@pytest.mark.parametrize("task,extra", [("nnclr", {}), ("simclr", {"simclr": SimCLROptions(mix=1.0)})])
def test_nnclr_and_imix_resume_exactly(task, extra, tiny, tmp_path, monkeypatch):
    "Ctrl-C after epoch 1 of 3, then --resume: the same weights, queue and queue pointer as an uninterrupted run."
    import dataclasses
    import reprlab.experiments as E
    from reprlab.learner import Callback
    root, reg = tiny
    monkeypatch.setenv("REPRLAB_DATASETS", str(reg)); monkeypatch.setenv("REPRLAB_CACHE", str(root / "cache"))
    base = TrainConfig(task=task, runs_dir=tmp_path, epochs=3, quiet=True, threads=1, knn_k=3, **extra,
                       data=DataConfig(dataset="tiny", size=16, batch_size=8, num_workers=0))
    train(dataclasses.replace(base, name="ref"), argv=["test"])

    class CtrlC(Callback):
        order = 1000
        def after_epoch(self, learn):
            if learn.epoch == 1: raise KeyboardInterrupt
    real = E.build_callbacks
    monkeypatch.setattr(E, "build_callbacks", lambda cfg, run, data=None: real(cfg, run, data) + [CtrlC()])
    with pytest.raises(KeyboardInterrupt): train(dataclasses.replace(base, name="int"), argv=["test"])
    monkeypatch.setattr(E, "build_callbacks", real)
    train(dataclasses.replace(base, name="int", resume=tmp_path / "int" / "checkpoints" / "last.pt"), argv=["test"])
    a, b = (load_checkpoint(tmp_path / n / "checkpoints" / "last.pt")["model"] for n in ("ref", "int"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if task == "nnclr": assert int(a["queue_ptr"]) == 3 * 48      # 24 unsup + 24 train images, 3 epochs, all enqueued
