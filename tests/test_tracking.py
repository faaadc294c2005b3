"""Tracking callbacks: progress, history files, JSON lines, run summary, prediction statistics and Comet (offline)."""
import io
import json
import os
import zipfile
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from reprlab.checkpoint import learner_state, save_checkpoint
from reprlab.learner import Callback, Learner, accuracy
from reprlab.tracking import (CometCB, HistoryCB, JsonlLogCB, PredictionStatsCB, ProgressCB, RunSummaryCB,
                              import_comet, prediction_stats, read_history_csv)

PNG = b"\x89PNG\r\n\x1a\n"


def _dls(n=48, bs=16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g); y = (x[:, 0] - x[:, 2] > 0).long()
    batches = [(x[i:i + bs], y[i:i + bs]) for i in range(0, n, bs)]
    return SimpleNamespace(train=batches, valid=batches[:2], device="cpu")


def _learner(cbs=(), metrics=(accuracy,), model=None, loss_func=nn.functional.cross_entropy):
    torch.manual_seed(0)
    return Learner(model or nn.Linear(4, 2), _dls(), loss_func=loss_func, lr=0.1, cbs=list(cbs), metrics=list(metrics))


class Interrupt(Callback):
    "Ctrl-C after training batch `at` of epoch `epoch` (last in order: the other callbacks saw that batch)."
    order = 100
    def __init__(self, epoch, at): self.epoch, self.at = epoch, at
    def after_batch(self, learn):
        if learn.training and learn.epoch == self.epoch and learn.iter == self.at: raise KeyboardInterrupt


def test_history_files_every_epoch(tmp_path):
    seen = []
    class Peek(Callback):   # the files exist and are complete at the start of the next epoch
        def before_epoch(self, learn):
            if learn.epoch: seen.append(len(read_history_csv(tmp_path / "history.csv")))
    learn = _learner([HistoryCB(tmp_path), Peek()])
    learn.fit(3)
    assert seen == [1, 2]
    rows = read_history_csv(tmp_path / "history.csv")
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert list(rows[0]) == ["epoch", "train_loss", "valid_loss", "accuracy"]
    for r, h in zip(rows, learn.history):
        assert r["train_loss"] == pytest.approx(h["train_loss"], rel=1e-12) and r["accuracy"] == pytest.approx(h["accuracy"])
    assert (tmp_path / "history.png").read_bytes()[:8] == PNG
    assert plt.get_fignums() == []
    assert not list(tmp_path.glob(".*tmp*"))          # atomic writes leave no temporary files


