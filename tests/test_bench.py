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


@pytest.mark.slow
def test_unet_vs_smp_quick(tmp_path):
    "The U-Net benchmark's tile sampler (crops of the slices, the same for a (seed, epoch)) and a --quick run end to end."
    pytest.importorskip("segmentation_models_pytorch")
    import torch
    sys.path.insert(0, str(ROOT / "bench"))
    import unet_vs_smp as bench
    if bench.find_archive() is None: pytest.skip("isbi2012-em.tar.gz not in data/ or ../shared/data")
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(4, 1, 20, 20, generator=g); masks = (imgs > 0.5).float()

    def batches(seed, epoch):
        loader = bench.TileLoader(imgs, masks, 2, 8, 4, seed)
        loader.epoch = epoch
        return list(loader)
    a, b, c = batches(1, 0), batches(1, 0), batches(1, 1)
    assert len(a) == 2 and [x["image"].shape for x in a] == [(4, 1, 8, 8)] * 2
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b)) and not torch.equal(a[0]["image"], c[0]["image"])
    for batch in a:                                                              # every tile is a (flipped) crop, its mask aligned
        for x, m in zip(batch["image"], batch["label"]):
            assert torch.equal(m, (x > 0.5).float())
            crops = [f(imgs[i, :, r:r + 8, s:s + 8]) for i in range(4) for r in range(13) for s in range(13)
                     for f in (lambda t: t, lambda t: t.flip(-1), lambda t: t.flip(-2), lambda t: t.flip(-2, -1))]
            assert any(torch.equal(x, t) for t in crops)
    env = dict(os.environ, OMP_NUM_THREADS="1", REPRLAB_BENCH_RESULTS=str(tmp_path))
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "unet_vs_smp.py"), "--quick", "--threads", "1"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(next(tmp_path.glob("unet_vs_smp-quick-*.json")).read_text())
    fig = res["figures"]
    assert fig["params"]["smp"] - fig["params"]["reprlab"] == 16 * 9 - 16      # smp's head is a 3x3 conv (16 -> 1), reprlab's 1x1
    assert all(0 <= d <= 1 for v in fig["val_dice_per_seed"].values() for d in v) and len(fig["val_dice_per_seed"]["smp"]) == 1
    assert [len(fig["runs"]["0"][k]["epoch_s"]) for k in ("reprlab", "smp")] == [2, 2]
    assert [c["goal"] for c in res["claims"]] == ["<= 1.0", ">= -1"] and "ratio reprlab / smp" in r.stdout
