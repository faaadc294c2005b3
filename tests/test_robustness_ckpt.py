"""Issue 16, robust checkpoints: SIGTERM handled like Ctrl-C, stale temp files removed, a full disk reported at the
failing write with history.csv kept consistent with last.pt, exact train_loss after a mid-epoch resume, one-line
errors for unreadable checkpoints, schedules for runs of any length."""
from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import reprlab.checkpoint as rc
import reprlab.tracking as rt
from reprlab.checkpoint import (CheckpointDiskFullError, CheckpointError, defer_signals, load_checkpoint,
                                save_checkpoint)
from reprlab.core import DiskFullError, Terminated, atomic_write_text, clean_stale_temp, sigterm_as_interrupt
from reprlab.data import cache, from_folder
from reprlab.learner import Callback, Learner, accuracy
from reprlab.loaders import make_loaders
from reprlab.monitors import CheckpointCB, GradStatsCB
from reprlab.schedules import ScheduleCB, cosine_schedule, one_cycle_schedule
from reprlab.testing import make_image_folder
from reprlab.tracking import HistoryCB, JsonlLogCB, read_history_csv

POSIX = pytest.mark.skipif(os.name == "nt" or not hasattr(signal, "SIGTERM"), reason="POSIX signals")
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- small learners
def toy_dls():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, generator=g); y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
    return SimpleNamespace(train=[(x[i:i + 12], y[i:i + 12, None]) for i in range(0, 48, 12)], valid=[(x, y[:, None])],
                           device="cpu")


class Padded(nn.Module):
    "A linear model with a big buffer, so that its checkpoint has a known size (~4 bytes x `pad`)."
    def __init__(self, pad: int = 0):
        super().__init__()
        torch.manual_seed(1)
        self.lin = nn.Linear(3, 1)
        self.register_buffer("pad", torch.zeros(pad))
    def forward(self, x): return self.lin(x)


def toy_learner(cbs=(), pad=0):
    return Learner(Padded(pad), toy_dls(), loss_func=F.mse_loss, lr=0.05, cbs=cbs)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("robust") / "f", classes=("a", "b"), n=10, size=8)
    return cache(from_folder(root))


def jitter(x, gen): return x + 0.1 * torch.randn(x.shape, generator=gen)


def img_learner(ds, cbs=(), num_workers=0):
    "5 training batches per epoch; dropout, BatchNorm, augmentation, a one-cycle schedule: every source of randomness."
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(6, 2))
    dls = make_loaders(ds, ds, batch_size=4, transform=jitter, seed=0, num_workers=num_workers, device="cpu")
    sched = ScheduleCB("lr", partial(one_cycle_schedule, 0.02))
    return Learner(net, dls, loss_func=F.cross_entropy, lr=0.01, metrics=[accuracy], cbs=[sched, *cbs])


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Stop(Callback):
    "Raises `exc` at `event` of training batch `it` of epoch `epoch` (`it=None`: at an epoch-level event)."
    def __init__(self, event, epoch, it=None, order=0, exc=KeyboardInterrupt):
        self.epoch, self.it, self.order, self.exc = epoch, it, order, exc
        setattr(self, event, self._fire)
    def _fire(self, learn):
        if learn.epoch == self.epoch and (self.it is None or (learn.training and learn.iter == self.it)):
            if self.exc == "SIGTERM": os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)   # the handler raises Terminated
            raise self.exc


# ---------------------------------------------------------------- 1. SIGTERM is Ctrl-C
@POSIX
def test_sigterm_as_interrupt_raises_terminated_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as e:
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is not before
            os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)
    assert isinstance(e.value, KeyboardInterrupt) and "SIGTERM" in str(e.value)
    assert signal.getsignal(signal.SIGTERM) is before