def test_history_union_of_keys_and_resume(tmp_path):
    class Sometimes(Callback):   # a metric logged only on odd epochs
        def after_epoch(self, learn):
            if learn.epoch % 2: learn.log["knn"] = 0.5 + learn.epoch / 10
    learn = _learner([HistoryCB(tmp_path, plot=False), Sometimes()])   # plots: test above
    learn.fit(2)
    ckpt = save_checkpoint(learner_state(learn), tmp_path / "last.pt")
    first = read_history_csv(tmp_path / "history.csv")

    learn2 = _learner([HistoryCB(tmp_path, plot=False), Sometimes()])
    learn2.fit(4, resume=ckpt)                         # history restored from the checkpoint, epochs 2 and 3 trained
    rows = read_history_csv(tmp_path / "history.csv")
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert rows[:2] == first                           # the restored epochs are rewritten unchanged
    assert list(rows[0]) == ["epoch", "train_loss", "valid_loss", "accuracy"]   # empty cells are left out on reading
    assert [r.get("knn") for r in rows] == [None, pytest.approx(0.6), None, pytest.approx(0.8)]
    header = (tmp_path / "history.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,valid_loss,accuracy,knn"


def test_jsonl_lines_flushed_and_non_json_values(tmp_path):
    lines_at_epoch = []
    class Odd(Callback):
        order = 1
        def after_validate(self, learn):
            learn.log.update(t=torch.tensor(0.25), i=np.int64(7), f=np.float32(0.5), nan=float("nan"), v=torch.arange(3))
        def before_epoch(self, learn):   # what a `tail -f` would see now
            lines_at_epoch.append(len((tmp_path / "log.jsonl").read_text().splitlines()))
    learn = _learner([JsonlLogCB(tmp_path, every=2), Odd()])
    learn.fit(2)
    text = (tmp_path / "log.jsonl").read_text()
    assert "NaN" not in text
    recs = [json.loads(line) for line in text.splitlines()]   # every line is JSON on its own
    assert [r["event"] for r in recs] == ["start", "step", "epoch", "step", "step", "epoch", "end"]
    assert lines_at_epoch == [1, 3]                     # start line, then start + step + epoch: flushed as written
    assert [r["step"] for r in recs if r["event"] == "step"] == [2, 4, 6]
    assert all(r["lr"] == 0.1 and isinstance(r["loss"], float) for r in recs if r["event"] == "step")
    e = recs[2]
    assert (e["epoch"], e["t"], e["i"], e["f"], e["nan"], e["v"]) == (0, 0.25, 7, 0.5, None, [0, 1, 2])
    assert e["valid_loss"] == pytest.approx(learn.history[0]["valid_loss"]) and e["time"] >= 0
    assert recs[0]["n_epochs"] == 2 and recs[-1]["status"] == "completed"
    learn.fit(1)                                         # a second fit appends
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == len(recs) + 4


def test_interrupt_closes_bars_and_reports(tmp_path):
    out = io.StringIO()
    prog, js = ProgressCB(file=out), JsonlLogCB(tmp_path)
    learn = _learner([prog, js, RunSummaryCB(tmp_path, show=False), HistoryCB(tmp_path), Interrupt(epoch=1, at=1)])
    with pytest.raises(KeyboardInterrupt): learn.fit(3)
    assert prog.bar is None and js.f is None            # bars closed, log file closed
    recs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in recs] == ["start", "epoch", "end"] and recs[-1]["status"] == "interrupted"
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s == learn.summary
    assert (s["status"], s["epochs_run"], s["epochs_total"], s["steps"]) == ("interrupted", 1, 1, 5)
    assert s["train_samples"] == 48 + 32                # 3 batches of epoch 0, 2 of epoch 1
    assert [r["epoch"] for r in read_history_csv(tmp_path / "history.csv")] == [0]   # epoch 1 never finished training


def test_progress_table_and_silence(monkeypatch):
    out = io.StringIO()
    learn = _learner([ProgressCB(file=out, mininterval=0, bars=True)])
    learn.fit(2)
    lines = out.getvalue().replace("\r", "\n").splitlines()
    table = [line.split() for line in lines if line.strip() and "|" not in line]
    assert table[0] == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert [r[0] for r in table[1:]] == ["0", "1"]
    assert float(table[2][1]) == pytest.approx(learn.history[1]["train_loss"], abs=1e-4)
    assert any("epoch 1 valid" in line and "loss=" in line for line in lines)   # a bar per pass with the running loss
    out = io.StringIO()                                  # not a terminal (a log file): the table rows, no bars
    _learner([ProgressCB(file=out, mininterval=0)]).fit(2)
    assert "\r" not in out.getvalue() and "loss=" not in out.getvalue()
    assert [line.split()[0] for line in out.getvalue().splitlines()] == ["epoch", "0", "1"]
    for env, show in [({"REPRLAB_QUIET": "1"}, True), ({"RANK": "1"}, True), ({}, False)]:
        with monkeypatch.context() as m:
            for k, v in env.items(): m.setenv(k, v)
            out = io.StringIO()
            _learner([ProgressCB(show=show, file=out)]).fit(1)
            assert out.getvalue() == "", env


