"The numbered scripts end to end, as a user runs them: `--help`, a short training run, Ctrl-C and an exact resume."
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from reprlab.checkpoint import load_checkpoint, load_model
from reprlab.experiments import DataConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "bin" / "s01-train.py"
# small and quick: 2 epochs of 600 images at batch 64, no worker processes (the Learner tests cover workers)
FAST = ["--quiet", "--data.num_workers=0", "--data.batch_size=64", "--threads=1"]


def _env(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", REPRLAB_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    env.pop("COMET_API_KEY", None)
    return env


def _run(args, tmp_path, **kw):
    return subprocess.run([sys.executable, str(TRAIN), *args], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300, **kw)


def test_help_lists_every_option_with_its_default(tmp_path):
    r = _run(["--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    for f in fields(TrainConfig): assert f"--{f.name}" in r.stdout, f.name
    for f in fields(DataConfig): assert f"--data.{f.name}" in r.stdout, f.name
    assert "cifar10-wang-mini" in r.stdout and "0.005" in r.stdout        # defaults are shown


def test_bad_option_names_the_key(tmp_path):
    r = _run(["--epochz=3"], tmp_path)
    assert r.returncode != 0 and "epochz" in r.stderr and "epochs" in r.stderr   # names the key and a suggestion
    r = _run(["--epochs=three"], tmp_path)
    assert r.returncode != 0 and "epochs" in r.stderr and "three" in r.stderr


def test_train_writes_the_run_dir_and_reports(tmp_path):
    r = _run(["--name=smoke", "--epochs=2", *FAST], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "smoke"
    assert f"run dir: {Path('runs') / 'smoke'}" in r.stdout and "final val accuracy:" in r.stdout
    for f in ["config.json", "cmd.txt", "env.json", "history.csv", "history.png", "log.jsonl", "summary.json",
              "checkpoints/last.pt", "checkpoints/best.pt"]:
        assert (run / f).is_file(), f
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["epochs"] == 2 and cfg["data"]["batch_size"] == 64
    hist = (run / "history.csv").read_text().splitlines()
    assert len(hist) == 3 and "accuracy" in hist[0]                     # header + one row per epoch
    acc = float(r.stdout.split("final val accuracy:")[1].split()[0])
    assert 0.0 <= acc <= 1.0
    model = load_model(run / "checkpoints" / "best.pt")                 # rebuilt with no other argument
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert "COMET" not in (run / "env.json").read_text()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_saves_a_checkpoint_and_resume_is_exact(tmp_path):
    args = ["--epochs=3", *FAST]
    full = _run(["--name=full", *args], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]

    p = subprocess.Popen([sys.executable, str(TRAIN), "--name=cut", *args], cwd=tmp_path, env=_env(tmp_path),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "runs" / "cut" / "checkpoints" / "last.pt"
    t0 = time.time()
    while not last.exists() and p.poll() is None and time.time() - t0 < 240: time.sleep(0.02)
    p.send_signal(signal.SIGINT)                                        # during epoch 1 (or later)
    out, err = p.communicate(timeout=120)
    if p.returncode == 0: pytest.skip("the run finished before the interrupt arrived (very fast machine)")
    assert p.returncode == 130, err[-3000:]
    assert "resume with:" in err and "--resume=" in err
    ck = load_checkpoint(last)
    assert ck["epoch"] < 3
    assert (tmp_path / "runs" / "cut" / "history.csv").is_file()

    res = _run(["--resume=runs/cut/checkpoints/last.pt", *FAST], tmp_path)   # the run's own config.json is reused
    assert res.returncode == 0, res.stderr[-3000:]
    a = load_checkpoint(tmp_path / "runs" / "full" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(last)["model"]
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k                       # bitwise equal to the uninterrupted run


def test_transfer_init_freeze_and_lr_mult(tmp_path):
    src = _run(["--name=src", "--epochs=1", *FAST], tmp_path)
    assert src.returncode == 0, src.stderr[-3000:]
    ft = _run(["--name=ft", "--epochs=1", "--init_encoder=runs/src/checkpoints/last.pt", "--freeze_encoder_epochs=1",
               "--encoder_lr_mult=0.1", *FAST], tmp_path)
    assert ft.returncode == 0, ft.stderr[-3000:]
    assert "init encoder from runs/src/checkpoints/last.pt [encoder.]" in ft.stdout and "unexpected none" in ft.stdout
    a = load_checkpoint(tmp_path / "runs" / "src" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "runs" / "ft" / "checkpoints" / "last.pt")
    enc = [k for k in a if k.startswith("encoder.")]
    assert enc and all(torch.equal(a[k], b["model"][k]) for k in enc)      # frozen for the only epoch, BN stats included
    assert not all(torch.equal(a[k], b["model"][k]) for k in a if k.startswith("head."))
    assert sorted(g["lr_mult"] for g in b["opt"]["param_groups"]) == [0.1, 0.1, 1.0, 1.0]
    bad = _run(["--name=bad", "--epochs=1", "--init_encoder=runs/nope.pt", *FAST], tmp_path)
    assert bad.returncode != 0 and "runs/nope.pt" in bad.stderr