@POSIX
def test_sigterm_during_a_write_is_delivered_after_it(tmp_path, monkeypatch):
    big = {"model": {"w": torch.randn(512, 512)}}
    real_save = torch.save
    def save_and_terminate(obj, f, *a, **kw):          # the signal arrives in the middle of torch.save
        os.kill(os.getpid(), signal.SIGTERM)
        return real_save(obj, f, *a, **kw)
    monkeypatch.setattr(torch, "save", save_and_terminate)
    with pytest.raises(Terminated):
        with sigterm_as_interrupt(): save_checkpoint(big, tmp_path / "c.pt")
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["model"]["w"], big["model"]["w"])   # complete file
    assert not list(tmp_path.glob(".*.tmp"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert rc.defer_sigint is defer_signals                                                    # the old name


@POSIX
@pytest.mark.parametrize("event,epoch,it,order", [("after_loss", 1, 2, 90), ("after_step", 2, 1, 0)])
def test_sigterm_mid_epoch_saves_last_pt_and_resumes_exactly(ds, tmp_path, capsys, event, epoch, it, order):
    ref = reference(ds)[0]
    learn = img_learner(ds, [CheckpointCB(tmp_path), Stop(event, epoch, it, order, exc="SIGTERM")])
    with pytest.raises(Terminated), sigterm_as_interrupt(): learn.fit(4)
    ck = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert (ck["epoch"], ck["batch"]) == (epoch, it + (event == "after_step"))
    assert "Terminated (SIGTERM) in epoch" in capsys.readouterr().out
    again = img_learner(ds)
    again.fit(4, resume=tmp_path / "checkpoints/last.pt")
    assert same_weights(again.model, ref.model) and again.history == ref.history


CHILD = """
import os, sys, time, torch
from functools import partial
from torch import nn
from torch.nn import functional as F
from reprlab.core import Terminated, sigterm_as_interrupt
from reprlab.data import cache, from_folder
from reprlab.learner import Callback, Learner
from reprlab.loaders import make_loaders
from reprlab.monitors import CheckpointCB
from reprlab.testing import make_image_folder
torch.set_num_threads(1)
run = sys.argv[1]
ds = cache(from_folder(make_image_folder(run + "/imgs", classes=("a", "b"), n=8, size=8)))
dls = make_loaders(ds, ds, batch_size=4, seed=0, num_workers=2, device="cpu")
class Slow(Callback):
    def after_batch(self, learn):
        if learn.training: time.sleep(0.02)
learn = Learner(nn.Sequential(nn.Flatten(), nn.Linear(192, 2)), dls, loss_func=F.cross_entropy, cbs=[CheckpointCB(run), Slow()])
try:
    with sigterm_as_interrupt(): learn.fit(500)
except Terminated:
    print("terminated", flush=True); sys.exit(143)
"""


@POSIX
def test_sigterm_to_the_whole_process_group_with_loader_workers(tmp_path):
    "What SLURM does at the time limit: SIGTERM to the main process and its DataLoader workers."
    script = tmp_path / "child.py"; script.write_text(CHILD)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "lib"), REPRLAB_CACHE=str(tmp_path / "cache"))
    p = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    last = tmp_path / "checkpoints" / "last.pt"
    t0 = time.time()
    while not last.exists() and p.poll() is None and time.time() - t0 < 120: time.sleep(0.05)
    time.sleep(0.3)                                                    # in the middle of a later epoch
    os.killpg(p.pid, signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-3000:]
    assert "terminated" in out and "Terminated (SIGTERM) in epoch" in out, out
    assert "exited unexpectedly" not in err and "killed by signal" not in err, err[-3000:]   # torch's SIGCHLD handler
    ck = load_checkpoint(last)
    assert ck["epoch"] >= 1 and ck["epoch"] < 500


# ---------------------------------------------------------------- 2. stale temp files
def _write_forever(path):
    torch.set_num_threads(1)
    x = torch.randn(2_000_000)
    while True: save_checkpoint({"x": x}, path)


