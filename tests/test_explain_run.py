"""s03-explain (issue 21): a run explained image by image with nothing else given, an index that opens offline,
resumable mass generation, two runs compared, loss landscapes whose origin is the model's loss, and one clear line
(exit 1) for a method that does not apply, an image that does not decode, a run with no checkpoint."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reprlab.cli import explain_main
from reprlab.config import config_from_dict
from reprlab.data import cache
from reprlab.datasets import load_dataset
from reprlab.eval_run import load_run
from reprlab.experiments import TrainConfig, train
from reprlab.explain_run import ExplainConfig, explain_run, model_inputs
from reprlab.testing import make_imagewang

pytest.importorskip("skimage", reason="LIME's superpixels need scikit-image (pip install reprlab[explain])")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("xp")
    make_imagewang(root / "wang", classes=("a", "b", "c"), n_train=10, n_val=6, n_unsup=4, size=(32, 32), seed=2)
    reg = root / "reg.json"
    reg.write_text(json.dumps({"xp": {"root": str(root / "wang"), "layout": "imagewang"}}))
    mp = pytest.MonkeyPatch(); mp.setenv("REPRLAB_DATASETS", str(reg))
    common = {"data": {"dataset": "xp", "size": 32, "batch_size": 10}, "quiet": True, "runs_dir": str(root / "runs"), "threads": 1}
    conv = Path(train(config_from_dict(TrainConfig, {**common, "epochs": 2, "name": "conv"}))["run_dir"])
    conv2 = Path(train(config_from_dict(TrainConfig, {**common, "epochs": 2, "name": "conv2", "seed": 1}))["run_dir"])
    vit = Path(train(config_from_dict(TrainConfig, {**common, "epochs": 1, "name": "vit", "encoder": "vit_mini"}))["run_dir"])
    ssl = Path(train(config_from_dict(TrainConfig, {**common, "epochs": 1, "name": "ssl", "task": "simclr"}))["run_dir"])
    yield dict(conv=conv, conv2=conv2, vit=vit, ssl=ssl, root=root)
    mp.undo()


def _one_line(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err
    return err[0]


def test_gradcam_writes_one_png_per_image_an_index_and_resumes(runs, capsys):
    run = runs["conv"]
    assert explain_main([f"--run={run}", "--quiet", "--n=5"]) == 0
    out = run / "explain" / "gradcam"
    man = json.loads((out / "explain.json").read_text())
    assert len(man["images"]) == 5 and man["settings"]["method"] == "gradcam"
    for e in man["images"]:
        assert (out / e["file"]).is_file() and e["pred"] in ("a", "b", "c") and 0 < e["prob"] <= 1 and e["true"] in ("a", "b", "c")
    page = (out / "index.html").read_text()
    assert all(f'src="{e["file"]}"' in page for e in man["images"]) and "http" not in page      # static, offline
    assert (out / "index.png").is_file()
    # the predictions are the model's on the run's own preprocessing
    r = load_run(run)
    val = cache(load_dataset("xp", size=32)["val"])
    with torch.no_grad(): p = r["model"](model_inputs(val.images[:5], r["preprocess"])).softmax(1)
    assert [e["prob"] for e in man["images"]] == pytest.approx(p.max(1).values.tolist(), abs=1e-5)
    # a rerun with the same settings skips what exists; more images only add theirs
    before = {e["file"]: (out / e["file"]).stat().st_mtime_ns for e in man["images"]}
    capsys.readouterr()
    assert explain_main([f"--run={run}", "--quiet", "--n=8"]) == 0
    assert "3 explanations written, 5 already there" in capsys.readouterr().out
    assert all((out / f).stat().st_mtime_ns == t for f, t in before.items())
    assert explain_main([f"--run={run}", "--quiet", "--n=8", "--layer=encoder.blocks.2"]) == 2       # other settings, same folder
    _one_line(capsys, "other settings", "--overwrite")


def test_every_method_on_the_run_it_applies_to(runs):
    conv, vit = runs["conv"], runs["vit"]
    for method, run, extra in (("gradcampp", conv, {}), ("occlusion", conv, {"patch": 8, "stride": 8}),
                               ("lime", conv, {"lime_samples": 50, "lime_segments": 10}), ("attention", vit, {})):
        res = explain_run(ExplainConfig(run=run, method=method, n=3, quiet=True, **extra))
        out = Path(res["out_dir"])
        assert res["written"] == 3 and len(list(out.glob("0000*.png"))) == 3, method
    res = explain_run(ExplainConfig(run=vit, method="gradcam", layer="encoder.patch_embed", n=2, quiet=True))   # a named layer works on a ViT
    assert res["written"] == 2


def test_mistakes_all_and_image_folders(runs, tmp_path):
    run = runs["conv"]
    res = explain_run(ExplainConfig(run=run, mistakes=True, all=True, quiet=True, out=tmp_path / "m"))
    man = json.loads((tmp_path / "m" / "explain.json").read_text())
    assert all(e["pred"] != e["true"] for e in man["images"])
    probs = [e["prob"] for e in man["images"]]
    assert probs == sorted(probs, reverse=True) and res["n"] == len(man["images"])
    from PIL import Image
    (tmp_path / "imgs").mkdir()
    for k in range(3): Image.fromarray(np.random.default_rng(k).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"p{k}.png")
    res = explain_run(ExplainConfig(run=run, images=str(tmp_path / "imgs"), quiet=True, out=tmp_path / "i"))
    man = json.loads((tmp_path / "i" / "explain.json").read_text())
    assert res["written"] == 3 and all(e["true"] is None and e["pred"] is not None for e in man["images"])


def test_bad_inputs_are_one_line_exit_1_and_write_nothing(runs, tmp_path, capsys):
    conv, vit = runs["conv"], runs["vit"]
    assert explain_main([f"--run={conv}", "--quiet", "--method=attention", f"--out={tmp_path / 'a'}"]) == 1
    _one_line(capsys, "attention")
    assert explain_main([f"--run={vit}", "--quiet", "--method=gradcam", f"--out={tmp_path / 'b'}"]) == 1
    _one_line(capsys, "gradcam", "layer")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert explain_main([f"--run={conv}", "--quiet", f"--images={tmp_path / 'bad.jpg'}", f"--out={tmp_path / 'c'}"]) == 1
    _one_line(capsys, "bad.jpg")
    (tmp_path / "empty_run").mkdir()
    assert explain_main([f"--run={tmp_path / 'empty_run'}", "--quiet", f"--out={tmp_path / 'd'}"]) == 1
    _one_line(capsys, "no checkpoint")
    assert not any((tmp_path / k).exists() for k in "abcd")
    assert explain_main([f"--run={conv}", "--quiet", "--target=zebra"]) == 2
    _one_line(capsys, "zebra")


def test_two_runs_compared_on_the_same_images(runs, tmp_path, capsys):
    a, b = runs["conv"], runs["conv2"]
    assert explain_main(["--compare", str(a), str(b), "--quiet", "--n=4", f"--out={tmp_path}"]) == 0
    res = json.loads((tmp_path / "compare.json").read_text())
    assert res["n"] == 4 and len(res["images"]) == 4 and (tmp_path / "compare.md").is_file()
    assert all(-1 <= r["spearman"] <= 1 for r in res["images"])
    assert res["spearman_mean"] == pytest.approx(np.mean([r["spearman"] for r in res["images"]]))
    assert explain_main(["--compare", str(a), str(a), "--quiet", "--n=2", f"--out={tmp_path / 'same'}"]) == 0     # a run against itself
    same = json.loads((tmp_path / "same" / "compare.json").read_text())
    assert same["spearman_mean"] == pytest.approx(1.0)


def test_the_landscape_at_the_origin_is_the_models_loss(runs):
    run = runs["conv"]
    res = explain_run(ExplainConfig(run=run, method="landscape", dims=1, points=5, span=0.5, subset=12, quiet=True))
    r = load_run(run)
    val = cache(load_dataset("xp", size=32)["val"])
    idx = torch.randperm(len(val), generator=torch.Generator().manual_seed(0))[:12].sort().values
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(r["model"](model_inputs(val.images[idx], r["preprocess"])), torch.as_tensor(val.labels[idx.numpy()]))
    assert res["origin_loss"] == pytest.approx(float(loss), rel=1e-5)
    with np.load(Path(res["out_dir"]) / "landscape.npz") as z:
        assert z["loss"].shape == (5,) and z["loss"][2] == pytest.approx(float(loss), rel=1e-5)
    res2 = explain_run(ExplainConfig(run=run, method="landscape", dims=2, points=3, span=0.5, subset=12, quiet=True))
    assert {"landscape_surface.png", "landscape_contour.png", "landscape.npz"} <= {p.name for p in Path(res2["out_dir"]).iterdir()}


def test_the_script_lists_every_option():
    import subprocess, sys
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, str(root / "bin" / "s03-explain.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0
    for opt in ("--run", "--method", "--mistakes", "--images", "--compare", "--lime_samples", "--keep", "--points", "--teacher"):
        assert opt in p.stdout, opt


def test_a_self_supervised_encoder_is_explained_through_its_embedding(runs):
    from reprlab.explain_run import explain_batch
    r = load_run(runs["ssl"])
    x8 = cache(load_dataset("xp", size=32)["val"]).images[:4]
    for method in ("gradcam", "occlusion"):
        maps = explain_batch(ExplainConfig(method=method, patch=8, stride=8), r["model"], x8, r["preprocess"])
        assert all(m["heat"].max() == 1 and m["heat"].min() >= 0 for m in maps), method     # real maps, not all-zero noise
    res = explain_run(ExplainConfig(run=runs["ssl"], n=2, quiet=True))
    man = json.loads((Path(res["out_dir"]) / "explain.json").read_text())
    assert all(e["pred"] is None and e["target"] == "embedding" for e in man["images"])
