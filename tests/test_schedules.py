"""Schedules against DINO's formula and PyTorch's schedulers; ScheduleCB on groups / attributes / resume; the LR finder."""
from functools import partial
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from reprlab.callbacks import FreezeCB, GradAccumCB
from reprlab.learner import Callback, CancelFitException, Learner
from reprlab.optim import create_optimizer
from reprlab.schedules import ScheduleCB, cosine_schedule, lr_find, one_cycle_schedule, step_schedule


def dino_cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    "facebookresearch/dino utils.cosine_scheduler, verbatim."
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


def torch_lrs(make, n):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sch, out = make(opt), []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"]); opt.step(); sch.step()
    return np.array(out)


@pytest.mark.parametrize("args", [(0.5, 1e-6, 10, 7, 2, 1e-4), (1.0, 0.0, 3, 1, 0, 0), (0.04, 0.4, 5, 3, 0, 0),
                                  (0.996, 1.0, 4, 9, 1, 0.5), (2.0, 0.1, 1, 13, 0, 0)])
def test_cosine_is_dinos(args):
    np.testing.assert_array_equal(cosine_schedule(*args), dino_cosine_scheduler(*args))


def test_cosine_all_warmup_and_errors():
    np.testing.assert_allclose(cosine_schedule(1.0, 0.0, 2, 3, warmup_epochs=2), np.linspace(0, 1, 6))
    with pytest.warns(RuntimeWarning, match="longer than the run"):      # a short run: cut to the run, not an error
        np.testing.assert_allclose(cosine_schedule(1, 0, 2, 3, warmup_epochs=3), np.linspace(0, 1, 6))
    with pytest.raises(ValueError, match="warmup_epochs"): cosine_schedule(1, 0, 2, 3, warmup_epochs=-1)
    with pytest.raises(ValueError, match="epochs must be a positive integer"): cosine_schedule(1, 0, 0, 3)
    with pytest.raises(ValueError, match="iters_per_epoch"): cosine_schedule(1, 0, 2, 2.5)


@pytest.mark.parametrize("milestones,gamma", [([2, 4], 0.1), ([4, 1], 0.5), ([0], 0.3), ([9], 0.1), ([2, 2], 0.5)])
def test_step_schedule_matches_multisteplr(milestones, gamma):
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones, gamma=gamma), 6)
    np.testing.assert_allclose(step_schedule(1.0, milestones, gamma, 6, 3), np.repeat(ref, 3), rtol=1e-12)


@pytest.mark.parametrize("epochs,iters,pct,div,final_div", [(4, 5, 0.3, 25, 1e4), (3, 17, 0.25, 25, 1e4),
                                                            (10, 10, 0.1, 10, 100), (2, 50, 0.5, 5, 1e3)])
def test_one_cycle_matches_onecyclelr(epochs, iters, pct, div, final_div):
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 0.3, total_steps=epochs * iters, pct_start=pct,
                                                                  div_factor=div, final_div_factor=final_div), epochs * iters)
    np.testing.assert_allclose(one_cycle_schedule(0.3, epochs, iters, pct, div, final_div), ref, rtol=1e-12, atol=1e-15)
    s = one_cycle_schedule(0.3, epochs, iters, pct, div, final_div)
    assert 0.299 < s.max() <= 0.3 and s[0] == pytest.approx(0.3 / div) and s[-1] == pytest.approx(0.3 / div / final_div)


# --------------------------------------------------------------------------- ScheduleCB
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 1)
        self.teacher_momentum = 0.0
        self.register_buffer("tau", torch.zeros(()))

    def forward(self, x): return self.head(self.encoder(x))


class Spy(Callback):
    def __init__(self, fn): self.fn, self.seen = fn, []
    def after_step(self, learn): self.seen.append(self.fn(learn))


def _dls(n_batches=5, bs=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_batches * bs, 4, generator=g); y = x.sum(1, keepdim=True)
    return SimpleNamespace(train=[(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)], valid=None, device="cpu")


def _learner(cbs, dls=None, opt=None):
    learn = Learner(Net(), dls or _dls(), loss_func=nn.functional.mse_loss, lr=0.01, cbs=cbs)
    if opt is not None: learn.opt = opt(learn.model)     # groups from the model (no Learner change needed for the test)
    return learn


