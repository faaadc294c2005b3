"""s02-eval (issue 19): a run evaluated with nothing else given, its preprocessing repeated, features cached, reports
and figures written whole, metrics equal to scikit-learn's, and one clear line (exit 1) for every bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from reprlab.checkpoint import load_checkpoint, load_model
from reprlab.cli import eval_main
from reprlab.config import config_from_dict
from reprlab.data import cache, channel_stats
from reprlab.datasets import load_dataset
from reprlab.eval_run import EvalConfig, EvalData, evaluate_run
from reprlab.experiments import TrainConfig, train
from reprlab.testing import make_imagewang
from reprlab.transforms import Normalize

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    "A two-epoch classifier and a one-epoch SimCLR run on the tiny Imagewang, and a second dataset with other classes."
    root, reg = tiny
    make_imagewang(root / "other", classes=("x", "y"), n_train=6, n_val=3, n_unsup=2, size=(16, 16), seed=5)
    make_imagewang(root / "hollow", classes=("a", "b", "c"), n_train=4, n_val=0, n_unsup=2, size=(16, 16))
    entries = json.loads(Path(reg).read_text())
    entries.update(other={"root": str(root / "other"), "layout": "imagewang"}, hollow={"root": str(root / "hollow"), "layout": "imagewang"})
    reg2 = tmp_path_factory.mktemp("reg") / "reg.json"
    reg2.write_text(json.dumps(entries))
    mp = pytest.MonkeyPatch()
    mp.setenv("REPRLAB_DATASETS", str(reg2))
    out = tmp_path_factory.mktemp("evalruns")
    common = {"data": {"dataset": "tiny", "size": 16, "batch_size": 8}, "quiet": True, "runs_dir": str(out), "threads": 1}
    clf = Path(train(config_from_dict(TrainConfig, {**common, "epochs": 2, "name": "clf"}))["run_dir"])
    ssl = Path(train(config_from_dict(TrainConfig, {**common, "epochs": 1, "name": "ssl", "task": "simclr"}))["run_dir"])
    yield dict(clf=clf, ssl=ssl, reg=reg2, root=root)
    mp.undo()


def _eval(run, *args, **kw):
    return evaluate_run(EvalConfig(run=run, probe_epochs=10, tsne_points=50, perplexity=5, quiet=True, **kw))


def test_a_run_evaluates_with_nothing_else_given(runs, capsys):
    assert eval_main([f"--run={runs['clf']}", "--quiet", "--probe_epochs=10", "--perplexity=5"]) == 0
    out = runs["clf"] / "eval" / "tiny-val"
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    files = {p.name for p in out.iterdir()}
    assert {"report.json", "report.md", "confusion.csv", "confusion.png", "roc.png", "tsne.png", "predictions.npz"} <= files
    rep = json.loads((out / "report.json").read_text())          # strict JSON: no NaN
    with np.load(out / "predictions.npz", allow_pickle=False) as z:
        pred, y, probs, paths = z["predictions"], z["labels"], z["probabilities"], z["paths"]
        assert z["embeddings"].shape == (12, rep["features_dim"]) and list(z["classes"]) == ["a", "b", "c"]
    assert all(str(p).endswith(".jpg") for p in paths) and np.allclose(probs.sum(1), 1, atol=1e-5)
    c = rep["classifier"]
    assert c["accuracy"] == pytest.approx(accuracy_score(y, pred)) and c["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert rep["checkpoint"].endswith("best.pt") and rep["knn"]["k20_t0.07"]["top1"] is not None and rep["probe"]["accuracy"] is not None


def test_predictions_are_the_model_on_the_run_preprocessing(runs):
    "The report's predictions equal the model applied by hand to the val images, normalised with the train split's statistics."
    ck = load_checkpoint(runs["clf"] / "checkpoints" / "best.pt")
    splits = load_dataset("tiny", size=16)
    train_ds, val = cache(splits["train"]), cache(splits["val"])
    mean, std = channel_stats(train_ds)
    pre = ck["preprocess"]
    assert pre["mean"] == pytest.approx(mean) and pre["std"] == pytest.approx(std) and pre["classes"] == ["a", "b", "c"] and pre["size"] == 16
    model = load_model(runs["clf"] / "checkpoints" / "best.pt")
    with torch.no_grad(): logits = model(Normalize(mean, std)(val.images.float() / 255, None))
    rep = _eval(runs["clf"])
    with np.load(Path(rep["out_dir"]) / "predictions.npz", allow_pickle=False) as z:
        assert np.array_equal(z["predictions"], logits.argmax(1).numpy())
        assert np.allclose(z["probabilities"], logits.softmax(1).numpy(), atol=1e-5)


def test_features_are_cached_by_checkpoint_and_data(runs):
    first = _eval(runs["ssl"], no_cache=True)
    again = _eval(runs["ssl"])
    assert not first["features_cached"] and again["features_cached"]
    assert again["knn"] == first["knn"] and again["probe"]["accuracy"] == first["probe"]["accuracy"]
    for p in (runs["ssl"] / "eval" / "cache").glob("*.npz"): p.write_bytes(b"broken")
    assert not _eval(runs["ssl"])["features_cached"]                  # a damaged cache is recomputed


def test_a_self_supervised_run_gets_knn_and_the_probe(runs):
    rep = _eval(runs["ssl"])
    assert "classifier" not in rep and rep["shown"] == "linear probe"
    for key in ("k20_t0.07", "k200_t0.1"):
        k = rep["knn"][key]
        assert 0 <= k["top1"] <= k["top5"] <= 1 and set(k["per_class"]) == {"a", "b", "c"}
    assert (Path(rep["out_dir"]) / "confusion.png").is_file()


def test_an_encoder_evaluates_on_data_with_other_classes(runs):
    "kNN and the probe use the evaluated dataset's own labels: an SSL encoder transfers to other classes."
    rep = _eval(runs["ssl"], data=EvalData(dataset="other"))
    assert rep["classes"] == ["x", "y"] and rep["n"] == 6 and rep["n_train"] == 12
    assert Path(rep["out_dir"]) == runs["ssl"] / "eval" / "other-val"


def test_a_run_written_before_preprocessing_was_recorded_still_evaluates(runs, tmp_path):
    import shutil
    old = tmp_path / "old"
    shutil.copytree(runs["clf"], old, ignore=shutil.ignore_patterns("eval", ".lock"))
    for name in ("best.pt", "last.pt"):
        ck = load_checkpoint(old / "checkpoints" / name)
        ck.pop("preprocess")
        torch.save(ck, old / "checkpoints" / name)
    a, b = _eval(runs["clf"]), _eval(old)
    assert a["classifier"] == b["classifier"] and a["preprocess"]["mean"] == pytest.approx(b["preprocess"]["mean"])


def _cli(args):
    return subprocess.run([sys.executable, str(ROOT / "bin" / "s02-eval.py"), *args, "--quiet"], capture_output=True, text=True,
                          timeout=300)


def _one_line_exit_1(p, *words):
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-2000:]
    for w in words: assert w in lines[0], lines[0]


def test_bad_inputs_are_one_line_exit_1_and_write_nothing(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("REPRLAB_DATASETS", str(runs["reg"]))
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    _one_line_exit_1(_cli([f"--run={tmp_path / 'empty'}"]), "has no checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(2, 3, 3, 3)}, foreign)                 # another library's state dict
    _one_line_exit_1(_cli([f"--checkpoint={foreign}"]), "not a reprlab checkpoint")
    cut = tmp_path / "cut.pt"
    cut.write_bytes((runs["clf"] / "checkpoints" / "best.pt").read_bytes()[:2000])
    _one_line_exit_1(_cli([f"--checkpoint={cut}", f"--run={runs['clf']}"]), str(cut))
    _one_line_exit_1(_cli([f"--run={runs['clf']}", "--data.dataset=other"]), "['x', 'y']", "['a', 'b', 'c']")
    p = _cli([f"--run={runs['clf']}", "--data.dataset=hollow"])
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (runs["clf"] / "eval" / "other-val").exists() and not (runs["clf"] / "eval" / "hollow-val").exists()
    assert not list((runs["clf"] / "eval").glob(".*tmp"))
    p = _cli([f"--run={runs['clf']}", "--data.split=nope"])
    assert p.returncode == 2 and "has no split 'nope'" in p.stderr


def test_compare_writes_one_table(runs, tmp_path, capsys):
    _eval(runs["clf"]); _eval(runs["ssl"])
    assert eval_main(["--compare", str(runs["clf"]), str(runs["ssl"]), f"--out={tmp_path}"]) == 0
    printed = capsys.readouterr().out
    assert "| clf |" in printed and "| ssl |" in printed
    csv = (tmp_path / "compare.csv").read_text().splitlines()
    assert csv[0].split(",")[:4] == ["run", "data", "checkpoint", "accuracy"] and len(csv) == 3
    assert eval_main(["--compare", str(tmp_path / "nothing")]) == 1


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as e: eval_main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for o in ("--run", "--checkpoint", "--data.dataset", "--data.split", "--probe", "--no_cache", "--perplexity", "--tsne_lr"):
        assert o in text, o


def test_torchrun_is_refused_rather_than_every_rank_writing(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert eval_main(["--run=runs/x", "--quiet"]) == 2
    assert "not torchrun" in capsys.readouterr().err
