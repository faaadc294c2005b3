"""Monitors: early stopping (exact patience, resume), checkpoints (files, best, exact resume incl. Ctrl-C, atomic
writes under SIGKILL), gradient and activation statistics."""
import math
import multiprocessing as mp
import os
import random
import signal
import time
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from reprlab.callbacks import GradAccumCB
from reprlab.checkpoint import create_model, load_checkpoint, load_model, register_model, save_checkpoint
from reprlab.data import cache, from_folder
from reprlab.learner import Callback, CancelFitException, Learner
from reprlab.loaders import make_loaders
from reprlab.monitors import (ACT_STATS, ActivationStatsCB, CheckpointCB, EarlyStoppingCB, GradStatsCB, Improvement,
                              MonitorKeyError, activation_stats, resume)
from reprlab.testing import make_image_folder


# ---------------------------------------------------------------- toy problems
def toy_dls(valid=True):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, generator=g); y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
    train = [(x[i:i + 12], y[i:i + 12, None]) for i in range(0, 48, 12)]
    return SimpleNamespace(train=train, valid=[(x, y[:, None])] if valid else None, device="cpu")


def lin():
    torch.manual_seed(1)
    return nn.Linear(3, 1)


def toy_learner(cbs=(), valid=True):
    return Learner(lin(), toy_dls(valid), loss_func=F.mse_loss, lr=0.05, cbs=cbs)


class Fake(Callback):
    "Writes a prescribed value of `key` into the epoch log (before the monitors read it)."
    order = 50
    def __init__(self, vals, key="valid_loss"): self.vals, self.key = vals, key
    def after_epoch(self, learn): learn.log[self.key] = self.vals[learn.epoch]


class Snap(Callback):
    "Copies of the weights after every epoch (after the checkpoint was written)."
    order = 85
    def __init__(self): self.w = {}
    def after_epoch(self, learn): self.w[learn.epoch] = {k: v.clone() for k, v in learn.model.state_dict().items()}


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- Improvement / early stopping
def test_improvement_min_max_delta_nan():
    imp = Improvement("valid_loss", "min", 0.1)
    assert [imp.update(v, i) for i, v in enumerate([1.0, 0.95, 0.9, 0.85, math.nan, 0.7])] == [True, False, False, True, False, True]
    assert (imp.best, imp.best_epoch) == (0.7, 5)
    imp = Improvement("acc", "max")
    assert [imp.update(v, i) for i, v in enumerate([math.nan, 0.5, 0.5, 0.51])] == [False, True, False, True]
    with pytest.raises(ValueError, match="'min' or 'max'"): Improvement(mode="up")
    with pytest.raises(ValueError, match="min_delta"): Improvement(min_delta=-1)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_early_stopping_patience_is_exact(mode):
    vals = [1.0, 0.9, 0.95, 0.96, 0.5, 0.4]
    sign = 1 if mode == "min" else -1
    es = EarlyStoppingCB("score", mode=mode, patience=2)
    learn = toy_learner([Fake([sign * v for v in vals], "score"), es])
    learn.fit(6)
    assert [h["epoch"] for h in learn.history] == [0, 1, 2, 3]          # stopped after the 4th epoch (index 3)
    assert es.stopped_epoch == 3 and es.best == sign * 0.9 and es.best_epoch == 1 and es.wait == 2


def test_early_stopping_min_delta_and_no_stop():
    es = EarlyStoppingCB(patience=2, min_delta=0.1)
    toy_learner([Fake([1.0, 0.95, 0.92, 0.5]), es]).fit(4)
    assert es.stopped_epoch == 2 and es.best == 1.0                      # 0.95 and 0.92 are not better by > 0.1
    es = EarlyStoppingCB(patience=2)
    learn = toy_learner([Fake([1.0, 0.9, 0.95, 0.8]), es]); learn.fit(4)
    assert es.stopped_epoch is None and len(learn.history) == 4


def test_early_stopping_unknown_monitor_lists_keys():
    with pytest.raises(MonitorKeyError, match=r"'valid_acc' is not in the epoch log.*\['epoch', 'train_loss', 'valid_loss'\]"):
        toy_learner([EarlyStoppingCB("valid_acc")]).fit(1)
    with pytest.raises(KeyError, match="valid_loss"):                     # no validation set: no valid_loss
        toy_learner([EarlyStoppingCB()], valid=False).fit(1)
    with pytest.raises(ValueError, match="patience"): EarlyStoppingCB(patience=0)