def test_clean_stale_temp_removes_a_killed_writers_file(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    for _ in range(40):                                                # until a kill lands mid-write
        p = mp.get_context("fork").Process(target=_write_forever, args=(path,), daemon=True)
        p.start()
        t0 = time.time()
        while not path.exists() and time.time() - t0 < 30: time.sleep(0.005)
        time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL); p.join()
        tmps = [q for q in path.parent.iterdir() if q.name.startswith(".last.pt.")]
        if tmps: break
    assert tmps, "no kill landed mid-write"
    assert tmps[0].name.startswith(f".last.pt.{p.pid}.") and tmps[0].name.endswith(".tmp")
    mine = path.parent / f".best.pt.{os.getpid()}.1.tmp"; mine.write_bytes(b"x")     # a live process: kept
    assert clean_stale_temp(path.parent) == tmps
    assert sorted(q.name for q in path.parent.iterdir()) == [mine.name, "last.pt"]
    assert clean_stale_temp(path.parent, all_pids=True) == [mine]
    load_checkpoint(path)


def test_checkpoint_cb_cleans_its_folder_before_fit(tmp_path):
    d = tmp_path / "checkpoints"; d.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (d / f".last.pt.{dead}.99.tmp").write_bytes(b"\0" * 1000); (d / f".best.pt.{dead}.tmp").write_bytes(b"\0")
    toy_learner([CheckpointCB(tmp_path)]).fit(1)
    assert sorted(p.name for p in d.iterdir()) == ["best.pt", "last.pt"]


# ---------------------------------------------------------------- 3. a full disk
class JoinWriter(Callback):
    "Makes the test deterministic: the background write of the last epoch is over before the next batch's check."
    order = 70
    def before_batch(self, learn):
        t = learn.checkpoint.writer._thread
        if t is not None: t.join()


class Snap(Callback):
    order = 95
    def __init__(self): self.w = {}
    def after_epoch(self, learn): self.w[learn.epoch] = {k: v.clone() for k, v in learn.model.state_dict().items()}


def _check_consistent(run: Path, k: int, snap: Snap):
    "last.pt holds epochs 0..k-1 (the state after epoch k-1) and history.csv lists exactly those epochs."
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["epoch"] == k and [h["epoch"] for h in ck["history"]] == list(range(k))
    assert all(torch.equal(ck["model"][n], snap.w[k - 1][n]) for n in ck["model"])
    rows = read_history_csv(run / "history.csv")
    assert [r["epoch"] for r in rows] == [h["epoch"] for h in ck["history"]]
    assert rows[-1]["train_loss"] == pytest.approx(ck["history"][-1]["train_loss"], rel=1e-12)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]   # no temp file left
    end = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()][-1]
    assert end["event"] == "end" and end["status"] == "failed: CheckpointDiskFullError"


@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize("k", [2, 4])                      # a middle epoch, and the last one (seen in after_fit)
def test_disk_full_at_epoch_k(tmp_path, monkeypatch, background, k):
    real_save = torch.save
    def enospc_at_k(obj, f, *a, **kw):
        if isinstance(obj, dict) and obj.get("epoch") == k + 1 and obj.get("batch") == 0:
            f.write(b"\0" * 4096)                          # half a file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)
    monkeypatch.setattr(rc.torch, "save", enospc_at_k)
    snap = Snap()
    learn = toy_learner([CheckpointCB(tmp_path, background=background), HistoryCB(tmp_path), JsonlLogCB(tmp_path),
                         JoinWriter(), snap])
    with pytest.raises(DiskFullError) as e: learn.fit(5)
    last = tmp_path / "checkpoints" / "last.pt"
    assert isinstance(e.value, CheckpointError) and e.value.errno == errno.ENOSPC
    assert str(e.value).startswith(f"no space left on device writing {last} (free space on /")
    if not background: assert learn.epoch == k and not learn.training            # at the write itself
    elif k < 4: assert learn.training and learn.epoch == k + 1 and learn.iter == 0  # at the next batch, not an epoch later
    else: assert learn.epoch == 5                                                   # the last epoch: when the fit ends
    assert [h["epoch"] for h in learn.history] == list(range(k))
    _check_consistent(tmp_path, k, snap)


