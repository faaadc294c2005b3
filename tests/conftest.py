"""Shared fixtures. Tests run with one torch thread per process (pytest-xdist runs two processes on 2 cores)."""
import json
import os
import signal
import tarfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("REPRLAB_DEVICE", "cpu")
# `make test &` from a shell without job control starts with Ctrl-C ignored, and the runs the tests start would inherit
# that: the Ctrl-C tests need Python's own handler, here and (reset to the default at exec) in every child process.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN: signal.signal(signal.SIGINT, signal.default_int_handler)

from reprlab.testing import make_imagewang, shared_data  # noqa: E402


@pytest.fixture(scope="session")
def shared():
    "The shared real-data folder, or skip where it is absent (a user's fresh clone)."
    p = shared_data("README.md")
    if p is None: pytest.skip("../shared/data not found (real CIFAR-10 files are only beside the project's own clone)")
    return p.parent


@pytest.fixture(scope="session")
def cifar_folder(shared, tmp_path_factory):
    "The shared cifar10-folder-sample.tar (ImageFolder layout, 100 + 20 JPEGs per class) extracted once."
    out = tmp_path_factory.mktemp("cifar-folder")
    with tarfile.open(shared / "cifar10-folder-sample.tar") as t: t.extractall(out, filter="data")
    return out / "cifar10-folder-sample"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "A tiny synthetic Imagewang (3 classes, 8 + 4 images each, 24 unlabeled, 16 px) registered as 'tiny': (root, registry)."
    root = tmp_path_factory.mktemp("tiny")
    make_imagewang(root / "wang", classes=("a", "b", "c"), n_train=8, n_val=4, n_unsup=24, size=(16, 16))
    reg = root / "reg.json"
    reg.write_text(json.dumps({"tiny": {"root": str(root / "wang"), "layout": "imagewang"}}))
    return root, reg
