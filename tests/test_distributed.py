"""torchrun with 2 CPU processes (gloo) follows the single-process loss curve for the same global batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reprlab.distributed import all_gather_cat, gather_by_index, init_distributed

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_torchrun_two_processes_match_single_process(tmp_path):
    _run([sys.executable, str(SCRIPT), str(tmp_path / "one.json")], tmp_path)
    torchrun = Path(sys.executable).with_name("torchrun")
    _run([str(torchrun), "--standalone", "--nproc_per_node=2", str(SCRIPT), str(tmp_path / "two.json")], tmp_path)
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert one["world"] == 1 and two["world"] == 2
    for a, b in zip(one["history"], two["history"]):
        assert a["epoch"] == b["epoch"]
        np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b["valid_loss"], a["valid_loss"], rtol=1e-5, atol=1e-6)
        assert a["accuracy"] == b["accuracy"]
    np.testing.assert_allclose(two["weights"], one["weights"], rtol=1e-4, atol=1e-6)


def test_contrastive_losses_gather_across_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    _run([str(torchrun), "--standalone", "--nproc_per_node=2", str(SCRIPT.with_name("ddp_ntxent.py")), str(tmp_path / "nt.json")], tmp_path)
    r = json.loads((tmp_path / "nt.json").read_text())
    assert r["world"] == 2
    np.testing.assert_allclose(r["ddp"], r["full"], rtol=1e-5)       # mean over ranks == loss of the whole batch
    assert abs(r["local"] - r["full"]) > 1e-3                        # (one rank's rows alone differ: the test can fail)
    assert r["grad_err"] < 1e-5                                      # gradients reach the rank that made the rows
    np.testing.assert_allclose(r["supcon_ddp"], r["supcon_full"], rtol=1e-5)   # SupCon: positives from other ranks too
    assert abs(r["supcon_local"] - r["supcon_full"]) > 1e-3 and r["supcon_grad_err"] < 1e-5
    assert r["nnclr_err"] < 1e-6 and r["nnclr_ptr"] == 2 * r["world"]        # NNCLR: one queue on every rank, all rows in
    assert "same first dimension on every rank" in r["uneven"] and "[4, 6]" in r["uneven"]   # a clear error, not a hang


def test_single_process_helpers_are_identity():
    assert init_distributed() == (0, 1)
    t = torch.arange(6.).view(3, 2)
    assert torch.equal(all_gather_cat(t), t)
    assert torch.equal(gather_by_index(t, torch.tensor([1, 2, 0])), t[[2, 0, 1]])