def test_early_stopping_state_roundtrip():
    es = EarlyStoppingCB(patience=3)
    toy_learner([Fake([1.0, 0.9, 0.95]), es]).fit(3)
    es2 = EarlyStoppingCB(patience=3); es2.load_state_dict(es.state_dict())
    assert es2.state_dict() == es.state_dict() == dict(best=0.9, best_epoch=1, wait=1, last_epoch=2, stopped_epoch=None)


@pytest.mark.parametrize("cut", [1, 3, 4])   # resume after epoch 1, 3, and after the stopping epoch itself
def test_early_stopping_resume_stops_at_same_epoch(tmp_path, cut):
    vals = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.4, 0.3]
    ref_es = EarlyStoppingCB(patience=3)
    ref = toy_learner([Fake(vals), ref_es]); ref.fit(8)
    assert ref_es.stopped_epoch == 4 and len(ref.history) == 5
    first = toy_learner([Fake(vals), EarlyStoppingCB(patience=3), CheckpointCB(tmp_path)])
    first.fit(cut + 1)
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["epoch"] == cut + 1
    es = EarlyStoppingCB(patience=3)
    learn = toy_learner([Fake(vals), es, CheckpointCB(tmp_path)])
    resume(learn, tmp_path)
    learn.fit(8)
    assert es.stopped_epoch == 4 and (es.best, es.best_epoch) == (0.9, 1)
    assert [h["epoch"] for h in learn.history] == [0, 1, 2, 3, 4]
    assert same_weights(learn.model, ref.model) and learn.step == ref.step


def test_early_stopping_fresh_fit_resets():
    es = EarlyStoppingCB(patience=1)
    learn = toy_learner([Fake([1.0, 2.0, 3.0]), es])
    learn.fit(3); assert es.stopped_epoch == 1
    learn.fit(1); assert es.stopped_epoch is None and es.best == 1.0   # a new fit starts counting again


# ---------------------------------------------------------------- checkpoint files
@register_model
def monitors_tiny(d_in=3, n_out=1):
    return nn.Sequential(nn.Linear(d_in, 4), nn.ReLU(), nn.Linear(4, n_out))


def test_checkpoint_files_contents_and_model_rebuild(tmp_path):
    cfg = {"lr": 0.05, "model": {"name": "monitors_tiny"}}
    snap = Snap()
    torch.manual_seed(0)
    learn = Learner(create_model("monitors_tiny"), toy_dls(), loss_func=F.mse_loss, lr=0.05,
                    cbs=[Fake([1.0, 0.4, 0.6, 0.3, 0.5]), CheckpointCB(tmp_path, keep=3, config=cfg), EarlyStoppingCB(patience=5), snap])
    learn.fit(5)
    d = tmp_path / "checkpoints"
    assert sorted(p.name for p in d.iterdir()) == ["best.pt", "epoch-0003.pt", "epoch-0004.pt", "epoch-0005.pt", "last.pt"]
    last, best, e3 = (load_checkpoint(d / n) for n in ("last.pt", "best.pt", "epoch-0003.pt"))
    assert (last["epoch"], last["batch"], last["step"], len(last["history"])) == (5, 0, 20, 5)
    assert last["config"] == cfg and last["version"] and last["model_spec"]["name"] == "monitors_tiny"
    assert set(last["cbs"]) == {"checkpoint", "early_stopping"}
    assert last["cbs"]["checkpoint"]["best"] == 0.3 and last["cbs"]["checkpoint"]["saved"] == ["epoch-0003.pt", "epoch-0004.pt", "epoch-0005.pt"]
    assert best["epoch"] == 4 and e3["epoch"] == 3
    assert all(torch.equal(best["model"][k], snap.w[3][k]) for k in snap.w[3])
    assert all(torch.equal(e3["model"][k], snap.w[2][k]) for k in snap.w[2])
    assert same_weights(load_model(d / "last.pt"), learn.model)            # evaluation rebuilds the model alone
    assert not [p for p in d.iterdir() if p.name.startswith(".")]           # no temp files left


