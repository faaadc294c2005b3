"""s02-eval --robustness (issue 20): accuracies under CIFAR-10-C equal the model's accuracy on `corrupt(...)` images
computed by hand, the clean accuracy equals the report's, the official-file path reads the same numbers back, bad
options are one line."""
import json
from pathlib import Path

import numpy as np
import pytest

from reprlab.cli import eval_main
from reprlab.config import config_from_dict
from reprlab.corruptions import corrupt
from reprlab.data import ImageDataset
from reprlab.datasets import load_dataset
from reprlab.eval_run import EvalConfig, EvalData, evaluate_run, features_and_logits, load_run
from reprlab.experiments import TrainConfig, train
from reprlab.testing import make_imagewang


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rob")
    make_imagewang(root / "wang", classes=("a", "b", "c"), n_train=10, n_val=8, n_unsup=2, size=(16, 16), seed=1)
    reg = root / "reg.json"
    reg.write_text(json.dumps({"rob": {"root": str(root / "wang"), "layout": "imagewang"}}))
    mp = pytest.MonkeyPatch(); mp.setenv("REPRLAB_DATASETS", str(reg))
    cfg = config_from_dict(TrainConfig, {"data": {"dataset": "rob", "size": 16, "batch_size": 10}, "epochs": 3, "quiet": True,
                                         "runs_dir": str(root / "runs"), "threads": 1, "name": "clf"})
    yield Path(train(cfg)["run_dir"])
    mp.undo()


def _by_hand(run_dir, images, labels):
    r = load_run(run_dir)
    _, logits, _ = features_and_logits(r["model"], ImageDataset(images=images, labels=labels, classes=["a", "b", "c"]), r["preprocess"])
    return float((logits.argmax(1).numpy() == labels).mean())


def test_robustness_accuracies_equal_the_model_on_corrupted_images(run):
    rep = evaluate_run(EvalConfig(run=run, knn=False, probe="none", tsne=False, grid=0, quiet=True, robustness=True,
                                  corruptions="brightness,gaussian_noise", severities="1,5", seed=3))
    rb = rep["robustness"]
    assert rb["clean"] == pytest.approx(rep["classifier"]["accuracy"]) and rb["predictor"] == "classifier"
    val = load_dataset("rob", size=16)["val"]
    from reprlab.data import cache
    val = cache(val); x, y = val.images, val.labels
    for name in ("brightness", "gaussian_noise"):
        for j, s in enumerate((1, 5)):
            assert rb["accuracy"][name][j] == pytest.approx(_by_hand(run, corrupt(x, name, s, seed=3), y)), (name, s)
    assert rb["mca"] == pytest.approx(np.mean([np.mean(v) for v in rb["accuracy"].values()]))
    out = Path(rep["out_dir"])
    assert {"robustness.md", "robustness.png"} <= {p.name for p in out.iterdir()}
    assert "mean corruption accuracy" in (out / "report.md").read_text()


def test_official_files_are_read_instead_when_given(run, tmp_path):
    from reprlab.data import cache
    val = cache(load_dataset("rob", size=16)["val"])
    x, y = val.images, val.labels
    stack = np.concatenate([corrupt(x, "contrast", s, seed=7).permute(0, 2, 3, 1).numpy() for s in range(1, 6)])
    np.save(tmp_path / "contrast.npy", stack); np.save(tmp_path / "labels.npy", np.tile(y, 5))
    rep = evaluate_run(EvalConfig(run=run, knn=False, probe="none", tsne=False, grid=0, quiet=True, robustness=True,
                                  corruptions="contrast", cifar10c_dir=tmp_path, seed=0))
    rb = rep["robustness"]
    assert rb["source"] == "official"
    assert rb["accuracy"]["contrast"] == pytest.approx([_by_hand(run, corrupt(x, "contrast", s, seed=7), y) for s in range(1, 6)])


@pytest.mark.parametrize("args, words", [(["--corruptions=fogg"], ["fogg", "fog"]), (["--severities=0"], ["1..5"]),
                                         (["--cifar10c_dir=/nonexistent"], ["not a folder"])])
def test_bad_robustness_options_are_one_line_exit_2(run, capsys, args, words):
    assert eval_main([f"--run={run}", "--quiet", "--robustness", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words)
