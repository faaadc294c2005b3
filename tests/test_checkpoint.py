"Checkpoint writes under Ctrl-C: the signal waits for the write, then arrives."
from __future__ import annotations

import os
import signal

import pytest
import torch

from reprlab.checkpoint import defer_sigint, load_checkpoint, save_checkpoint


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name == "nt", reason="POSIX signals")
def test_ctrl_c_during_a_write_is_delivered_after_it(tmp_path, monkeypatch):
    big = {"model": {"w": torch.randn(512, 512)}}
    real_save = torch.save
    def save_and_interrupt(obj, f, *a, **kw):          # the signal arrives in the middle of torch.save
        os.kill(os.getpid(), signal.SIGINT)
        return real_save(obj, f, *a, **kw)
    monkeypatch.setattr(torch, "save", save_and_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(big, tmp_path / "c.pt")
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["model"]["w"], big["model"]["w"])   # complete file
    assert not list(tmp_path.glob(".*.tmp"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler                     # handler restored


def test_defer_sigint_without_a_signal_is_transparent():
    with defer_sigint(): x = 1
    assert x == 1 and signal.getsignal(signal.SIGINT) is signal.default_int_handler