def test_lr_schedule_with_lr_mult_groups_and_log():
    spy = Spy(lambda l: {g["name"]: g["lr"] for g in l.opt.param_groups})
    learn = _learner([ScheduleCB("lr", partial(cosine_schedule, 0.1, 0.0, warmup_epochs=1)), spy],
                     opt=lambda m: create_optimizer("sgd", m, 0.01, weight_decay=1e-4, lr_mults={"encoder": 0.1}))
    learn.fit(3)
    exp = cosine_schedule(0.1, 0.0, 3, 5, warmup_epochs=1)
    got = {k: np.array([s[k] for s in spy.seen]) for k in spy.seen[0]}
    np.testing.assert_allclose(got["decay"], exp, rtol=1e-12); np.testing.assert_allclose(got["no_decay"], exp, rtol=1e-12)
    np.testing.assert_allclose(got["encoder.decay"], 0.1 * exp, rtol=1e-12)
    np.testing.assert_allclose(got["encoder.no_decay"], 0.1 * exp, rtol=1e-12)
    assert [h["lr"] for h in learn.history] == pytest.approx(exp[[4, 9, 14]].tolist())
    assert all(isinstance(g["lr"], float) for g in learn.opt.param_groups)    # plain floats: weights_only checkpoints load


def test_weight_decay_schedule_leaves_no_decay_groups_at_zero():
    spy = Spy(lambda l: {g["name"]: g["weight_decay"] for g in l.opt.param_groups})
    learn = _learner([ScheduleCB("weight_decay", partial(cosine_schedule, 0.04, 0.4)), spy],
                     opt=lambda m: create_optimizer("adamw", m, 1e-3, weight_decay=0.04))
    learn.fit(2)
    np.testing.assert_allclose([s["decay"] for s in spy.seen], cosine_schedule(0.04, 0.4, 2, 5), rtol=1e-12)
    assert all(s["no_decay"] == 0.0 for s in spy.seen)


def test_attribute_paths_learner_model_and_buffer():
    spy = Spy(lambda l: (l.teacher_momentum, l.model.teacher_momentum, float(l.model.tau)))
    mom = partial(cosine_schedule, 0.99, 1.0)
    learn = _learner([ScheduleCB("teacher_momentum", mom), ScheduleCB("model.teacher_momentum", mom),
                      ScheduleCB("model.tau", mom), spy])
    learn.teacher_momentum = 0.5                          # a learner attribute must exist before it is scheduled
    learn.fit(2)
    seen = np.array(spy.seen)
    np.testing.assert_allclose(seen[:, 0], dino_cosine_scheduler(0.99, 1.0, 2, 5), rtol=1e-12)
    np.testing.assert_allclose(seen[:, 1], seen[:, 0], rtol=1e-12)
    np.testing.assert_allclose(seen[:, 2], seen[:, 0], rtol=1e-6)
    assert learn.model.tau.dtype == torch.float32 and "tau" in dict(learn.model.named_buffers())
    assert learn.history[-1]["model.tau"] == pytest.approx(seen[-1, 0])
    assert learn.teacher_momentum_sched.state_dict() == {}


def test_resume_is_exact_from_the_step_alone():
    sched = partial(one_cycle_schedule, 0.1)
    full, a_spy, b_spy = (Spy(lambda l: l.opt.param_groups[0]["lr"]) for _ in range(3))
    _learner([ScheduleCB("lr", sched), full]).fit(4)

    class StopAfter(Callback):
        def after_epoch(self, learn):
            if learn.epoch == 1: raise CancelFitException()
    a = _learner([ScheduleCB("lr", sched), a_spy]); a.fit(4, cbs=[StopAfter()])
    b = _learner([ScheduleCB("lr", sched), b_spy])
    b.step, b.start_epoch = a.step, 2
    b.fit(4)
    assert len(a_spy.seen) == 10 and a_spy.seen + b_spy.seen == full.seen


def test_grad_accumulation_counts_optimizer_steps():
    spy = Spy(lambda l: l.opt.param_groups[0]["lr"])
    learn = _learner([ScheduleCB("lr", partial(step_schedule, 1.0, [1], 0.1)), GradAccumCB(2), spy])
    learn.fit(2)                                          # 5 batches -> 3 steps per epoch
    assert learn.step == 6 and spy.seen == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1])