@pytest.mark.parametrize("k", [0, 2])
def test_history_and_checkpoint_fail_in_the_same_epoch(tmp_path, monkeypatch, k):
    "The race a real full disk allows: epoch k's history.csv write fails while its background checkpoint write fails too."
    real_save, real_csv = torch.save, rt.write_history_csv
    def enospc_at_k(obj, f, *a, **kw):
        if isinstance(obj, dict) and obj.get("epoch") == k + 1 and obj.get("batch") == 0:
            f.write(b"\0" * 4096); raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)
    def csv_full_at_k(history, path):
        if history and history[-1].get("epoch") == k:
            learn.checkpoint.writer._thread.join()       # the checkpoint write has failed by now, unseen
            raise DiskFullError(errno.ENOSPC, f"no space left on device writing {path}", str(path))
        return real_csv(history, path)
    monkeypatch.setattr(rc.torch, "save", enospc_at_k)
    monkeypatch.setattr(rt, "write_history_csv", csv_full_at_k)
    snap = Snap()
    learn = toy_learner([CheckpointCB(tmp_path), HistoryCB(tmp_path, plot=False), JsonlLogCB(tmp_path), JoinWriter(), snap])
    with pytest.raises(CheckpointDiskFullError, match=f"writing {tmp_path / 'checkpoints' / 'last.pt'}") as e: learn.fit(4)
    assert learn.epoch == k and [h["epoch"] for h in learn.history] == list(range(k))
    assert isinstance(e.value.__context__, OSError)
    if k: _check_consistent(tmp_path, k, snap)
    else: assert not (tmp_path / "checkpoints" / "last.pt").exists() and not (tmp_path / "history.csv").exists()


@pytest.fixture
def tiny_disk(tmp_path):
    "A 700 KB tmpfs (needs root and mount permission; skipped where mounting is not allowed)."
    d = tmp_path / "disk"; d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0: pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try: yield d
    finally:
        if subprocess.run(["umount", str(d)], capture_output=True).returncode != 0: subprocess.run(["umount", "-l", str(d)])


def test_a_real_full_disk(tiny_disk):
    "A checkpoint of ~400 KB fits once on 700 KB; the second epoch's temp file does not fit beside it."
    run = tiny_disk / "run"
    snap = Snap()
    learn = toy_learner([CheckpointCB(run), HistoryCB(run, plot=False), JsonlLogCB(run), JoinWriter(), snap], pad=100_000)
    with pytest.raises(CheckpointDiskFullError) as e: learn.fit(4)
    msg = str(e.value)
    assert msg.startswith(f"no space left on device writing {run / 'checkpoints' / 'last.pt'} (free space on {tiny_disk.resolve()}: ")
    assert "\n" not in msg and "inline_container" not in msg
    # usually epoch 1's write is the one that fails (seen in epoch 2); the tmpfs's page accounting can make it epoch 0's.
    # While the background write fills the disk, the same epoch's history.csv write can fail first (seen in epoch k):
    # the checkpoint's error is then the one raised, when the fit ends; either way the files must agree.
    last = run / "checkpoints" / "last.pt"
    k = load_checkpoint(last)["epoch"] if last.exists() else 0
    assert k in (0, 1) and learn.epoch in (k, k + 1), (k, learn.epoch)
    if k: _check_consistent(run, k, snap)
    else: assert not (run / "history.csv").exists() or not read_history_csv(run / "history.csv")


def test_atomic_write_names_the_file_on_dev_full(tmp_path, monkeypatch):
    "torch.save into a file whose writes fail with ENOSPC (as /dev/full's do) gives DiskFullError, not torch's message."
    if not os.path.exists("/dev/full"): pytest.skip("no /dev/full")
    import builtins
    real_open = builtins.open
    def open_full(file, mode="r", *a, **kw):           # atomic_write's temp file is /dev/full in disguise
        return real_open("/dev/full", mode, *a, **kw) if str(file).endswith(".tmp") else real_open(file, mode, *a, **kw)
    monkeypatch.setattr(builtins, "open", open_full)
    with pytest.raises(CheckpointDiskFullError, match=f"no space left on device writing {tmp_path / 'c.pt'}"):
        save_checkpoint({"w": torch.randn(1000)}, tmp_path / "c.pt")
    with pytest.raises(DiskFullError, match="writing .*h.csv"): atomic_write_text(tmp_path / "h.csv", "x" * 100_000)
    monkeypatch.undo()
    assert not (tmp_path / "c.pt").exists() and not list(tmp_path.iterdir())


