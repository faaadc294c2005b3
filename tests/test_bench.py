"""The benchmark scripts' own logic (slow: they train). The figures themselves are recorded in notes/benchmarks.md."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ssl_vs_scratch_reads_back_finished_runs(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", REPRLAB_BENCH_RESULTS=str(tmp_path / "results"))
    bench = [sys.executable, str(ROOT / "bench" / "ssl_vs_scratch.py"), "--quick", "--threads", "1", "--runs_dir", str(tmp_path / "runs")]
    first = subprocess.run(bench, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    r1 = json.loads(next((tmp_path / "results").glob("ssl_vs_scratch-quick-*.json")).read_text())
    assert set(r1["figures"]["val_accuracy"]) == {"scratch", "rotation", "simclr"} and "read back" not in first.stdout
    again = subprocess.run(bench, env=env, capture_output=True, text=True)        # same command: nothing trains again
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("(read back") == 3
    assert json.loads(next((tmp_path / "results").glob("ssl_vs_scratch-quick-*.json")).read_text())["figures"] == r1["figures"]
    other = subprocess.run([*bench, "--extra=--wd=0.01"], env=env, capture_output=True, text=True)
    assert other.returncode != 0 and "holds a run of another command" in other.stderr
