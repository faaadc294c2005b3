"""Grid search (reprlab.grid, reprlab.launch): expansion over deep copies, run names, markers and exact resume, every
launcher (in this process, worker processes, submitit's local executor, scripts run by bash) giving the same runs, and
the results table checked against the runs' own history files."""
import csv
import json
import os
import subprocess

import pytest
import torch

import reprlab.experiments as experiments
from reprlab.config import ConfigError
from reprlab.grid import Sweep, expand_grid, read_param_grid, run_one, write_results
from reprlab.launch import GridConfig, grid, grid_main
from reprlab.learner import Callback

BASE = {"epochs": 1, "quiet": True, "data": {"num_workers": 0}}


def _final(run):
    rows = list(csv.DictReader(open(run / "history.csv")))
    return {k: float(v) for k, v in rows[-1].items()}


def _weights(run):
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]


def _files(tmp_path, base, g):
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "grid.json").write_text(json.dumps(g))
    return dict(base=tmp_path / "base.json", param_grid=tmp_path / "grid.json", runs_dir=tmp_path)


def test_expansion_copies_the_base_and_names_runs_after_their_values():
    base = {**BASE, "data": {"num_workers": 0, "size": 32}}
    frozen = json.dumps(base, sort_keys=True)
    runs = expand_grid(base, [["lr", [0.001, 0.01, 0.1]], ["data.batch_size", [16, 32]]])
    assert json.dumps(base, sort_keys=True) == frozen
    assert len(runs) == 6 and len({r["name"] for r in runs}) == 6
    assert [r["values"] for r in runs[:2]] == [{"lr": 0.001, "data.batch_size": 16}, {"lr": 0.001, "data.batch_size": 32}]
    assert runs[1]["config"]["data"] == {"num_workers": 0, "size": 32, "batch_size": 32}
    runs[0]["config"]["data"]["size"] = 99
    assert runs[1]["config"]["data"]["size"] == 32                                         # deep copies
    with pytest.raises(ConfigError, match="entry 1"): read_param_grid([["lr", [0.1]], ["seed", 3]])
    with pytest.raises(ConfigError, match="run lr=-0.1"): expand_grid(base, [["lr", [-0.1]]])
    with pytest.raises(ConfigError, match="names and places the runs itself"): expand_grid(base, [["runs_dir", ["x"]]])


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    "Four one-epoch runs in this process (the default launcher)."
    d = tmp_path_factory.mktemp("grid")
    res = grid(GridConfig(**_files(d, BASE, [["lr", [0.001, 0.004]], ["seed", [0, 1]]]), quiet=True))
    return d, res


def test_the_results_table_matches_the_runs_history(local_sweep):
    d, res = local_sweep
    sw = Sweep(res["sweep"])
    assert res["codes"] == {n: 0 for n in sw.runs} and all(sw.state(n) == "done" for n in sw.runs)
    for r in res["rows"]: assert r["value"] == pytest.approx(_final(sw.run_dir(r["run"]))["accuracy"])
    assert [r["value"] for r in res["rows"]] == sorted((r["value"] for r in res["rows"]), reverse=True)
    rows = list(csv.DictReader(open(res["csv"])))
    assert [r["run"] for r in rows] == [r["run"] for r in res["rows"]] and rows[0]["lr"] in ("0.001", "0.004")
    assert res["png"].stat().st_size > 5000 and "| 1 |" in res["md"].read_text()
    low = write_results(sw, metric="final.valid_loss", mode="min")["rows"]
    assert [r["value"] for r in low] == sorted(_final(sw.run_dir(n))["valid_loss"] for n in sw.runs)


def test_a_second_launch_runs_nothing_and_a_changed_base_reruns_only_what_changed(local_sweep, capsys):
    d, res = local_sweep
    sw = Sweep(res["sweep"])
    stamps = {n: sw.marker(n)["finished"] for n in sw.runs}
    again = grid(GridConfig(**_files(d, BASE, [["lr", [0.001, 0.004]], ["seed", [0, 1]]]), quiet=True))
    assert again["codes"] == {} and {n: sw.marker(n)["finished"] for n in sw.runs} == stamps
    assert "4 finished before, 0 to run" in capsys.readouterr().out
    plan = grid(GridConfig(**_files(d, {**BASE, "epochs": 2}, [["lr", [0.001, 0.004]], ["seed", [0, 1]]]), dry_run=True))
    assert len(plan["runs"]) == 4 and "todo" in capsys.readouterr().out
    assert {n: Sweep(res["sweep"]).marker(n)["finished"] for n in sw.runs} == stamps          # a dry run writes nothing


def test_worker_processes_give_the_same_runs_as_this_process(local_sweep, tmp_path):
    d, res = local_sweep
    out = grid(GridConfig(**_files(tmp_path, BASE, [["lr", [0.004]], ["seed", [0, 1]]]), workers=2, quiet=True))
    assert out["codes"] == {"lr=0.004,seed=0": 0, "lr=0.004,seed=1": 0}
    for n in out["codes"]:
        assert _final(tmp_path / "base-grid" / n) == _final(d / "base-grid" / n)             # same seed, same numbers
        w, v = _weights(tmp_path / "base-grid" / n), _weights(d / "base-grid" / n)
        assert all(torch.equal(w[k], v[k]) for k in w)
    assert (tmp_path / "base-grid" / "logs" / "lr=0.004,seed=0.log").is_file()


class _Interrupt(Callback):
    order = 95

    def after_epoch(self, learn):
        if learn.epoch == 0: raise KeyboardInterrupt


