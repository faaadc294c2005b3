"""Kill a training run at random points, 20 times (SIGKILL, SIGTERM, SIGINT; some of them while a checkpoint is being
written), resume it each time, and check that every resumed run ends with the weights, the checkpointed history and
the `history.csv` of an uninterrupted run, bit for bit. Each kill waits for a seeded number of epochs to end (0-2), then
a seeded few milliseconds: progress, not the machine's speed, decides where it lands."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reprlab.checkpoint import load_checkpoint
from reprlab.testing import make_imagewang

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "bin" / "s01-train.py"
EPOCHS = 12
ARGS = ["--data.dataset=tiny", "--data.size=16", "--data.batch_size=8", "--data.num_workers=0", "--threads=1", "--quiet",
        f"--epochs={EPOCHS}", "--keep=2"]
SIGNALS = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT]
CHAINS = 5               # runs, each killed KILLS times and resumed until it finishes: 20 kills in all
KILLS = 4

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    make_imagewang(root / "wang", classes=("a", "b", "c"), n_train=16, n_val=8, n_unsup=8, size=(16, 16))
    reg = root / "reg.json"
    reg.write_text(json.dumps({"tiny": {"root": str(root / "wang"), "layout": "imagewang"}}))
    env = dict(os.environ, OMP_NUM_THREADS="1", REPRLAB_DATASETS=str(reg), REPRLAB_CACHE=str(root / "cache"), PYTHONUNBUFFERED="1")
    env.pop("COMET_API_KEY", None)
    return root, env


def _start(args, cwd, env):
    return subprocess.Popen([sys.executable, str(TRAIN), *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _new_epochs(log: Path, log_size: int) -> int:
    "Epoch lines written to `log` after its first `log_size` bytes."
    if not log.exists(): return 0
    with open(log, "rb") as f: f.seek(log_size); return f.read().count(b'"event": "epoch"')

def _kill(p, run: Path, sig, during_write: bool, wait_epochs: int, delay: float, log_size: int):
    "Send `sig` to `p` once its fit has begun (log.jsonl grew) and `wait_epochs` more epochs ended, `delay` s later; or the moment a checkpoint temp file appears."
    log, ck, t0 = run / "log.jsonl", run / "checkpoints", time.time()
    while p.poll() is None and (not log.exists() or log.stat().st_size <= log_size) and time.time() - t0 < 120: time.sleep(0.005)
    t1 = time.time()
    while p.poll() is None:                     # progress, not wall time, decides where a kill lands: any machine speed
        if during_write:
            if ck.is_dir() and any(n.startswith(".") and n.endswith(".tmp") for n in os.listdir(ck)): break
        elif _new_epochs(log, log_size) >= wait_epochs:
            time.sleep(delay); break
        if time.time() - t1 > 60: break
        time.sleep(0.0005 if during_write else 0.005)
    if p.poll() is None: p.send_signal(sig)
    return p.wait(timeout=120)


def _result(run: Path):
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    return ck["model"], ck["history"], (run / "history.csv").read_text(), ck["epoch"]


def test_twenty_kills_and_every_resume_matches_the_uninterrupted_run(tiny, tmp_path):
    root, env = tiny
    ref = subprocess.run([sys.executable, str(TRAIN), "--name=ref", *ARGS], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    want_model, want_hist, want_csv, want_epoch = _result(tmp_path / "runs" / "ref")
    assert want_epoch == EPOCHS and len(want_hist) == EPOCHS

    rng, codes, landed = random.Random(0), [], []
    for c in range(CHAINS):
        name = f"chain{c}"
        run = tmp_path / "runs" / name
        for k in range(KILLS):
            i = c * KILLS + k
            sig, during_write = SIGNALS[i % 3], i % 4 == 1
            resume = (run / "config.json").exists()
            size = (run / "log.jsonl").stat().st_size if (run / "log.jsonl").exists() else 0
            p = _start([f"--resume=runs/{name}", "--quiet"] if resume else [f"--name={name}", *ARGS], tmp_path, env)
            code = _kill(p, run, sig, during_write, rng.randrange(0, 3), rng.uniform(0.0, 0.02), size)
            codes.append((sig.name, during_write, code))
            err = p.stderr.read()
            assert code in (0, -9, 130, 143, -2, -15), (sig.name, code, err[-2000:])
            if code == 0: break                                          # it finished before the signal came
            if code in (130, 143): assert "resume with:" in err, err[-2000:]
            if (run / "checkpoints" / "last.pt").exists(): landed.append(load_checkpoint(run / "checkpoints" / "last.pt")["epoch"])
        else:
            done = subprocess.run([sys.executable, str(TRAIN), f"--resume=runs/{name}", "--quiet"], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
        model, hist, csv, epoch = _result(run)
        assert epoch == EPOCHS and hist == want_hist and csv == want_csv, (name, codes)
        assert model.keys() == want_model.keys() and all(torch.equal(model[k], want_model[k]) for k in model), (name, codes)
        assert not [p for p in run.rglob("*.tmp")]                       # no temp file survives a finished run
        saved = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert saved == ["best.pt", f"epoch-{EPOCHS - 1:04d}.pt", f"epoch-{EPOCHS:04d}.pt", "last.pt"], saved
    assert sum(c[2] != 0 for c in codes) >= 10, codes                    # most signals landed mid-run


def test_a_kill_between_the_checkpoint_and_history_csv_is_repaired_by_the_resume(tiny, tmp_path):
    "SIGKILL after the last epoch's `last.pt` but before its `history.csv` row: the resume (nothing left to train) rewrites it."
    root, env = tiny
    args = [a for a in ARGS if not a.startswith("--epochs")] + ["--epochs=2"]
    ref = subprocess.run([sys.executable, str(TRAIN), "--name=r", *args], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    run = tmp_path / "runs" / "r"
    want = (run / "history.csv").read_text()
    lines = want.splitlines(keepends=True)
    assert len(lines) == 3                                              # header and two epochs
    (run / "history.csv").write_text("".join(lines[:-1]))              # what the kill left
    (run / "history.png").unlink()
    again = subprocess.run([sys.executable, str(TRAIN), "--resume=runs/r", "--quiet"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run / "history.csv").read_text() == want and (run / "history.png").is_file()