def test_schedule_errors():
    with pytest.raises(ValueError, match="has 9 values but this fit needs 10 \\(2 epochs x 5 steps\\)"):
        _learner([ScheduleCB("lr", np.full(9, 0.1))]).fit(2)
    with pytest.raises(ValueError, match="step 4 is past the end of the schedule \\(4 values\\)"):
        _learner([ScheduleCB("lr", np.full(4, 0.1), steps_per_epoch=4)]).fit(1)
    with pytest.raises(AttributeError, match="learn.model.enc does not exist"):
        _learner([ScheduleCB("model.enc.momentum", np.full(5, 0.1))]).fit(1)
    with pytest.raises(AttributeError, match="neither a key of the optimiser's param groups"):
        _learner([ScheduleCB("teacher_momentum", np.full(5, 0.1))]).fit(1)
    with pytest.raises(ValueError, match="1-D"): ScheduleCB("lr", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="non-empty"): ScheduleCB("lr", [])


# --------------------------------------------------------------------------- lr_find
def _state(learn):
    return ({k: v.clone() for k, v in learn.model.state_dict().items()},
            {i: {k: v.clone() for k, v in s.items()} for i, s in learn.opt.state_dict()["state"].items()},
            [dict((k, v) for k, v in g.items() if k != "params") for g in learn.opt.param_groups])


def test_lr_find_restores_everything(tmp_path):
    sched = ScheduleCB("lr", partial(cosine_schedule, 0.05, 0.0))
    freeze = FreezeCB("encoder", epochs=1)
    learn = Learner(Net(), _dls(), loss_func=nn.functional.mse_loss, lr=0.01,
                    opt_func=partial(torch.optim.SGD, momentum=0.9), cbs=[sched, freeze])
    learn.fit(1)
    w, st, groups = _state(learn)
    hist, step, cbs = [dict(h) for h in learn.history], learn.step, list(learn.cbs)
    torch.manual_seed(123); expected_draw = torch.rand(3); torch.manual_seed(123)
    res = lr_find(learn, num_it=30, path=tmp_path / "lr.png")
    assert torch.equal(torch.rand(3), expected_draw)                  # RNG state put back
    w2, st2, groups2 = _state(learn)
    for k in w: assert torch.equal(w[k], w2[k]), k
    for i in st: assert torch.equal(st[i]["momentum_buffer"], st2[i]["momentum_buffer"])
    assert groups == groups2 and learn.history == hist and learn.step == step and learn.cbs == cbs
    assert all(p.grad is None and p.requires_grad for p in learn.model.parameters())
    assert set(res) >= {"lrs", "losses", "suggestion", "lr_min"} and len(res["lrs"]) == len(res["losses"])
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG" and plt.get_fignums() == []


def test_lr_find_sweep_stop_div_and_fresh_learner():
    learn = Learner(Net(), _dls(), loss_func=nn.functional.mse_loss, opt_func=partial(torch.optim.SGD, momentum=0.9))
    w = {k: v.clone() for k, v in learn.model.state_dict().items()}
    res = lr_find(learn, start_lr=1e-4, end_lr=1e4, num_it=40)
    assert learn.opt is None and learn.step == 0 and learn.history == []
    assert all(torch.equal(v, w[k]) for k, v in learn.model.state_dict().items())
    n = len(res["lrs"])
    assert n < 40 and res["losses"][-1] > 4 * np.nanmin(res["losses"]) or not np.isfinite(res["losses"][-1])
    np.testing.assert_allclose(res["lrs"], 1e-4 * (1e8) ** (np.arange(n) / 39), rtol=1e-12)
    assert res["lrs"][0] <= res["suggestion"] <= res["lrs"][-1]
    full = lr_find(learn, start_lr=1e-6, end_lr=1e-3, num_it=12, stop_div=False)   # spans 3 epochs of 5 batches
    assert len(full["lrs"]) == 12 and full["lrs"][-1] == pytest.approx(1e-3)


def test_lr_find_errors():
    learn = Learner(Net(), _dls(), loss_func=nn.functional.mse_loss)
    with pytest.raises(ValueError, match="start_lr < end_lr"): lr_find(learn, start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="num_it"): lr_find(learn, num_it=1)