def test_an_interrupted_run_resumes_to_the_same_weights(local_sweep, tmp_path, monkeypatch):
    d, _ = local_sweep
    base = {**BASE, "epochs": 2}
    sw = Sweep.create(tmp_path / "s", base, [["seed", [1]]])
    build = experiments.build_callbacks
    monkeypatch.setattr(experiments, "build_callbacks", lambda *a, **k: build(*a, **k) + [_Interrupt()])
    assert run_one(sw, "seed=1") == 130 and sw.state("seed=1") == "started"
    monkeypatch.setattr(experiments, "build_callbacks", build)
    assert run_one(sw, "seed=1") == 0 and sw.state("seed=1") == "done"
    ref = Sweep.create(tmp_path / "ref", base, [["seed", [1]]])
    assert run_one(ref, "seed=1") == 0
    w, v = _weights(sw.run_dir("seed=1")), _weights(ref.run_dir("seed=1"))
    assert all(torch.equal(w[k], v[k]) for k in w)
    assert "--resume=" in (sw.run_dir("seed=1") / "cmd.txt").read_text().splitlines()[-1]


def test_scripts_run_by_bash_then_collect(tmp_path, capsys):
    files = _files(tmp_path, BASE, [["lr", [0.002]], ["seed", [0, 1]]])
    out = grid(GridConfig(**files, launcher="scripts", threads=1))
    sub = out["submit_all"]
    r = subprocess.run(["bash", str(sub)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "base-grid" / "results.md").read_text().count("| done |") == 2        # each run rewrote the table
    res = grid(GridConfig(**files, collect=True))
    assert [x["state"] for x in res["rows"]] == ["done", "done"] and all(x["value"] is not None for x in res["rows"])
    r = subprocess.run(["bash", str(sub)], capture_output=True, text=True, timeout=600)          # again: both skip themselves
    assert r.returncode == 0 and r.stdout.count("finished before with this config") == 2


def test_slurm_path_with_submitits_local_executor(tmp_path):
    pytest.importorskip("submitit")
    files = _files(tmp_path, BASE, [["lr", [0.003]], ["seed", [0, 1]]])
    code = grid_main([f"--base={files['base']}", f"--param_grid={files['param_grid']}", f"--runs_dir={tmp_path}", "--launcher=slurm",
                      "--slurm.cluster=local", "--slurm.wait", "--slurm.cpus=1", "--quiet"])
    assert code == 0
    sw = Sweep(tmp_path / "base-grid")
    assert all(sw.state(n) == "done" for n in sw.runs)
    assert set(json.loads((sw.path / "slurm" / "jobs.json").read_text())) == set(sw.runs)
    assert (sw.path / "results.md").is_file()


def test_a_pipeline_sweep_reads_its_stage_figures(tmp_path):
    base = {"train": {"command": "train", **BASE}, "evaluate": {"command": "eval", "tsne": False, "probe": "none", "grid": 0, "quiet": True}}
    res = grid(GridConfig(**_files(tmp_path, base, [["train.lr", [0.001, 0.004]]]), metric="evaluate.knn20", quiet=True))
    assert res["codes"] == {"lr=0.001": 0, "lr=0.004": 0}
    for r in res["rows"]:
        done = json.loads((tmp_path / "base-grid" / r["run"] / "stages" / "evaluate" / "done.json").read_text())
        assert r["value"] == pytest.approx(done["result"]["knn20"])
    assert res["rows"][0]["value"] >= res["rows"][1]["value"]


def test_a_preempted_slurm_job_is_requeued_and_resumes_exactly(tmp_path):
    "submitit's local executor sends the job the preemption signal; GridJob.checkpoint requeues it; the run resumes to the same weights."
    submitit = pytest.importorskip("submitit")
    import signal
    import time
    from pathlib import Path
    from reprlab.launch import GridJob
    base = {**BASE, "epochs": 8, "seed": 3}
    sw = Sweep.create(tmp_path / "s", base, [["lr", [0.002]]])
    ex = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="local")
    ex.update_parameters(timeout_min=10, cpus_per_task=1)
    job = ex.submit(GridJob(sw.path, "lr=0.002", threads=1))
    hist = sw.run_dir("lr=0.002") / "history.csv"
    t0 = time.time()
    while not (hist.is_file() and len(hist.read_text().splitlines()) >= 3):     # two epochs (and their checkpoint) done
        assert time.time() - t0 < 500 and not job.done(), "the job ended or never trained"
        time.sleep(0.1)
    # what SLURM sends before a preemption or a timeout, to the job's task (submitit's local controller does not forward it)
    kids = Path(f"/proc/{job._process.pid}/task/{job._process.pid}/children")
    if not kids.is_file(): pytest.skip("needs Linux /proc to find the job's task")
    for pid in kids.read_text().split(): os.kill(int(pid), signal.SIGUSR2)
    assert job.result() == 0 and sw.state("lr=0.002") == "done"
    cmds = (sw.run_dir("lr=0.002") / "cmd.txt").read_text().splitlines()
    assert len(cmds) == 2 and "--resume=" in cmds[1]                             # started, then resumed after the requeue
    ref = Sweep.create(tmp_path / "ref", base, [["lr", [0.002]]])
    assert run_one(ref, "lr=0.002") == 0
    w, v = _weights(sw.run_dir("lr=0.002")), _weights(ref.run_dir("lr=0.002"))
    assert all(torch.equal(w[k], v[k]) for k in w)
    assert (sw.run_dir("lr=0.002") / "history.csv").read_text() == (ref.run_dir("lr=0.002") / "history.csv").read_text()