def test_run_summary_multiview_and_monitor(tmp_path, capsys):
    class TwoViews(nn.Module):   # a "method": dict batch with two views, returns dict(loss=...)
        def __init__(self): super().__init__(); self.lin = nn.Linear(4, 2)
        def forward(self, batch):
            v1, v2 = batch["image"]
            logits = self.lin(v1)
            return dict(loss=nn.functional.cross_entropy(logits, batch["label"]) + 0 * self.lin(v2).sum(), logits=logits)
    b = [{"image": [x, x + 0.1], "label": y} for x, y in _dls().train]
    torch.manual_seed(0)
    learn = Learner(TwoViews(), SimpleNamespace(train=b, valid=b[:1]), lr=0.1, metrics=[accuracy],
                    cbs=[RunSummaryCB(tmp_path, monitor="accuracy", mode="max")])
    learn.fit(3)
    s = learn.summary
    assert (s["epochs_run"], s["epochs_total"], s["train_samples"], s["train_images"]) == (3, 3, 3 * 48, 3 * 96)
    accs = [h["accuracy"] for h in learn.history]
    assert s["best_value"] == max(accs) and s["best_epoch"] == accs.index(max(accs))
    assert s["train_images_per_s"] == pytest.approx(2 * s["train_samples_per_s"], rel=1e-2)
    assert s["wall_time_s"] >= s["train_time_s"] > 0
    assert json.loads((tmp_path / "summary.json").read_text()) == s
    assert "run completed: 3 epochs" in capsys.readouterr().out
    with pytest.raises(ValueError, match="mode"): RunSummaryCB(mode="lowest")


def test_prediction_stats_catch_constant_predictor():
    class Constant(nn.Module):
        def __init__(self, n): super().__init__(); self.b = nn.Parameter(torch.linspace(-1, 1, n))
        def forward(self, x): return self.b.expand(len(x), -1)
    learn = _learner([PredictionStatsCB()], model=Constant(3))
    learn.fit(2)
    for h in learn.history: assert h["pred_std"] == pytest.approx(0, abs=1e-12) and h["pct_top_class"] == 1.0
    assert learn.log["pred_mean"] == pytest.approx(learn.model.b.detach().softmax(0).max().item(), rel=1e-6)
    # a real binary classifier, checked against numpy on the same validation logits
    cb = PredictionStatsCB()
    learn = _learner([cb], metrics=(), model=nn.Linear(4, 1),
                     loss_func=lambda o, y: nn.functional.binary_cross_entropy_with_logits(o[:, 0], y.float()))
    learn.fit(1)
    p = torch.sigmoid(learn.predict(learn.dls.valid)[:, 0]).double().numpy()
    assert learn.log["pred_mean"] == pytest.approx(p.mean()) and learn.log["pred_std"] == pytest.approx(p.std())
    assert learn.log["pct_positive"] == pytest.approx((p > 0.5).mean())
    with pytest.raises(KeyError, match="logits"):   # a dict model output without logits
        cb.after_pred(SimpleNamespace(training=False, epoch=0, n_epochs=1, preds={"loss": torch.tensor(0.0)}))
    st = prediction_stats(torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 1.0], [2.0, 0.0]]))
    assert st["pct_top_class"] == 0.75


@pytest.fixture
def no_comet_key(monkeypatch):
    monkeypatch.delenv("COMET_API_KEY", raising=False)


def test_comet_offline_archive(tmp_path, no_comet_key):
    secret = "cfg-secret-7c1d2b"   # a key-like value in the config must not reach the archive
    cfg = {"lr": 0.1, "model": {"name": "linear", "width": 2}, "comet": {"api_key": secret}}
    learn = _learner([HistoryCB(tmp_path), CometCB(project="reprlab-test", name="tiny", path=tmp_path, config=cfg)])
    learn.fit(2)
    zips = list(tmp_path.glob("*.zip"))
    assert len(zips) == 1
    with zipfile.ZipFile(zips[0]) as z:
        blob = b"".join(z.read(n) for n in z.namelist())
        msgs = [json.loads(line) for line in z.read("messages.json").decode().splitlines()]
    assert secret.encode() not in blob
    params = {m["payload"]["param"]["paramName"]: m["payload"]["param"]["paramValue"] for m in msgs
              if m["type"] == "parameter_msg" and m["payload"]["param"]["source"] == "manual"}
    assert params == {"lr": 0.1, "model.name": "linear", "model.width": 2}
    valid = {m["payload"]["metric"]["epoch"]: m["payload"]["metric"]["metricValue"] for m in msgs
             if m["type"] == "metric_msg" and m["payload"]["metric"]["metricName"] == "valid_loss"}
    assert valid == {0: pytest.approx(learn.history[0]["valid_loss"]), 1: pytest.approx(learn.history[1]["valid_loss"])}
    figs = [m["payload"]["additional_params"]["figName"] for m in msgs if m["type"] == "file_upload"]
    assert figs == ["history"]
    assert plt.get_fignums() == []