def test_checkpoint_every_and_no_monitor(tmp_path):
    class Seen(Callback):
        order = 85
        def __init__(self): self.epochs = []
        def after_epoch(self, learn):
            p = tmp_path / "checkpoints/last.pt"
            self.epochs.append(load_checkpoint(p)["epoch"] if p.exists() else None)
    seen = Seen()
    toy_learner([CheckpointCB(tmp_path, monitor=None, every=2, background=False), seen], valid=False).fit(5)
    assert seen.epochs == [None, 2, 2, 4, 5]                                # every 2 epochs, and after the last
    assert not (tmp_path / "checkpoints/best.pt").exists()
    with pytest.raises(ValueError, match="keep"): CheckpointCB(tmp_path, keep=0)
    with pytest.raises(ValueError, match="monitor"): CheckpointCB(tmp_path, monitor=None, restore_best=True)


def test_checkpoint_unknown_monitor(tmp_path):
    with pytest.raises(MonitorKeyError, match="CheckpointCB: 'acc' is not in the epoch log"):
        toy_learner([CheckpointCB(tmp_path, monitor="acc")]).fit(1)


@pytest.mark.parametrize("stop_early", [False, True])
def test_restore_best(tmp_path, stop_early):
    snap = Snap()
    cbs = [Fake([1.0, 0.2, 0.5, 0.9]), CheckpointCB(tmp_path, restore_best=True), snap]
    if stop_early: cbs.append(EarlyStoppingCB(patience=2))
    learn = toy_learner(cbs)
    learn.fit(4)
    assert len(learn.history) == (4 if not stop_early else 4)
    assert all(torch.equal(v, snap.w[1][k]) for k, v in learn.model.state_dict().items())
    assert not torch.equal(snap.w[3]["weight"], snap.w[1]["weight"])


def test_only_rank0_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    toy_learner([CheckpointCB(tmp_path, keep=2)]).fit(2)
    assert not (tmp_path / "checkpoints").exists()


# ---------------------------------------------------------------- exact resume on images
@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("mon") / "f", classes=("a", "b"), n=10, size=8)
    return cache(from_folder(root))


def jitter(x, gen):
    return x + 0.1 * torch.randn(x.shape, generator=gen)


def img_learner(ds, cbs=(), num_workers=0):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(6, 2))
    dls = make_loaders(ds, ds, batch_size=4, transform=jitter, seed=0, num_workers=num_workers, device="cpu")
    return Learner(net, dls, loss_func=F.cross_entropy, lr=0.01, cbs=cbs)


_REF = {}
def reference(ds, num_workers=0):
    "The uninterrupted 4-epoch run (5 training batches per epoch), computed once per num_workers."
    if num_workers not in _REF:
        learn = img_learner(ds, num_workers=num_workers); learn.fit(4)
        _REF[num_workers] = learn
    return _REF[num_workers]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_exact_resume_after_epoch(ds, tmp_path, num_workers):
    ref = reference(ds, 0)                                   # num_workers never changes the numbers
    learners = []
    try:
        first = img_learner(ds, [CheckpointCB(tmp_path)], num_workers); learners.append(first)
        first.fit(2)
        assert not same_weights(first.model, ref.model)
        learn = img_learner(ds, [CheckpointCB(tmp_path)], num_workers); learners.append(learn)
        ckpt = resume(learn, tmp_path / "checkpoints/last.pt")
        assert (ckpt["epoch"], ckpt["batch"], learn.start_epoch) == (2, 0, 2)
        learn.fit(4)
        assert same_weights(learn.model, ref.model), "resumed run differs from the uninterrupted one"
        assert learn.step == ref.step == 20
        assert [h["epoch"] for h in learn.history] == [0, 1, 2, 3]
        assert learn.history[-1]["valid_loss"] == ref.history[-1]["valid_loss"]
    finally:
        for l in learners: close_workers(l)


def test_exact_resume_after_cancel_fit(ds, tmp_path):
    class StopAfter1(Callback):
        order = 95                                           # after CheckpointCB wrote last.pt
        def after_epoch(self, learn):
            if learn.epoch == 1: raise CancelFitException()
    first = img_learner(ds, [CheckpointCB(tmp_path), StopAfter1()])
    first.fit(4)
    assert len(first.history) == 2
    learn = img_learner(ds, [CheckpointCB(tmp_path)])
    learn.fit(4, resume=tmp_path / "checkpoints/last.pt")
    assert same_weights(learn.model, reference(ds).model)


