"""--task=saliency_hnet end to end on a small generated saliency folder: every stage, resume, skip, rerun on change,
exact resume of an interrupted stage, few-shot adaptation, s02-eval / s03-explain on the model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reprlab.checkpoint import load_checkpoint
from reprlab.cli import train_main
from reprlab.config import ConfigError
from reprlab.eval_run import load_run
from reprlab.experiments import parse_train_args
from reprlab.learner import Callback
from reprlab.saliency_pipeline import STAGES, SaliencyPipeline

TASKS = "fixations,spectral_residual,centre_bias,frequency_tuned"
TINY = ["--task=saliency_hnet", "--data.dataset=tinysal", f"--saliency_hnet.tasks={TASKS}", "--saliency_hnet.holdout=frequency_tuned",
        "--saliency_hnet.height=32", "--saliency_hnet.width=48", "--saliency_hnet.n_test=8", "--saliency_hnet.n_val=6",
        "--saliency_hnet.decoder=8,8", "--saliency_hnet.hidden=16", "--saliency_hnet.emb_dim=4", "--saliency_hnet.separate_epochs=1",
        "--saliency_hnet.regression_steps=10", "--saliency_hnet.one_task_epochs=1", "--saliency_hnet.catchup_epochs=1",
        "--saliency_hnet.few_shot=3,all", "--saliency_hnet.adapt_steps=4", "--saliency_hnet.lr_decay_epochs=1",
        "--epochs=2", "--data.batch_size=8", "--quiet", "--threads=1", "--amp=false", "--freeze_encoder_epochs=1"]


def make_saliency_folder(root: Path, n: int = 30, size=(40, 60), seed: int = 0) -> Path:
    "Images with one bright blob each and 3 viewers' fixations around it (and a few elsewhere), in the scene-saliency layout."
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    rows = ["image,viewer,row,col,onset_s,duration_s"]
    for i in range(n):
        cy, cx = rng.uniform(8, h - 8), rng.uniform(8, w - 8)
        img = rng.integers(40, 90, (h, w, 3)).astype(np.float64)
        img += 150 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0)[..., None] * np.array([1.0, 0.6, 0.3])
        name = f"{i + 1:03d}"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / f"{name}.jpg", quality=95)
        for v in range(3):
            for _ in range(4):
                r, c = (cy + rng.normal(0, 2), cx + rng.normal(0, 2)) if rng.random() < 0.8 else (rng.uniform(0, h), rng.uniform(0, w))
                rows.append(f"{name},{v},{min(max(r, 0), h - 1):.1f},{min(max(c, 0), w - 1):.1f},0.1,0.2")
    (root / "fixations.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    root = tmp_path_factory.mktemp("sal")
    make_saliency_folder(root / "tinysal")
    reg = root / "reg.json"
    reg.write_text(json.dumps({"tinysal": {"root": str(root / "tinysal"), "layout": "saliency"}}))
    mp = pytest.MonkeyPatch(); mp.setenv("REPRLAB_DATASETS", str(reg)); mp.setenv("REPRLAB_CACHE", str(root / "cache"))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def run(reg):
    assert train_main(TINY + [f"--runs_dir={reg / 'runs'}", "--name=p"]) == 0
    return reg / "runs" / "p"


def test_every_stage_finishes_and_exports(run):
    for s in STAGES:
        assert json.loads((run / "stages" / s / "done.json").read_text())["stage"] == s
    for s in ("pretrain_weights", "pretrain_one_task", "train_catchup", "train", "few_shot"):
        assert (run / "export" / f"{s}.pt").is_file()
    assert (run / "stages" / "pretrain_weights" / "stages" / "separate_fixations" / "mnet.pt").is_file()
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["stage"] == "few_shot" and ck["model_spec"]["kwargs"]["tasks"] == TASKS.split(",")
    m = load_run(run)["model"]                                        # the adapted model rebuilds from its recipe
    assert m.tasks[-1] == "frequency_tuned"
    res = json.loads((run / "stages" / "test" / "metrics.json").read_text())["tasks"]
    assert set(res) == set(TASKS.split(","))
    for r in res.values():
        assert -1 <= r["cc"] <= 1 and 0 <= r["sim"] <= 1 and r["kld"] >= 0 and 0 <= r["auc_judd"] <= 1
    for t in TASKS.split(","): assert (run / "stages" / "test" / f"grid_{t}.png").stat().st_size > 1000
    rows = (run / "stages" / "few_shot" / "few_shot.csv").read_text().splitlines()
    assert rows[0].startswith("k,") and [r.split(",")[0] for r in rows[1:]] == ["3", str(30 - 8 - 6)]
    maps = sorted((run / "stages" / "run" / "maps" / "centre_bias").glob("*.png"))
    assert len(maps) == 8 and Image.open(maps[0]).size == (60, 40)    # each image's own size
    assert (run / "stages" / "train" / "samples_fixations.png").is_file()
    hist = (run / "stages" / "train" / "history.csv").read_text().splitlines()
    assert len(hist) == 3 and "valid_loss" in hist[0]


def test_centre_task_learns_a_centred_map(run):
    m = load_run(run)["model"]
    pipe = SaliencyPipeline(parse_train_args(TINY), run)
    d = pipe.data()
    from reprlab.saliency import normalized
    p = m.predict_maps(normalized(d.sset.images[:4], d.stats), "centre_bias").mean(0)
    h, w = p.shape
    centre = p[h // 4: 3 * h // 4, w // 4: 3 * w // 4].mean()
    border = torch.cat([p[:3].flatten(), p[-3:].flatten()]).mean()
    assert centre > border


def test_a_rerun_skips_finished_stages_and_a_changed_stage_reruns(run, capsys):
    assert train_main(TINY + [f"--resume={run}"]) == 0
    out = capsys.readouterr().out
    assert all(f"stage {s}: finished before" in out for s in STAGES)
    before = load_checkpoint(run / "export" / "train.pt")["model"]
    assert train_main([a for a in TINY if "adapt_steps" not in a] + [f"--resume={run}", "--saliency_hnet.adapt_steps=5"]) == 0
    out = capsys.readouterr().out
    for s in ("pretrain_weights", "pretrain_one_task", "train_catchup", "train"): assert f"stage {s}: finished before" in out
    for s in ("few_shot", "test", "run"): assert f"stage {s}: its settings" in out
    after = load_checkpoint(run / "export" / "train.pt")["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)


class _StopAt(Callback):
    def __init__(self, epoch, batch): self.at = (epoch, batch)
    def after_batch(self, learn):
        if learn.training and (learn.epoch, learn.iter) == self.at: raise KeyboardInterrupt


def test_an_interrupted_stage_resumes_to_the_same_weights(reg, tmp_path, monkeypatch):
    argv = TINY + ["--skip=few_shot,test,run", f"--runs_dir={tmp_path}", "--saliency_hnet.holdout="]
    argv = [a for a in argv if "holdout=frequency" not in a]
    assert train_main(argv + ["--name=a"]) == 0
    orig = SaliencyPipeline.fit
    def fit(self, d, model, tr, va, epochs, lr, cbs=()):
        if d.name == "train": cbs = [*cbs, _StopAt(1, 1)]
        return orig(self, d, model, tr, va, epochs, lr, cbs)
    monkeypatch.setattr(SaliencyPipeline, "fit", fit)
    assert train_main(argv + ["--name=b"]) == 130                      # Ctrl-C mid-epoch in the train stage
    assert not (tmp_path / "b" / "stages" / "train" / "done.json").exists()
    monkeypatch.setattr(SaliencyPipeline, "fit", orig)
    assert train_main(argv + [f"--resume={tmp_path / 'b'}"]) == 0
    a, b = (load_checkpoint(tmp_path / n / "export" / "train.pt")["model"] for n in ("a", "b"))
    for k in a: assert torch.equal(a[k], b[k]), k


def test_bad_options_are_one_line_errors(reg, tmp_path):
    base = [a for a in TINY if "tasks=" not in a]
    with pytest.raises(ConfigError, match="--skip names unknown stages"):
        from reprlab.experiments import check_config
        check_config(parse_train_args(TINY + ["--skip=warmup", f"--runs_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="applies to tasks that run in stages"):
        check_config(parse_train_args(["--task=supervised", "--skip=train", f"--runs_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="names a task twice"):
        check_config(parse_train_args(base + ["--saliency_hnet.tasks=fixations,fixations", f"--runs_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="unknown saliency task 'nosuch'"):
        SaliencyPipeline(parse_train_args(base + ["--saliency_hnet.tasks=fixations,nosuch"]), tmp_path / "x").data()


def test_s02_eval_reports_metrics_per_task_equal_to_the_test_stage(run):
    from reprlab.cli import eval_main
    assert eval_main([f"--run={run}", "--quiet", "--grid=3"]) == 0
    rep = json.loads((run / "eval" / "tinysal-test" / "report.json").read_text())
    assert set(rep["saliency"]["tasks"]) == set(TASKS.split(","))
    stage = json.loads((run / "stages" / "test" / "metrics.json").read_text())["tasks"]
    for t, m in stage.items():
        for k, v in m.items(): assert rep["saliency"]["metrics"][t][k] == pytest.approx(v, abs=1e-9), (t, k)
    assert (run / "eval" / "tinysal-test" / "saliency_centre_bias.png").is_file()
    assert "| fixations |" in (run / "eval" / "tinysal-test" / "report.md").read_text()
    from reprlab.cli import eval_main as em
    assert em([f"--run={run}", "--quiet", "--data.split=nosuch"]) == 2


def test_s03_explain_writes_a_grid_per_task(run):
    from reprlab.cli import explain_main
    assert explain_main([f"--run={run}", "--n=3"]) == 0
    for t in TASKS.split(","): assert (run / "explain" / "saliency" / f"grid_{t}.png").stat().st_size > 1000


def test_the_data_tour_shows_fixations_and_density_maps(reg, tmp_path, capsys):
    from reprlab.cli import data_main
    assert data_main(["--dataset=tinysal", f"--out={tmp_path}", "--n_images=3"]) == 0
    assert "fixations per image mean 12.0" in capsys.readouterr().out
    assert (tmp_path / "images.png").stat().st_size > 1000 and json.loads((tmp_path / "stats.json").read_text())["images"] == 30


def test_comet_offline_logs_sample_maps_per_task(reg, tmp_path, monkeypatch):
    import zipfile
    monkeypatch.delenv("COMET_API_KEY", raising=False)
    argv = [a for a in TINY if "holdout" not in a and "epochs=2" not in a] + ["--skip=pretrain_weights,pretrain_one_task,train_catchup,test,run", "--comet",
                                                       "--epochs=1", f"--runs_dir={tmp_path}", "--name=c"]
    assert train_main(argv) == 0
    zips = list((tmp_path / "c" / "stages" / "train").glob("*.zip"))
    assert len(zips) == 1
    with zipfile.ZipFile(zips[0]) as z:
        msgs = [json.loads(line) for line in z.read("messages.json").decode().splitlines()]
    figs = {m["payload"]["additional_params"]["figName"] for m in msgs if m["type"] == "file_upload"}
    assert {f"samples_{t}" for t in TASKS.split(",")} <= figs


def test_a_folder_of_user_maps_is_a_task_and_missing_maps_are_listed(reg, tmp_path):
    from reprlab.data import DataError
    from reprlab.saliency_data import load_saliency, save_map_folder
    s = load_saliency("tinysal", size=(32, 48), progress=False)
    keep = s.names[5:]
    save_map_folder(tmp_path / "maps", "mine", keep, np.random.default_rng(0).random((len(keep), 40, 60)).astype(np.float32))
    base = [a for a in TINY if "tasks=" not in a and "holdout" not in a] + ["--saliency_hnet.tasks=fixations,mine",
                                                                              f"--saliency_hnet.maps_root={tmp_path / 'maps'}"]
    with pytest.raises(DataError, match="001"):
        SaliencyPipeline(parse_train_args(base), tmp_path / "x").data()
    d = SaliencyPipeline(parse_train_args(base + ["--saliency_hnet.on_missing=skip"]), tmp_path / "y").data()
    assert d.keep["mine"] == set(range(5, 30)) and d.keep["fixations"] == set(range(30))
    assert d.maps["mine"].shape == (30, 32, 48) and float(d.maps["mine"][:5].abs().sum()) == 0.0


def test_the_run_stage_maps_a_folder_of_images_at_their_own_sizes(reg, tmp_path):
    import shutil
    src = tmp_path / "run_src"
    make_saliency_folder(src, n=2, size=(50, 70), seed=3)
    shutil.copy(src / "images" / "001.jpg", tmp_path / "a.jpg")
    Image.open(src / "images" / "002.jpg").resize((33, 21)).save(tmp_path / "b.png")
    folder = tmp_path / "in"; folder.mkdir()
    for f in ("a.jpg", "b.png"): shutil.move(str(tmp_path / f), folder / f)
    (folder / "notes.txt").write_text("not an image")
    argv = [a for a in TINY if "holdout" not in a] + ["--skip=pretrain_weights,pretrain_one_task,train_catchup,test", "--epochs=1",
                                                       f"--runs_dir={tmp_path}", "--name=r", f"--saliency_hnet.run_folder={folder}"]
    argv = [a for a in argv if "epochs=2" not in a]
    assert train_main(argv) == 0
    out = tmp_path / "r" / "stages" / "run" / "maps"
    for t in ("fixations", "frequency_tuned"):
        assert Image.open(out / t / "a.png").size == (70, 50) and Image.open(out / t / "b.png").size == (33, 21)


def test_dry_run_checks_the_data_and_model_and_writes_nothing(reg, tmp_path, capsys):
    assert train_main(TINY + [f"--runs_dir={tmp_path}", "--name=d", "--dry_run"]) == 0
    assert "dry run" in capsys.readouterr().out and not (tmp_path / "d" / "stages").exists()
    base = [a for a in TINY if "tasks=" not in a and "holdout" not in a]
    assert train_main(base + ["--saliency_hnet.tasks=fixations,nosuch", f"--runs_dir={tmp_path}", "--name=e", "--dry_run"]) == 2