def test_comet_online_when_key_set_never_logs_key(tmp_path, monkeypatch):
    comet_ml = import_comet()
    key = "reprlab-fake-comet-key-9f8e7d6c5b4a"
    monkeypatch.setenv("COMET_API_KEY", key)
    made = []
    class FakeExperiment:
        def __init__(self, **kwargs): self.kwargs, self.calls = kwargs, []; made.append(self)
        def __getattr__(self, name): return lambda *a, **k: self.calls.append((name, a, k))
    monkeypatch.setattr(comet_ml, "Experiment", FakeExperiment)
    monkeypatch.setattr(comet_ml, "OfflineExperiment", None)   # would fail if offline mode were picked
    cfg = {"lr": 0.1, "api_key": key, "comet": {"API_KEY": key, "workspace": "w"}, "cmd": f"train --key {key}"}
    learn = _learner([HistoryCB(tmp_path), JsonlLogCB(tmp_path), RunSummaryCB(tmp_path, show=False),
                      CometCB(project="p", name="n", path=tmp_path, config=cfg)])
    learn.fit(2)
    (exp,) = made
    kw = exp.kwargs
    assert "api_key" not in kw and key not in repr(kw)
    assert kw["project_name"] == "p" and kw["log_env_network"] is False and kw["log_env_host"] is False
    assert not any(kw[k] for k in ("log_code", "log_git_metadata", "log_git_patch", "parse_args", "auto_output_logging",
                                   "auto_param_logging", "auto_metric_logging", "log_env_details"))
    names = [c[0] for c in exp.calls]
    assert names[:2] == ["set_name", "log_parameters"] and names.count("log_metrics") == 2 and names[-1] == "end"
    assert key not in repr(exp.calls)
    assert exp.calls[1][1][0] == {"lr": 0.1, "comet.workspace": "w", "cmd": "<redacted>"}
    assert ("log_image", (str(tmp_path / "history.png"),)) in [c[:2] for c in exp.calls]
    assert exp.calls[2][2]["epoch"] == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"history.csv", "history.png", "log.jsonl", "summary.json"}
    assert all(key.encode() not in p.read_bytes() for p in written)


def test_comet_offline_needs_a_directory(no_comet_key):
    with pytest.raises(ValueError, match="offline_dir"):
        _learner([CometCB()]).fit(1)


def test_last_epoch_reported_when_early_stopping_cancels_in_after_epoch(tmp_path):
    from reprlab.monitors import EarlyStoppingCB
    # 'max' on a falling loss: no improvement at epoch 1, so EarlyStoppingCB raises CancelFitException in after_epoch
    learn = _learner([EarlyStoppingCB("valid_loss", mode="max", patience=1), HistoryCB(tmp_path, plot=False),
                      JsonlLogCB(tmp_path), RunSummaryCB(show=False)])
    learn.fit(5)
    assert len(learn.history) == 2
    assert [r["epoch"] for r in read_history_csv(tmp_path / "history.csv")] == [0, 1]
    recs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in recs] == ["start", "epoch", "epoch", "end"] and recs[-1]["status"] == "cancelled"
    assert (learn.summary["status"], learn.summary["epochs_run"]) == ("cancelled", 2)


def test_a_failing_before_fit_is_not_masked_by_the_run_callbacks(tmp_path):
    "A callback that fails in before_fit (e.g. a schedule too short for its steps) surfaces its own error."
    from reprlab.data import ImageDataset
    from reprlab.experiments import TrainConfig, build_callbacks
    from reprlab.loaders import DataLoaders, Loader

    class Boom(Callback):
        order = -100
        def before_fit(self, learn): raise ValueError("boom: before_fit")
    ds = ImageDataset(images=torch.zeros(8, 3, 8, 8, dtype=torch.uint8), labels=[0, 1] * 4, classes=["a", "b"])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
    learn = Learner(model, DataLoaders(Loader(ds, 4), Loader(ds, 4)), loss_func=torch.nn.functional.cross_entropy,
                    cbs=[Boom(), *build_callbacks(TrainConfig(quiet=True), tmp_path)], device="cpu")
    with pytest.raises(ValueError, match="boom"): learn.fit(1)
