"""Pipelines (reprlab.pipeline): stages feeding each other by path, markers, reruns of changed stages, exact resume of
an interrupted stage, --skip, the command line and the export stage."""
import json

import numpy as np
import pytest
import torch

import reprlab.experiments as experiments
from reprlab.config import ConfigError
from reprlab.learner import Callback
from reprlab.pipeline import pipeline_main, plan_stages, run_pipeline

FAST = {"quiet": True, "data": {"num_workers": 0}}
SPEC = {"pretrain": {"command": "train", "task": "simclr", "epochs": 1, "knn_every": 0, **FAST,
                     "data": {"num_workers": 0, "batch_size": 128, "pretrain_splits": "train"}},
        "finetune": {"command": "train", "init_encoder": "{pretrain.last}", "epochs": 2, **FAST},
        "evaluate": {"command": "eval", "tsne": False, "probe_epochs": 3, "grid": 0, "quiet": True},
        "explain": {"command": "explain", "n": 2, "quiet": True},
        "export": {"command": "export"}}


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    "The five-stage pipeline run once (pretrain -> fine-tune -> evaluate -> explain -> export)."
    d = tmp_path_factory.mktemp("pipe") / "tour"
    said = []
    return d, run_pipeline(SPEC, d, log=said.append), said


def test_stages_feed_each_other_by_path(finished):
    d, res, said = finished
    test = json.loads((d / "finetune" / "config.json").read_text())
    assert test["init_encoder"] == str(d / "pretrain" / "checkpoints" / "last.pt")            # resolved, not copied
    assert not (d / "finetune" / "pretrain").exists() and (d / "finetune" / "checkpoints" / "last.pt").is_file()
    assert res["evaluate"]["out_dir"].startswith(str(d / "finetune" / "eval"))                 # the run it evaluates
    assert 0 <= res["evaluate"]["accuracy"] <= 1 and 0 <= res["evaluate"]["knn20"] <= 1
    assert res["explain"]["n"] == 2 and (d / "explain" / "index.html").is_file()
    for name in SPEC: assert json.loads((d / "stages" / name / "done.json").read_text())["stage"] == name
    assert [s.split(":")[0] for s in said] == [f"stage {n}" for n in SPEC]


def test_the_export_stage_matches_the_checkpoint(finished):
    ort = pytest.importorskip("onnxruntime")
    d, res, _ = finished
    from reprlab.deploy import checkpoint_segmenter_args
    a = checkpoint_segmenter_args(d / "finetune" / "checkpoints" / "best.pt")
    x = np.random.default_rng(0).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    got = ort.InferenceSession(res["export"]["onnx"]).run(None, {"image": x})[0]
    mean, std = torch.tensor(a["mean"]).view(1, 3, 1, 1), torch.tensor(a["std"]).view(1, 3, 1, 1)
    with torch.no_grad(): want = a["model"]((torch.from_numpy(x).float() / 255 - mean) / std).numpy()
    assert got.shape == (3, 10) and np.abs(got - want).max() < 1e-4


def test_a_second_run_skips_and_a_changed_stage_reruns_with_what_follows(finished):
    d, res, _ = finished
    before = {n: json.loads((d / "stages" / n / "done.json").read_text()) for n in SPEC}
    said = []
    assert run_pipeline(SPEC, d, log=said.append) == res
    assert len(said) == 5 and all("not rerun" in s for s in said)
    plan = run_pipeline(SPEC, d, overrides={"finetune": ["--epochs=1"]}, dry_run=True)["stages"]
    assert [r["status"] for r in plan] == ["finished", "rerun", "rerun", "rerun", "rerun"]
    plan = run_pipeline(SPEC, d, overrides={"explain": ["--n=3"]}, dry_run=True)["stages"]
    assert [r["status"] for r in plan] == ["finished", "finished", "finished", "rerun", "finished"]   # explain changes no model
    assert {n: json.loads((d / "stages" / n / "done.json").read_text()) for n in SPEC} == before      # dry runs write nothing
    skip = run_pipeline(SPEC, d, skip="explain,export", dry_run=True)["stages"]
    assert [r["status"] for r in skip][-2:] == ["skipped (--skip)"] * 2


class _Interrupt(Callback):
    order = 95                                     # after CheckpointCB (90): last.pt of the epoch is on disk

    def after_epoch(self, learn):
        if learn.epoch == 1: raise KeyboardInterrupt


def test_an_interrupted_stage_resumes_to_the_same_weights(tmp_path, monkeypatch):
    spec = {"a": {"command": "train", "epochs": 3, "seed": 1, **FAST}, "b": {"command": "train", "init_encoder": "{a.last}", "epochs": 1, **FAST}}
    straight = run_pipeline(spec, tmp_path / "straight", log=lambda *a: None)
    build = experiments.build_callbacks
    monkeypatch.setattr(experiments, "build_callbacks", lambda *a, **k: build(*a, **k) + [_Interrupt()])
    with pytest.raises(KeyboardInterrupt): run_pipeline(spec, tmp_path / "cut", log=lambda *a: None)
    monkeypatch.setattr(experiments, "build_callbacks", build)
    assert not (tmp_path / "cut" / "stages" / "a" / "done.json").exists()
    said = []
    assert [r["status"] for r in run_pipeline(spec, tmp_path / "cut", dry_run=True)["stages"]] == ["resume", "run"]
    cut = run_pipeline(spec, tmp_path / "cut", log=said.append)
    assert cut["a"]["epochs_run"] == 1 and straight["a"]["epochs_run"] == 3                    # the resume ran the last epoch only
    assert (tmp_path / "cut" / "a" / "history.csv").read_text() == (tmp_path / "straight" / "a" / "history.csv").read_text()
    for s in ("a", "b"):
        assert _same(_weights(tmp_path / "straight" / s / "checkpoints" / "last.pt"), _weights(tmp_path / "cut" / s / "checkpoints" / "last.pt"))
    assert len((tmp_path / "cut" / "a" / "cmd.txt").read_text().splitlines()) == 2          # started, then resumed


def test_bad_pipelines_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="names no earlier stage"):
        plan_stages({"ft": {"command": "train", "init_encoder": "{pre.last}"}}, tmp_path)
    with pytest.raises(ConfigError, match="simclr"):
        plan_stages({"ft": {"command": "train", "task": "supervised", "simclr": {"temperature": 0.2}}}, tmp_path)
    with pytest.raises(ConfigError, match="unknown stage"):
        plan_stages({"ft": {"command": "train"}}, tmp_path, overrides={"pre": ["--lr=1"]})
    with pytest.raises(ConfigError, match="protocol"):
        plan_stages({"ft": {"command": "train", "protocol": "imagewang"}}, tmp_path)
    with pytest.raises(ConfigError, match="reserved"):
        plan_stages({"stages": {"command": "train"}}, tmp_path)
    assert not any(tmp_path.iterdir())


def test_the_command_line(tmp_path, capsys):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"train": {"command": "train", "epochs": 1, **FAST}}))
    assert pipeline_main([f"--pipeline={f}", f"--runs_dir={tmp_path}", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "run" in out and "nothing was run or written" in out and not (tmp_path / "p").exists()
    assert pipeline_main([f"--pipeline={f}", f"--runs_dir={tmp_path}", "--train.epochs=0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert pipeline_main([f"--pipeline={tmp_path / 'missing.json'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert pipeline_main([f"--pipeline={f}", f"--runs_dir={tmp_path}", "--quiet"]) == 0
    assert (tmp_path / "p" / "train" / "checkpoints" / "last.pt").is_file() and (tmp_path / "p" / "pipeline.json").is_file()
