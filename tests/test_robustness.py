"""Issue 16, as a new user meets it: run dirs that never lose or mix data, and one clear line (no traceback, no orphan
run dir) for every ordinary mistake. `s01-train`'s `main` runs in-process where it can (fast), in a subprocess where a
signal or a second process is the point."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reprlab.checkpoint import load_checkpoint
from reprlab.experiments import parse_train_args
from reprlab.cli import train_main
from reprlab.runs import RunDir
from reprlab.testing import make_imagewang

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "bin" / "s01-train.py"
TINY = ["--data.dataset=tiny", "--data.size=16", "--data.batch_size=8", "--data.num_workers=0", "--threads=1", "--quiet",
        "--knn_k=3"]


@pytest.fixture
def cli(tiny, tmp_path, monkeypatch, capsys):
    "Run s01-train's main in-process in `tmp_path`: returns (exit code, stdout, stderr)."
    root, reg = tiny
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REPRLAB_DATASETS", str(reg)); monkeypatch.setenv("REPRLAB_CACHE", str(root / "cache"))
    def run(*args):
        capsys.readouterr()
        try: code = train_main(list(args), prog="s01-train.py")
        except SystemExit as e: code = e.code
        finally: torch.set_num_threads(1)
        out, err = capsys.readouterr()
        return code, out, err
    return run


def _env(tiny, tmp_path):
    root, reg = tiny
    env = dict(os.environ, OMP_NUM_THREADS="1", REPRLAB_DATASETS=str(reg), REPRLAB_CACHE=str(root / "cache"), PYTHONUNBUFFERED="1")
    env.pop("COMET_API_KEY", None)
    return env


def _files(run: Path) -> dict:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


# ---------------------------------------------------------------------------------------------- data loss or mixing
def test_reusing_a_name_is_refused_and_overwrite_replaces(cli, tmp_path):
    assert cli("--name=a", "--epochs=1", *TINY)[0] == 0
    before = _files(tmp_path / "runs" / "a")
    code, out, err = cli("--name=a", "--epochs=2", "--lr=0.01", *TINY)
    assert code == 2 and "already holds a run" in err and "--resume=runs/a" in err and "--overwrite" in err
    assert _files(tmp_path / "runs" / "a") == before                    # nothing of the finished run changed
    assert cli("--name=a", "--epochs=2", "--overwrite", *TINY)[0] == 0
    cfg = json.loads((tmp_path / "runs" / "a" / "config.json").read_text())
    assert cfg["epochs"] == 2 and len((tmp_path / "runs" / "a" / "cmd.txt").read_text().splitlines()) == 1
    assert load_checkpoint(tmp_path / "runs" / "a" / "checkpoints" / "last.pt")["epoch"] == 2


def test_a_run_dir_in_use_is_refused(cli, tmp_path):
    with RunDir(tmp_path / "runs" / "busy", resume=True):                # another process's lock, as far as flock goes
        code, _, err = cli("--name=busy", "--epochs=1", *TINY)
    assert code == 2 and "in use by another process" in err
    run = tmp_path / "runs" / "busy"
    assert sorted(p.name for p in run.iterdir()) == [".lock", "cmd.txt"]          # the holder's only: the refused run wrote nothing
    assert len((run / "cmd.txt").read_text().splitlines()) == 1


def test_two_runs_started_at_once_with_one_name(tiny, tmp_path):
    "Two processes, same --name, started together: one trains, the other is refused; the run's files are one run's."
    args = [sys.executable, str(TRAIN), "--name=same", "--epochs=2", *TINY]
    ps = [subprocess.Popen(args, cwd=tmp_path, env=_env(tiny, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True) for _ in range(2)]
    res = [(p.wait(timeout=300), p.stderr.read()) for p in ps]
    codes = sorted(c for c, _ in res)
    assert codes == [0, 2], res
    refused = next(e for c, e in res if c == 2)
    assert "already holds a run" in refused or "in use by another process" in refused
    log = [json.loads(l) for l in (tmp_path / "runs" / "same" / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log].count("start") == 1 and log[-1]["event"] == "end"


def test_a_mistaken_resume_changes_nothing_and_the_next_resume_works(cli, tmp_path):
    assert cli("--name=r", "--epochs=2", *TINY)[0] == 0
    run = tmp_path / "runs" / "r"
    before = _files(run)
    for wrong in (["--encoder=conv_res"], ["--task=rotation"], ["--lr=0.5"], ["--epochs=3"]):
        code, _, err = cli("--resume=runs/r", *wrong, *TINY)
        assert code == 2 and "differ from its config.json" in err and wrong[0].split("=")[0] in err, (wrong, err)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"encoder": "conv_res"}))
    code, _, err = cli(f"--config={other}", "--resume=runs/r/checkpoints/last.pt", *TINY)
    assert code == 2 and "--encoder" in err
    assert _files(run) == before                                        # config.json, cmd.txt, checkpoints: untouched
    code, _, err = cli("--resume=runs/r", "--threads=1", "--quiet")     # threads and progress bars may change
    assert code == 0, err
    cmd = (run / "cmd.txt").read_text().splitlines()
    assert len(cmd) == 2 and cmd[1].endswith("--resume=runs/r --threads=1 --quiet")   # the resume is appended
    assert (run / "config.json").read_bytes() == before["config.json"]


def test_resume_space_form_reloads_the_run_config(cli, tmp_path):
    assert cli("--name=s", "--epochs=2", "--lr=0.02", "--seed=3", *TINY)[0] == 0
    for argv in (["--resume", "runs/s"], ["--resume=runs/s"], ["--resume", "runs/s/checkpoints/last.pt"]):
        cfg = parse_train_args(argv)
        assert (cfg.epochs, cfg.lr, cfg.seed, cfg.data.dataset) == (2, 0.02, 3, "tiny"), argv


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs-run", "a/b", "..", "x" * 300, "-x"])
def test_a_name_is_one_path_component(cli, tmp_path, name):
    code, _, err = cli(f"--name={name}", "--epochs=1", *TINY)
    assert code == 2 and "--name" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not Path("/tmp/abs-run").exists() and not (tmp_path.parent / "x").exists()


def test_stale_temp_files_are_removed_on_the_next_start(cli, tmp_path):
    assert cli("--name=t", "--epochs=1", *TINY)[0] == 0
    ck = tmp_path / "runs" / "t" / "checkpoints"
    stale = [ck / ".last.pt.4242.140000000.tmp", ck / ".best.pt.4242.tmp", tmp_path / "runs" / "t" / ".history.csv.4242.1.tmp",
             ck / "epoch-0001.pt"]                       # a per-epoch file that the checkpoint no longer lists
    for p in stale: p.write_bytes(b"\0" * 1000)
    assert cli("--resume=runs/t")[0] == 0
    assert not any(p.exists() for p in stale)


# -------------------------------------------------------------------------------------------------------- signals
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_saves_prints_the_resume_command_and_exits_143(tiny, tmp_path):
    args = [sys.executable, str(TRAIN), "--name=term", "--epochs=40", *TINY]
    p = subprocess.Popen(args, cwd=tmp_path, env=_env(tiny, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "runs" / "term" / "checkpoints" / "last.pt"
    t0 = time.time()
    while not last.exists() and p.poll() is None and time.time() - t0 < 240: time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-3000:]
    assert "terminated" in err and "--resume=runs/term" in err
    ck = load_checkpoint(last)
    assert 1 <= ck["epoch"] <= 40
    log = [json.loads(l) for l in (tmp_path / "runs" / "term" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["event"] == "end" and log[-1]["status"] == "terminated"


# ------------------------------------------------------------------------------------ one line for ordinary mistakes
USAGE = [
    (["--lr=-1"], "--lr"), (["--data.batch_size=0"], "--data.batch_size"), (["--epochs=0"], "--epochs"),
    (["--keep=0"], "--keep"), (["--accum=0"], "--accum"), (["--data.size=0"], "--data.size"),
    (["--data.crop_scale=2"], "--data.crop_scale"), (["--data.num_workers=-1"], "--data.num_workers"),
    (["--threads=0"], "--threads"), (["--device=gpu"], "--device"), (["--name=" + "n" * 300], "--name"),
    (["--seed=-1"], "--seed"), (["--task=simclr", "--simclr.temperature=0"], "--simclr.temperature"),
    (["--temperature=0.1"], "--temperature is now --simclr.temperature"), (["--data.dataset=nope"], "nope"),
    (["--encoder=resnet1"], "resnet1"), (["--init_encoder=runs/nope.pt"], "--init_encoder"),
    (["--resume=runs/nope"], "--resume"), (["--data.valid_split=test"], "'test'"), (["--epochz=3"], "--epochs"),
    (["--monitor=acuracy"], "--monitor"), (["--resume=runs/x", "--overwrite"], "--resume"),
]


@pytest.mark.parametrize("args,names", USAGE, ids=[a[0].split("=")[0] for a, _ in USAGE])
def test_usage_errors_give_one_line_exit_2_and_no_run_dir(cli, tmp_path, args, names):
    code, out, err = cli("--epochs=1", *TINY, *args) if args[0] != "--epochs=0" else cli(*TINY, *args)
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], err
    assert "Traceback" not in out + err
    assert not (tmp_path / "runs").exists()                             # validated before anything was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it(cli, tmp_path):
    code, _, err = cli("--device=cuda", "--epochs=1", *TINY)
    assert code == 2 and "--device" in err and "CUDA is not available" in err and not (tmp_path / "runs").exists()


def test_runs_dir_that_is_a_file_or_unwritable(cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    for d in ("afile", "afile/runs"):
        code, _, err = cli(f"--runs_dir={d}", "--epochs=1", *TINY)
        assert code == 2 and "--runs_dir" in err and len(err.strip().splitlines()) == 1, err
    if os.geteuid() != 0:                                               # root writes anywhere: only a plain user can test this
        ro = tmp_path / "ro"; ro.mkdir(); ro.chmod(0o500)
        code, _, err = cli(f"--runs_dir={ro}", "--epochs=1", *TINY)
        assert code == 2 and "not writable" in err


def test_a_tiny_dataset_under_one_cycle_trains(cli, tmp_path):
    "24 training images at batch 8, one epoch: 3 steps of one-cycle (an empty warm-up phase before) train and finish."
    code, out, err = cli("--name=few", "--epochs=1", *TINY)
    assert code == 0, err
    assert load_checkpoint(tmp_path / "runs" / "few" / "checkpoints" / "last.pt")["step"] == 3   # 24 labelled images / 8


def test_dry_run_checks_and_writes_nothing(cli, tmp_path):
    code, out, err = cli("--name=dry", "--epochs=1", "--dry_run", *TINY)
    assert code == 0 and "dry run" in out and not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------------- options fuzzed
from hypothesis import HealthCheck, given, settings, strategies as st   # noqa: E402

from reprlab.config import _leaves                                       # noqa: E402
from reprlab.experiments import TrainConfig                              # noqa: E402

KEYS = [k for k in _leaves(TrainConfig) if k not in ("dry_run", "quiet")]
VALUES = st.one_of(
    st.integers(-3, 300).map(str), st.sampled_from(["0", "-1", "1", "1e9", "nan", "inf", "-inf", "1.5", "0.0", "2"]),
    st.sampled_from(["true", "false", "none", "", "[1, 2]", '{"a": 1}', "conv", "resnet18", "vit_mini", "simclr", "dino",
                     "rotation", "imagewang", "sgd", "cosine", "disk", "memory", "simclr", "../x", "/", "runs/x"]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
    st.floats(allow_nan=True, allow_infinity=True).map(repr))
KEY_VALUE = st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"--{kv[0]}={kv[1]}")
TOKENS = st.one_of(
    KEY_VALUE, KEY_VALUE, KEY_VALUE,
    st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: [f"--{kv[0]}", kv[1]]),
    st.sampled_from(KEYS).map(lambda k: f"--{k}"),
    st.tuples(st.text("abcdefghij_.-", min_size=1, max_size=12), VALUES).map(lambda kv: f"--{kv[0]}={kv[1]}"),
    st.text(max_size=8))


def _flatten(tokens):
    out = []
    for t in tokens: out += t if isinstance(t, list) else [t]
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(TOKENS, max_size=4).map(_flatten))
def test_fuzzed_options_never_give_a_traceback(cli, tmp_path, argv):
    "Random option names, types and values through the real parser and checks (--dry_run: nothing is trained): exit 0/1/2, one line."
    base = tmp_path / "base.json"
    if not base.exists():
        base.write_text(json.dumps({"data": {"dataset": "tiny", "size": 16, "batch_size": 8, "num_workers": 0}, "threads": 1,
                                    "knn_k": 3, "epochs": 1, "quiet": True}))
    code, out, err = cli(f"--config={base}", *argv, "--dry_run")
    assert "Traceback" not in out + err
    assert code in (0, 1, 2), (argv, code, err)
    lines = [l for l in err.strip().splitlines() if not l.startswith("warning: ")]    # warnings are one line each too
    if code: assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    assert not (tmp_path / "runs").exists()


def _typed(key: str):
    "Values of the option's own type, near and across its bounds: these get past the parser to the deeper checks."
    from dataclasses import fields
    from typing import Literal, get_args, get_origin
    from reprlab.config import _hints
    cls = TrainConfig
    *groups, name = key.split(".")
    for g in groups: cls = _hints(cls)[g]
    tp = _hints(cls)[name]
    choices = {f.name: f for f in fields(cls)}[name].metadata.get("choices")
    if choices: return st.sampled_from([*map(str, choices), "typo"])           # --task: the registered names
    if get_origin(tp) is not Literal: tp = ([a for a in get_args(tp) if a is not type(None)] or [tp])[0]   # Optional[X] -> X
    if get_origin(tp) is Literal: return st.sampled_from([*map(str, get_args(tp)), "typo"])
    if tp is bool: return st.sampled_from(["true", "false"])
    if tp is int: return st.integers(-2, 40).map(str)
    if tp is float: return st.one_of(st.floats(-1, 3, allow_nan=False).map(repr), st.sampled_from(["0", "1", "0.5", "1e-4"]))
    if tp is str: return st.sampled_from(["conv", "conv_res", "vit_mini", "resnet18", "timm:nope", "tiny", "train", "val", "unsup",
                                          "", "x", "accuracy", "train_loss", "knn_accuracy", "unsup,train", "nope"])
    return st.sampled_from(["runs", "nope.pt", "runs/x", "/dev/null"])


TYPED = st.sampled_from(KEYS).flatmap(lambda k: _typed(k).map(lambda v: f"--{k}={v}"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(TYPED, min_size=1, max_size=3, unique_by=lambda t: t.split("=")[0]))
def test_fuzzed_typed_options_reach_the_deeper_checks(cli, tmp_path, argv):
    "Well-typed values across their ranges: parsed, then checked with the data and the model (--dry_run): exit 0/1/2, one line."
    test_fuzzed_options_never_give_a_traceback.hypothesis.inner_test(cli, tmp_path, argv)


# ------------------------------------------------------------------------------------------------ bad image files
@pytest.fixture
def broken(tiny, tmp_path, monkeypatch):
    "A registry with one dataset whose train split holds a corrupt JPEG and a truncated PNG."
    make_imagewang(tmp_path / "bad", classes=("a", "b", "c"), n_train=8, n_val=4, n_unsup=8, size=(16, 16))
    train = sorted((tmp_path / "bad" / "train" / "a").iterdir())
    train[0].write_bytes(b"not an image at all")
    png = train[1].with_suffix(".png")
    from PIL import Image
    Image.new("RGB", (16, 16), (200, 10, 10)).save(png)
    png.write_bytes(png.read_bytes()[:60])
    reg = tmp_path / "reg.json"
    reg.write_text(json.dumps({"tiny": {"root": str(tiny[0] / "wang"), "layout": "imagewang"},
                               "bad": {"root": str(tmp_path / "bad"), "layout": "imagewang"}}))
    monkeypatch.setenv("REPRLAB_DATASETS", str(reg))
    return train[0], png


def test_a_corrupt_image_is_one_line_and_skip_corrupt_trains_past_it(cli, tmp_path, broken):
    tiny_args = [a for a in TINY if not a.startswith("--data.dataset")]
    code, _, err = cli("--name=b", "--epochs=1", *tiny_args, "--data.dataset=bad")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "cannot decode image" in lines[0] and str(broken[0].name) in lines[0], err
    assert not (tmp_path / "runs").exists()
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = cli("--name=b", "--epochs=1", *tiny_args, "--data.dataset=bad", "--data.skip_corrupt")
    assert code == 0, err
    warns = [str(w.message) for w in caught if "corrupt" in str(w.message)]
    assert len(warns) == 1 and broken[0].name in warns[0] and broken[1].name in warns[0], warns   # listed once, both named
    assert "\n" not in warns[0]


def test_an_image_above_the_pixel_limit_is_refused(cli, tmp_path):
    code, _, err = cli("--name=big", "--epochs=1", *TINY, "--data.max_pixels=100")
    assert code == 1 and "pixels" in err and "max_pixels" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(cli, tmp_path):
    "A 7 MB tmpfs holds one 4.7 MB checkpoint but not the temp file of the next: exit 1, last.pt and history agree."
    disk = tmp_path / "disk"; disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=7m", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        code, _, err = cli(f"--runs_dir={disk}", "--name=full", "--epochs=4", *TINY)
        lines = [l for l in err.strip().splitlines() if not l.startswith("warning: ")]
        assert code == 1 and len(lines) == 1 and "no space left on device writing" in lines[0] and "last.pt" in lines[0], err
        run = disk / "full"
        ck = load_checkpoint(run / "checkpoints" / "last.pt")
        rows = (run / "history.csv").read_text().splitlines()[1:]
        assert ck["epoch"] >= 1 and len(rows) == ck["epoch"] == len(ck["history"])      # history lists what last.pt holds
        assert not [p for p in run.rglob("*.tmp")]
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode: subprocess.run(["umount", "-l", str(disk)])


def test_a_protocol_on_a_tiny_budget_trains_instead_of_crashing(cli, tmp_path):
    "The flaky-test case: a budget that calibrates to one short epoch per arm (3 one-cycle steps) must still finish."
    code, out, err = cli("--protocol=imagewang", "--task=rotation", "--name=iw", "--budget_s=0.2", "--finetune_s=0.1", *TINY)
    assert code == 0, err
    p = json.loads((tmp_path / "runs" / "iw" / "protocol.json").read_text())
    assert sorted(p["arms"]) == ["finetune", "pretrain", "scratch"] and all(a["epochs"] >= 1 for a in p["arms"].values())


def test_a_run_written_before_names_were_checked_still_resumes(cli, tmp_path):
    "Protocol arms used to record name='<protocol>/<arm>': resuming such a run takes its name from its folder."
    assert cli("--name=arm", "--epochs=2", *TINY)[0] == 0
    f = tmp_path / "runs" / "arm" / "config.json"
    f.write_text(f.read_text().replace('"name": "arm"', '"name": "iw/arm"'))
    code, _, err = cli("--resume=runs/arm")
    assert code == 0, err