# ---------------------------------------------------------------- 4. exact history after a mid-epoch resume
_REF = {}
def reference(ds):
    if "ref" not in _REF:
        gs = GradStatsCB()
        learn = img_learner(ds, [gs]); learn.fit(4)
        _REF["ref"] = learn, gs
    return _REF["ref"]


@pytest.mark.parametrize("event,epoch,it,order", [
    ("after_loss", 0, 2, 90),          # epoch 0, mid-batch: rolled back to the mark of batch 1
    ("after_step", 0, 3, 0),           # epoch 0, after the step of batch 3: it counts as done
    ("after_backward", 2, 1, 30),      # a later epoch
    ("after_batch", 2, 4, 95),         # the last batch of the pass, after CheckpointCB's mark
    ("before_validate", 1, None, 0),   # training pass done: the resume only validates
])
def test_mid_epoch_resume_gives_the_uninterrupted_history_exactly(ds, tmp_path, event, epoch, it, order):
    ref, ref_gs = reference(ds)
    first = img_learner(ds, [CheckpointCB(tmp_path), JsonlLogCB(tmp_path), GradStatsCB(), Stop(event, epoch, it, order)])
    with pytest.raises(KeyboardInterrupt): first.fit(4)
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ck["epoch"] == epoch and ck["batch"] > 0 and ck["train_pass"]["n"] == 4 * ck["batch"]
    gs = GradStatsCB()
    again = img_learner(ds, [CheckpointCB(tmp_path), JsonlLogCB(tmp_path), HistoryCB(tmp_path, plot=False), gs])
    again.fit(4, resume=tmp_path / "checkpoints" / "last.pt")
    assert same_weights(again.model, ref.model)
    assert again.history == ref.history                                    # train_loss, valid_loss, accuracy, lr: ==
    assert [r["train_loss"] for r in read_history_csv(tmp_path / "history.csv")] == [h["train_loss"] for h in ref.history]
    assert gs.epochs[0] == ref_gs.epochs[epoch]                           # a callback's sums of the resumed epoch too
    starts = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines() if '"start"' in l]
    assert [s["resumed"] for s in starts] == [False, True]


def test_the_saved_sums_serve_the_resumed_epoch_only(ds, tmp_path):
    first = img_learner(ds, [CheckpointCB(tmp_path), Stop("after_loss", 1, 2, 90)])
    with pytest.raises(KeyboardInterrupt): first.fit(4)
    learn = img_learner(ds)
    learn.fit(4, resume=tmp_path / "checkpoints" / "last.pt")
    assert learn._resume_pass is None and learn.history[1] == reference(ds)[0].history[1]
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    ck["batch"] = 0                                                        # an epoch-end checkpoint: sums are ignored
    restore = img_learner(ds); rc.restore_learner(restore, ck)
    assert restore._resume_pass is None


# ---------------------------------------------------------------- 5. unreadable checkpoints
class Pickled:
    "A Python object inside a checkpoint: torch.load(weights_only=True) refuses it."