def close_workers(learn):
    "Shut the Loaders' persistent workers down now: left to the garbage collector (the Loader and its sampler form a "
    "reference cycle) each DataLoader waits 5 s per worker for a shutdown message that never arrives."
    for dl in (learn.dls.train, learn.dls.valid):
        it = getattr(getattr(dl, "_dl", None), "_iterator", None)
        if it is not None: it._shutdown_workers()
        dl._dl = None


def test_checkpoint_does_not_change_training(ds, tmp_path):
    learn = img_learner(ds, [CheckpointCB(tmp_path, keep=2)]); learn.fit(4)
    assert same_weights(learn.model, reference(ds).model)


class Interrupt(Callback):
    "Raises KeyboardInterrupt at `event` of training batch `it` of epoch `epoch` (or at an epoch-level event)."
    def __init__(self, event, epoch=1, it=2, order=0):
        self.epoch, self.it, self.order = epoch, it, order
        setattr(self, event, self._fire)
    def _fire(self, learn):
        if learn.epoch == self.epoch and (self.it is None or (learn.training and learn.iter == self.it)):
            raise KeyboardInterrupt


@pytest.mark.parametrize("event,order,epoch,batch", [
    ("before_batch", 0, 1, 2),       # batch 2 not started
    ("after_pred", 0, 1, 2),         # dropout drawn, BN statistics updated: rolled back
    ("after_loss", 90, 1, 2),
    ("after_backward", 0, 1, 2),
    ("after_step", 0, 1, 3),         # the optimiser step of batch 2 happened: it counts as done
    ("after_batch", 0, 1, 3),        # (order 0: before CheckpointCB's after_batch)
    ("after_batch", 95, 1, 3),       # (after it)
])
def test_ctrl_c_mid_epoch_resumes_exactly(ds, tmp_path, capsys, event, order, epoch, batch):
    ref = reference(ds)
    learn = img_learner(ds, [CheckpointCB(tmp_path), Interrupt(event, order=order)])
    with pytest.raises(KeyboardInterrupt): learn.fit(4)
    assert learn.interrupted
    ck = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert (ck["epoch"], ck["batch"], ck["step"]) == (epoch, batch, 5 * epoch + batch)
    assert [h["epoch"] for h in ck["history"]] == [0]                      # the partial epoch is not in the history
    out = capsys.readouterr().out
    assert f"epoch {epoch} before training batch {batch}" in out and "resume=" in out
    again = img_learner(ds)
    again.fit(4, resume=tmp_path / "checkpoints/last.pt")
    assert same_weights(again.model, ref.model)
    assert again.step == ref.step and [h["epoch"] for h in again.history] == [0, 1, 2, 3]


@pytest.mark.parametrize("event,epoch,batch", [
    ("before_validate", 1, 5),       # training pass of epoch 1 done: resume only validates it
    ("before_epoch", 2, 0),          # last.pt of epoch 1's end is kept as it is
])
def test_ctrl_c_between_passes(ds, tmp_path, event, epoch, batch):
    ref = reference(ds)
    learn = img_learner(ds, [CheckpointCB(tmp_path), Interrupt(event, epoch=epoch, it=None)])
    with pytest.raises(KeyboardInterrupt): learn.fit(4)
    ck = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert (ck["epoch"], ck["batch"], ck["step"]) == (epoch, batch, 5 * epoch + batch)
    again = img_learner(ds)
    again.fit(4, resume=tmp_path / "checkpoints/last.pt")
    assert same_weights(again.model, ref.model)


# ---------------------------------------------------------------- atomic writes under SIGKILL
def _writer(path, n, counter, i):
    torch.set_num_threads(1)
    x = torch.empty(n)
    while True:
        i += 1
        x.fill_(float(i))
        save_checkpoint({"i": i, "x": x}, path)
        counter.value = i


