"""Issue 20: attack metrics in s02-eval (--pad.*), split tables, and the unseen-attack protocol (--protocol=leave_one_out):
numbers equal to scikit-learn / reprlab.metrics recomputed from the saved predictions, thresholds never chosen on the
scored split, splits made once and refused when the data changed, arms that are ordinary resumable runs."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from reprlab.cli import eval_main, train_main
from reprlab.config import ConfigError, config_from_dict
from reprlab.data import DataError
from reprlab.datasets import load_dataset
from reprlab.eval_run import EvalConfig, EvalData, evaluate_run
from reprlab.eval_sections import PadOptions, bona_fide_classes
from reprlab.experiments import TrainConfig, train
from reprlab.metrics import eer
from reprlab.splits import read_split_table, write_split_table
from reprlab.testing import make_imagewang

CLASSES = ("a", "b", "c", "d", "e")


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    "A tiny five-class Imagewang registered as 'five', and a supervised run on it: (registry, run dir, runs dir)."
    root = tmp_path_factory.mktemp("five")
    make_imagewang(root / "wang", classes=CLASSES, n_train=10, n_val=6, n_unsup=4, size=(16, 16), seed=3)
    reg = root / "reg.json"
    reg.write_text(json.dumps({"five": {"root": str(root / "wang"), "layout": "imagewang"}}))
    mp = pytest.MonkeyPatch(); mp.setenv("REPRLAB_DATASETS", str(reg))
    runs = root / "runs"
    cfg = config_from_dict(TrainConfig, {"data": {"dataset": "five", "size": 16, "batch_size": 10}, "epochs": 3, "quiet": True,
                                         "runs_dir": str(runs), "threads": 1, "name": "clf"})
    run = Path(train(cfg)["run_dir"])
    yield reg, run, runs
    mp.undo()


def _pad_eval(run, **pad):
    return evaluate_run(EvalConfig(run=run, knn=False, probe="none", tsne=False, grid=0, quiet=True,
                                   data=EvalData(split="val"), pad=PadOptions(n_boot=50, **pad)))


def test_attack_metrics_equal_scikit_learn_on_the_saved_predictions(five):
    _, run, _ = five
    rep = _pad_eval(run, bona_fide="a,b", threshold_split="train")
    out = Path(rep["out_dir"])
    with np.load(out / "predictions.npz") as z: p, y = z["probabilities"], z["labels"]
    yb, s = (~np.isin(y, [0, 1])).astype(int), 1 - p[:, [0, 1]].sum(1)
    pad = rep["pad"]
    assert pad["auc"] == pytest.approx(roc_auc_score(yb, s))
    fpr, tpr, _ = roc_curve(yb, s)
    e = pad["eer"]                                  # the EER lies between the ROC's last point with FNR > FPR and the next
    i = np.argmax(1 - tpr <= fpr)
    assert min(fpr[i - 1], fpr[i]) - 1e-9 <= e <= max(fpr[i - 1], fpr[i]) + 1e-9 or fpr[i] == e
    # the threshold is the EER threshold of the train split under the same classifier, applied to val
    tr = evaluate_run(EvalConfig(run=run, knn=False, probe="none", tsne=False, grid=0, quiet=True, data=EvalData(split="train")))
    with np.load(Path(tr["out_dir"]) / "predictions.npz") as z: pt, yt = z["probabilities"], z["labels"]
    th = eer((~np.isin(yt, [0, 1])).astype(int), 1 - pt[:, [0, 1]].sum(1))[1]
    assert pad["threshold"] == pytest.approx(th) and pad["threshold_source"] == "validation" and pad["threshold_split"] == "train"
    called = s >= th
    assert pad["bpcer"] == pytest.approx(called[yb == 0].mean())
    per = {c: float((~called[y == k]).mean()) for k, c in enumerate(CLASSES) if k >= 2}
    assert pad["apcer_per_class"] == pytest.approx(per) and pad["apcer"] == pytest.approx(max(per.values()))
    assert pad["hter"] == pytest.approx(((~called[yb == 1]).mean() + called[yb == 0].mean()) / 2)
    assert {"pad_scores.png", "pad_det.png"} <= {f.name for f in out.iterdir()}
    md = (out / "report.md").read_text()
    assert "Attack detection" in md and "| APCER e |" in md and "EER" in md


def test_no_threshold_is_chosen_on_the_scored_split(five):
    _, run, _ = five
    rep = _pad_eval(run, bona_fide="a")                      # val is the run's own validation split: nothing else to choose on
    assert rep["pad"].get("threshold") is None and "no threshold" in rep["pad"]["note"]
    with pytest.raises(ConfigError, match="is the evaluated split"): _pad_eval(run, bona_fide="a", threshold_split="val")
    assert _pad_eval(run, bona_fide="a", threshold=0.5)["pad"]["threshold_source"] == "given"


def test_bona_fide_from_names_json_list_or_label_map(tmp_path):
    cls = list(CLASSES)
    assert bona_fide_classes("a, c", cls) == [0, 2]
    (tmp_path / "l.json").write_text(json.dumps(["b"])); assert bona_fide_classes(str(tmp_path / "l.json"), cls) == [1]
    (tmp_path / "d.json").write_text(json.dumps({"bona_fide": ["d", "e"]})); assert bona_fide_classes(str(tmp_path / "d.json"), cls) == [3, 4]
    m = {c: "attack" for c in cls} | {"a": "bona_fide"}
    (tmp_path / "m.json").write_text(json.dumps(m)); assert bona_fide_classes(str(tmp_path / "m.json"), cls) == [0]
    (tmp_path / "bad.json").write_text(json.dumps({"a": "real"}))
    for spec, msg in (("a,zz", "'zz'"), (",".join(cls), "no attack class"), (str(tmp_path / "bad.json"), "'bona_fide' or 'attack'"),
                      (str(tmp_path / "none.json"), "no such JSON file")):
        with pytest.raises(ConfigError, match=msg): bona_fide_classes(spec, cls)
    (tmp_path / "part.json").write_text(json.dumps({"a": "bona_fide"}))
    with pytest.raises(ConfigError, match="does not say"): bona_fide_classes(str(tmp_path / "part.json"), cls)


def test_a_bad_class_name_is_one_line_exit_2(five, capsys):
    _, run, _ = five
    assert eval_main([f"--run={run}", "--quiet", "--pad.bona_fide=a,nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'nope'" in err[0]


def test_split_tables_refuse_changed_data_and_edited_files(five, tmp_path):
    splits = load_dataset("five", size=16)
    rows = [dict(source="val", index=i, split="test", label="x", source_class="a") for i in range(3)]
    p = write_split_table(tmp_path / "t.csv", rows, ["x"], splits)
    assert len(read_split_table(p, splits)["test"]) == 3
    other = dict(splits); other["val"] = splits["train"]
    with pytest.raises(DataError, match="other data"): read_split_table(p, other)
    p.write_text(p.read_text().replace("val,2", "val,1"))
    with pytest.raises(DataError, match="changed after"): read_split_table(p, splits)
    with pytest.raises(ValueError, match="out of range"):
        write_split_table(tmp_path / "u.csv", [dict(source="val", index=999, split="t", label="x")], ["x"], splits)


def _loo(runs, *extra):
    return train_main(["--protocol=leave_one_out", f"--runs_dir={runs}", "--name=loo", "--data.dataset=five", "--data.size=16",
                       "--data.batch_size=10", "--epochs=2", "--threads=1", "--quiet", "--loo.bona_fide=a,b", "--loo.n_boot=20", *extra])


def test_leave_one_out_trains_one_ordinary_run_per_attack_class_and_resumes(five, tmp_path):
    _, _, _ = five
    runs = tmp_path / "runs"
    assert _loo(runs) == 0
    root = runs / "loo"
    res = json.loads((root / "protocol.json").read_text())
    assert list(res["arms"]) == ["c", "d", "e"] and res["bona_fide"] == ["a", "b"]
    md = (root / "loo.md").read_text()
    assert "| **mean +- std** |" in md and all(f"| {c} |" in md for c in "cde")
    eers = [res["arms"][c]["eer"] for c in "cde"]
    assert res["summary"]["eer"]["mean"] == pytest.approx(np.mean(eers)) and res["summary"]["eer"]["std"] == pytest.approx(np.std(eers, ddof=1))
    for c in "cde":
        cfg = json.loads((root / c / "config.json").read_text())
        assert cfg["data"]["split_file"].endswith(f"splits/{c}.csv") and cfg["protocol"] == "none"
        t = read_split_table(root / "splits" / f"{c}.csv", load_dataset("five", size=16))
        assert c not in t["train"].extras["source_class"] + t["val"].extras["source_class"]
        assert set(t["test"].extras["source_class"]) == {"a", "b", c}
        rep = json.loads((root / c / "eval" / "five-test" / "report.json").read_text())
        assert rep["pad"]["threshold_split"] == "val" and rep["pad"]["attack_classes"] == [c] and rep["n"] == len(t["test"])
    # an arm's eval is an ordinary s02-eval of an ordinary run: the split table comes from its checkpoint
    assert eval_main([f"--run={root / 'd'}", "--quiet", "--data.split=test", "--knn=false", "--probe=none", "--tsne=false",
                      "--pad.bona_fide=bona_fide", "--pad.n_boot=20"]) == 0
    again = json.loads((root / "d" / "eval" / "five-test" / "report.json").read_text())["pad"]
    assert again["eer"] == res["arms"]["d"]["eer"] and again["hter"] == res["arms"]["d"]["hter"]
    # an interrupted protocol resumes: finished arms are read back, a partial one (no summary yet) resumes from last.pt
    (root / "e" / "summary.json").unlink()
    shutil.rmtree(root / "d")
    w_c = (root / "c" / "checkpoints" / "last.pt").read_bytes()
    assert train_main([f"--resume={root}", "--protocol=leave_one_out", "--quiet"]) == 0
    res2 = json.loads((root / "protocol.json").read_text())
    assert (root / "c" / "checkpoints" / "last.pt").read_bytes() == w_c             # not trained again
    for c in "cde":
        for k in ("eer", "hter", "auc"): assert res2["arms"][c][k] == pytest.approx(res["arms"][c][k]), (c, k)


def test_leave_one_out_bad_options_are_clear(five, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert _loo(runs, "--loo.attacks=c") == 2
    assert "at least two attack classes" in capsys.readouterr().err
    assert train_main(["--protocol=leave_one_out", f"--runs_dir={runs}", "--name=x", "--data.dataset=five", "--quiet"]) == 2
    assert "--loo.bona_fide" in capsys.readouterr().err
    assert _loo(runs, "--task=simclr") == 2
    assert "not supervised" in capsys.readouterr().err


def test_train_stops_its_loader_workers_before_it_returns(five, tmp_path):
    "Protocols train several runs in one process: workers left to the garbage collector cost 5 s each (torch's shutdown timeout)."
    import multiprocessing
    cfg = config_from_dict(TrainConfig, {"data": {"dataset": "five", "size": 16, "batch_size": 10, "num_workers": 2}, "epochs": 1,
                                         "quiet": True, "runs_dir": str(tmp_path), "threads": 1, "name": "w"})
    before = set(multiprocessing.active_children())
    train(cfg)
    assert [p for p in multiprocessing.active_children() if p not in before and p.is_alive()] == []


def test_identity_groups_never_cross_train_val_and_test(tmp_path):
    import torch
    from reprlab.data import ImageDataset
    from reprlab.unseen import loo_tables
    g = np.random.default_rng(0)
    n = 200
    y = g.integers(0, 5, n)
    person = [f"p{int(v)}" for v in g.integers(0, 25, n)]        # each identity has photos of several classes
    splits = {"train": ImageDataset(images=torch.zeros(n, 3, 2, 2, dtype=torch.uint8), labels=y, classes=list(CLASSES),
                                    extras={"person": person}, name="train")}
    cfg = TrainConfig()
    cfg.data.dataset, cfg.loo.bona_fide, cfg.loo.splits, cfg.loo.group = "toy", "a,b", "train", "person"
    for c, path in loo_tables(cfg, tmp_path, splits).items():
        assert set(read_split_table(path, splits)) == {"train", "val", "test"}
        rows = [l.split(",") for l in path.read_text().splitlines()[1:]]
        who = {sp: {person[int(r[1])] for r in rows if r[2] == sp} for sp in ("train", "val", "test")}
        assert not (who["train"] & who["test"]) and not (who["train"] & who["val"]) and not (who["val"] & who["test"]), c
        held = [int(r[1]) for r in rows if r[4] == c]
        assert held and all(r[2] == "test" for r in rows if r[4] == c)        # only the test part's samples of the class
        assert len(held) < int((y == CLASSES.index(c)).sum())