@pytest.mark.parametrize("case", ["pickled", "truncated", "png", "empty", "text", "legacy_truncated"])
def test_load_checkpoint_errors_are_one_clear_line(tmp_path, case):
    good = tmp_path / "good.pt"
    save_checkpoint({"model": {"w": torch.randn(5000)}, "epoch": 1}, good)
    p = tmp_path / f"{case}.pt"
    if case == "pickled": torch.save({"model": {}, "obj": Pickled()}, p)
    elif case == "truncated": p.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    elif case == "png": p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
    elif case == "empty": p.write_bytes(b"")
    elif case == "text": p.write_text("not a checkpoint\n")
    else:
        torch.save({"w": torch.randn(5000)}, p, _use_new_zipfile_serialization=False)
        p.write_bytes(p.read_bytes()[:p.stat().st_size // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError) as e: load_checkpoint(p)
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg and len(msg) < 300, msg
    assert "weights_only" not in msg and "False" not in msg and "trust" not in msg, msg
    want = {"pickled": f"not a weights-only checkpoint: it contains pickled Python objects such as {__name__}.Pickled",
            "truncated": "truncated or corrupt", "png": "is not a torch checkpoint (a PNG image", "empty": "truncated or corrupt",
            "text": "is not a torch checkpoint (a text file", "legacy_truncated": "truncated or corrupt"}[case]
    assert want in msg, msg
    assert "never unpickles code" in msg or case != "pickled"
    assert e.value.__suppress_context__                                   # torch's advice is not printed either
    assert load_checkpoint(good)["epoch"] == 1


def test_load_checkpoint_missing_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"): load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a folder"): load_checkpoint(tmp_path)


# ---------------------------------------------------------------- 6. schedules for runs of any length
def torch_onecycle(total, pct):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sch = torch.optim.lr_scheduler.OneCycleLR(opt, 0.3, total_steps=total, pct_start=pct)
    out = []
    for _ in range(total): out.append(opt.param_groups[0]["lr"]); opt.step(); sch.step()
    return np.array(out)


@pytest.mark.parametrize("pct", [0.1, 0.25, 0.3, 0.5, 0.9])
def test_one_cycle_any_length_and_unchanged_where_it_worked(pct):
    for total in range(1, 41):
        s = one_cycle_schedule(0.3, total, 1, pct_start=pct)
        assert len(s) == total and np.isfinite(s).all() and s.max() <= 0.3 and s.min() > 0
        assert s[0] == pytest.approx(0.3 / 25, rel=1e-12)
        if total >= 2: assert s[-1] == pytest.approx(0.3 / 25 / 1e4, rel=1e-9)
        if total >= 3: assert s.max() > 0.3 / 25                          # it warms up
        if 0 < pct * total - 1 < total - 1:                                # where it worked before: OneCycleLR's values
            np.testing.assert_allclose(s, torch_onecycle(total, pct), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(one_cycle_schedule(0.3, 1, 3), [0.3 / 25, 0.3, 0.3 / 25 / 1e4], rtol=1e-12)
    with pytest.raises(ValueError, match="pct_start"): one_cycle_schedule(0.3, 2, 5, pct_start=0)


def test_a_one_epoch_run_on_a_tiny_dataset_trains_with_one_cycle():
    for n_batches in (1, 2, 3):
        dls = toy_dls(); dls.train = dls.train[:n_batches]
        learn = Learner(Padded(), dls, loss_func=F.mse_loss, cbs=[ScheduleCB("lr", partial(one_cycle_schedule, 0.1))])
        learn.fit(1)
        assert learn.step == n_batches


def test_cosine_warmup_longer_than_the_run_is_cut_to_it():
    with pytest.warns(RuntimeWarning, match="longer than the run"):
        s = cosine_schedule(1.0, 0.0, 1, 4, warmup_epochs=5, start_warmup=0.1)
    np.testing.assert_allclose(s, np.linspace(0.1, 1.0, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(cosine_schedule(1.0, 0.0, 2, 3, warmup_epochs=2), np.linspace(0, 1, 6))   # as before


def test_a_kill_between_last_pt_and_its_best_pt_link_is_repaired_by_the_resume(tmp_path):
    "An improving epoch wrote last.pt, then the process died before best.pt was linked: the resume links it."
    learn = toy_learner([CheckpointCB(tmp_path, monitor="train_loss", background=False)])
    learn.fit(2)
    best, last = tmp_path / "checkpoints" / "best.pt", tmp_path / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 2 and load_checkpoint(best)["epoch"] == 2      # the loss fell in both epochs
    best.unlink()                                                   # the window: last.pt at epoch 2, no best.pt for it
    again = toy_learner([CheckpointCB(tmp_path, monitor="train_loss", background=False)])
    again.fit(2, resume=last)                                       # nothing left to train: only the repair runs
    assert best.is_file() and load_checkpoint(best)["epoch"] == 2