def test_sigkill_mid_write_never_corrupts_last(tmp_path):
    ctx = mp.get_context("fork")
    path = tmp_path / "checkpoints" / "last.pt"
    rng = random.Random(0)
    tmp_seen, last_i = 0, 0
    for _ in range(5):
        counter = ctx.Value("i", 0, lock=False)   # no lock: a SIGKILL while the child held it would hang the reads below
        p = ctx.Process(target=_writer, args=(path, 4_000_000, counter, last_i), daemon=True)   # 16 MB per checkpoint
        p.start()
        t0 = time.time()
        while counter.value <= last_i and time.time() - t0 < 30: time.sleep(0.005)
        assert counter.value > last_i, "writer never finished a checkpoint"
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(p.pid, signal.SIGKILL); p.join()
        assert p.exitcode == -signal.SIGKILL
        ck = load_checkpoint(path)                                          # the previous checkpoint, whole
        assert ck["i"] >= counter.value > last_i                            # at least the last completed one
        assert torch.equal(ck["x"], torch.full((4_000_000,), float(ck["i"])))
        last_i = ck["i"]
        others = [q.name for q in path.parent.iterdir() if q.name != "last.pt"]
        assert all(n.startswith(".last.pt.") and n.endswith(".tmp") for n in others), others
        tmp_seen += bool(others)
        for q in path.parent.iterdir():
            if q.name != "last.pt": q.unlink()
    assert tmp_seen >= 1, "no kill landed mid-write; the test did not test anything"


# ---------------------------------------------------------------- gradient statistics
def test_grad_stats_match_autograd_and_plot(tmp_path):
    x = torch.randn(24, 3, generator=torch.Generator().manual_seed(2)); y = x.sum(1, keepdim=True)
    one = SimpleNamespace(train=[(x, y)], valid=None)
    gs = GradStatsCB(tmp_path)
    learn = Learner(lin(), one, loss_func=F.mse_loss, opt_func=torch.optim.SGD, lr=0.1, cbs=[gs])
    m = lin(); F.mse_loss(m(x), y).backward()
    learn.fit(2)
    e0 = gs.epochs[0]
    assert e0["steps"] == 1 and e0["nonfinite"] == {} and list(e0["mean"]) == ["weight", "bias"]
    assert math.isclose(e0["mean"]["weight"], m.weight.grad.abs().mean().item(), rel_tol=1e-6)
    assert math.isclose(e0["std"]["weight"], m.weight.grad.abs().std(correction=0).item(), rel_tol=1e-5)
    assert "grad_nonfinite" not in learn.history[0]
    assert (tmp_path / "grad_stats.png").read_bytes()[:4] == b"\x89PNG"


def test_grad_stats_every_accumulation_and_frozen():
    learn = toy_learner([GradAccumCB(2), gs := GradStatsCB(every=1)])
    learn.model.bias.requires_grad_(False)
    learn.fit(1)
    assert gs.epochs[0]["steps"] == 2 and list(gs.epochs[0]["mean"]) == ["weight"]   # 4 batches, 2 steps; bias frozen
    learn = toy_learner([gs := GradStatsCB(every=2)]); learn.fit(2)
    assert [e["steps"] for e in gs.epochs] == [2, 2]


def test_grad_stats_flags_nonfinite():
    class Poison(Callback):
        order = 22
        def after_backward(self, learn):
            if learn.iter == 1: learn.model.weight.grad[0, 0] = float("inf")
    class SkipBad(Callback):                       # what an AMP scaler does: no step on a non-finite gradient
        order = 30
        def after_backward(self, learn):
            if learn.iter == 1: learn.skip_step = True; learn.zero_grad()
    gs = GradStatsCB()
    learn = toy_learner([gs, Poison(), SkipBad()])
    with pytest.warns(RuntimeWarning, match="non-finite gradients in epoch 0.*weight"): learn.fit(1)
    assert learn.history[0]["grad_nonfinite"] == ["weight"]
    assert gs.epochs[0]["nonfinite"] == {"weight": 1} and math.isfinite(gs.epochs[0]["mean"]["weight"])


# ---------------------------------------------------------------- activation statistics
def test_activation_stats_function_against_references():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, 5, 5, generator=g).relu()
    x[:, 2] = 0                                                             # channel 2 dead
    s = dict(zip(ACT_STATS, activation_stats(x, saturation=1.5).tolist()))
    assert math.isclose(s["mean"], x.mean().item(), rel_tol=1e-6) and math.isclose(s["std"], x.std(correction=0).item(), rel_tol=1e-5)
    for k, q in (("q05", 0.05), ("q50", 0.5), ("q95", 0.95)): assert math.isclose(s[k], torch.quantile(x.flatten(), q).item(), abs_tol=1e-6)
    assert math.isclose(s["zeros"], (x == 0).float().mean().item()) and math.isclose(s["saturated"], (x >= 1.5).float().mean().item())
    assert s["dead"] == 0.25
    tok = torch.randn(2, 7, 8, generator=g); tok[..., :2] = -1               # (B, N, D): 2 of 8 features never > 0
    assert activation_stats(tok, unit_dim=-1)[7].item() == 0.25
    big = torch.randn(200_000, generator=g)
    idx = torch.randint(0, big.numel(), (4096,), generator=torch.Generator().manual_seed(1))
    assert abs(activation_stats(big, sample=idx)[4].item() - 1.645) < 0.1   # sampled 95% quantile of N(0, 1)


def dead_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad(): net[2].bias.fill_(-1e4); net[4].bias.fill_(5.0)
    return net


def test_activation_stats_reports_dead_layer_and_plots(tmp_path):
    net = dead_net()
    acts = ActivationStatsCB(path=tmp_path, every=2)
    learn = Learner(net, toy_dls(), loss_func=F.mse_loss, cbs=[acts])
    learn.fit(2)
    assert acts.names == ["0", "2", "4"] and acts.dead_layers(0.9) == ["2"]
    assert acts.stats["2"].shape == (4, len(ACT_STATS)) and acts.steps["2"] == [0, 2, 4, 6]   # batches 0 and 2 of 4, 2 epochs
    summ = acts.summary()
    assert summ["2"]["dead"] == 1.0 and summ["2"]["q95"] < -1000 and summ["2"]["saturated"] == 1.0
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    assert (tmp_path / "activation_stats.png").read_bytes()[:4] == b"\x89PNG"
    relu = ActivationStatsCB(modules=["3", net[1]])
    Learner(net, toy_dls(), loss_func=F.mse_loss, cbs=[relu]).fit(1)
    assert relu.names == ["3", "1"] and relu.summary()["3"]["zeros"] == 1.0 and relu.dead_layers(1.0) == ["3"]


def test_activation_stats_hooks_removed_after_error_and_bad_names():
    net = dead_net()
    class Boom(Callback):
        def after_batch(self, learn): raise RuntimeError("boom")
    acts = ActivationStatsCB()
    with pytest.raises(RuntimeError, match="boom"): Learner(net, toy_dls(), loss_func=F.mse_loss, cbs=[acts, Boom()]).fit(1)
    assert all(len(m._forward_hooks) == 0 for m in net.modules()) and acts.stats["0"].shape[0] == 1
    with pytest.raises(AttributeError, match="'encoder'"):
        Learner(net, toy_dls(), loss_func=F.mse_loss, cbs=[ActivationStatsCB(modules=["encoder"])]).fit(1)
    net(torch.zeros(2, 3))                                                  # not recording outside fit
    assert acts.stats["0"].shape[0] == 1


def test_monitors_together_do_not_change_training(ds, tmp_path):
    learn = img_learner(ds, [GradStatsCB(tmp_path), ActivationStatsCB(path=tmp_path), CheckpointCB(tmp_path)])
    learn.fit(4)
    assert same_weights(learn.model, reference(ds).model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert learn.grad_stats.epochs[-1]["nonfinite"] == {}


def test_background_writes_equal_foreground_writes(tmp_path):
    "The writer thread snapshots the state: the files equal those written synchronously, every name in place at the end."
    for mode in ("fg", "bg"):
        toy_learner([CheckpointCB(tmp_path / mode, keep=2, background=mode == "bg")]).fit(4)
    for name in ["last.pt", "best.pt", "epoch-0003.pt", "epoch-0004.pt"]:
        a, b = (load_checkpoint(tmp_path / m / "checkpoints" / name) for m in ("fg", "bg"))
        assert a["epoch"] == b["epoch"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
    assert not (tmp_path / "bg" / "checkpoints" / "epoch-0002.pt").exists()
