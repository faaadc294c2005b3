"""Segmentation end to end (issue 22): the embedded ISBI 2012 EM data, the `segmentation` layout with its bad inputs,
masks moving with their images through the loader, `s01-train --task=segmentation` (history, checkpoints, exact resume,
torchrun), `s02-eval` metrics recomputed by hand and by scikit-learn, and `s03-explain` on a U-Net."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score, jaccard_score

from reprlab.cli import eval_main, explain_main, train_main
from reprlab.config import ConfigError
from reprlab.core import seed_everything
from reprlab.data import DataError, ImageDataset, cache
from reprlab.datasets import data_dir, load_dataset, verify_file
from reprlab.eval_run import load_run
from reprlab.eval_seg import predict_image
from reprlab.experiments import build_callbacks, build_data, build_learner, parse_train_args
from reprlab.learner import Callback
from reprlab.loaders import Loader
from reprlab.seg_losses import seg_metrics, seg_predict
from reprlab.seg_transforms import SegAugment
from reprlab.tasks.segmentation import SegmentationTask
from reprlab.testing import make_segmentation

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--task=segmentation", "--data.dataset=tinyseg", "--segmentation.tile=32", "--segmentation.depth=2",
        "--segmentation.width=8", "--segmentation.tiles_per_image=3", "--segmentation.overlap=8", "--segmentation.sigma=4",
        "--data.batch_size=6", "--data.num_workers=0", "--quiet", "--threads=1", "--lr=0.01", "--amp=false"]


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    make_segmentation(root / "seg", n_train=6, n_val=3, size=(48, 56), n_unlabeled=2, seed=1)
    reg = root / "reg.json"
    reg.write_text(json.dumps({"tinyseg": {"root": str(root / "seg"), "layout": "segmentation", "classes": ["bg", "disc"], "channels": 1}}))
    mp = pytest.MonkeyPatch(); mp.setenv("REPRLAB_DATASETS", str(reg))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def run(reg):
    assert train_main(TINY + ["--epochs=3", f"--runs_dir={reg / 'runs'}", "--name=s"]) == 0
    return reg / "runs" / "s"


# ---------------------------------------------------------------- the embedded data
def test_isbi_is_embedded_and_registered():
    e = json.loads((data_dir() / "datasets.json").read_text())["isbi2012-em"]
    verify_file(data_dir() / e["archive"], sha256=e["sha256"], size=e["size"])      # the archive of ../shared/data/README.md
    d = load_dataset("isbi2012-em")
    assert {k: len(v) for k, v in d.items()} == {"train": 20, "val": 5, "unlabeled": 30}
    assert [Path(p).name for p in d["val"].paths] == [f"{i}.png" for i in range(20, 25)]   # contiguous sections, fixed split
    tr = cache(d["train"])
    assert tr.images.shape == (20, 1, 512, 512) and tr.masks.shape == (20, 1, 512, 512) and tr.classes == ["cell", "membrane"]
    assert set(tr.masks.unique().tolist()) == {0, 1}
    assert 0.15 < tr.masks.float().mean() < 0.3                          # membranes: ~22 % of the pixels
    raw = np.array(Image.open(tr.mask_paths[3]))
    assert np.array_equal(tr.masks[3, 0].numpy() * 255, raw)             # 255 -> class 1, 0 -> class 0
    assert not d["unlabeled"].has_masks


# ---------------------------------------------------------------- bad input names the file
def _layout(tmp_path, **kw):
    return make_segmentation(tmp_path / "s", n_train=2, n_val=1, size=(24, 24), **kw)


def test_a_mask_of_another_size_names_both_files(tmp_path):
    r = _layout(tmp_path)
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(r / "masks" / "001.png")
    from reprlab.datasets import load_segmentation
    with pytest.raises(DataError, match=r"masks/001.png is 24x20 \(w x h\) but its image .*scenes/001.png is 24x24"):
        cache(load_segmentation(r)["train"])


def test_mask_values_outside_the_class_list_name_the_file(tmp_path):
    r = _layout(tmp_path)
    m = np.array(Image.open(r / "masks" / "000.png")); m[0, :3] = 128
    Image.fromarray(m).save(r / "masks" / "000.png")
    from reprlab.datasets import load_segmentation
    with pytest.raises(DataError, match=r"masks/000.png has pixel value\(s\) \[128\] outside the class values \[0, 255\]"):
        cache(load_segmentation(r)["train"])


def test_file_list_errors_name_the_row_and_file(tmp_path):
    from reprlab.datasets import load_segmentation
    r = _layout(tmp_path)
    (r / "filelists" / "train.csv").write_text("name\n000.png\nnope.png\n")
    with pytest.raises(DataError, match=r"train.csv row 3 names 'nope.png', but .*scenes/nope.png does not exist"):
        load_segmentation(r)
    (r / "filelists" / "train.csv").write_text("name\n000.png\n001.png\n")
    (r / "masks" / "001.png").unlink()
    with pytest.raises(DataError, match=r"have no mask, e.g. .*masks/001.png does not exist"):
        load_segmentation(r)
    (r / "filelists" / "train.csv").write_text("file\n000.png\n")
    with pytest.raises(DataError, match=r"has no column 'name'"):
        load_segmentation(r)


def test_palette_masks_with_three_classes_train_a_three_logit_unet(tmp_path, monkeypatch):
    r = _layout(tmp_path)
    for p in (r / "masks").iterdir():                       # class indices 0, 1, 2 in a palette PNG
        m = (np.array(Image.open(p)) > 0).astype(np.uint8); m[:, :4] = 2
        im = Image.fromarray(m, mode="P"); im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759); im.save(p)
    reg = tmp_path / "reg.json"
    reg.write_text(json.dumps({"tri": {"root": str(r), "layout": "segmentation", "classes": ["bg", "disc", "edge"], "channels": 1}}))
    monkeypatch.setenv("REPRLAB_DATASETS", str(reg))
    ds = cache(load_dataset("tri")["train"])
    assert set(ds.masks.unique().tolist()) == {0, 1, 2}
    cfg = parse_train_args(["--task=segmentation", "--data.dataset=tri", "--segmentation.tile=16", "--segmentation.depth=2",
                            "--segmentation.width=4", "--segmentation.overlap=4", "--quiet", "--data.num_workers=0", f"--runs_dir={tmp_path}/runs"])
    data = build_data(cfg)
    learn = build_learner(cfg, data)
    assert learn.model.head.out_channels == 3
    res = learn.validate()
    assert set(res) == {"valid_loss", "dice", "iou", "pixel_error"}
    logits = learn.predict(data[0].valid)
    assert res["dice"] == pytest.approx(seg_metrics(logits, data[2].masks.long(), n_classes=3)["mean_dice"])


def test_a_tile_larger_than_the_images_is_a_clear_error(reg, tmp_path):
    with pytest.raises(ConfigError, match=r"--segmentation.tile=64 is larger than the training images \(56x48\)"):
        build_data(parse_train_args([a for a in TINY if "tile=" not in a] + ["--segmentation.tile=64", f"--runs_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="overlap"):
        SegmentationTask(parse_train_args([a for a in TINY if "overlap=" not in a] + ["--segmentation.overlap=32"])).check()


def test_upsample_option_reaches_the_model_and_nearest_is_for_encoder_unet_only(reg, tmp_path):
    base = [a for a in TINY if "depth=" not in a and "width=" not in a] + [f"--runs_dir={tmp_path}"]
    cfg = parse_train_args(base + ["--segmentation.arch=encoder_unet", "--encoder=conv", "--segmentation.upsample=nearest"])
    data = build_data(cfg)
    m = build_learner(cfg, data, verbose=False).model
    assert m.upsample == "nearest" and m.head.kernel_size == (3, 3) and m.in_chans == 1
    cfg = parse_train_args(base + ["--segmentation.upsample=nearest"])
    with pytest.raises(ValueError, match="upsample=nearest needs --segmentation.arch=encoder_unet"):
        build_learner(cfg, build_data(cfg), verbose=False)


def test_a_classification_dataset_for_segmentation_says_it_has_no_masks(tmp_path, monkeypatch):
    from reprlab.testing import make_imagewang
    make_imagewang(tmp_path / "w", size=(32, 32))
    (tmp_path / "reg.json").write_text(json.dumps({"w": {"root": str(tmp_path / "w"), "layout": "imagewang"}}))
    monkeypatch.setenv("REPRLAB_DATASETS", str(tmp_path / "reg.json"))
    with pytest.raises(DataError, match="has no segmentation masks: --task=segmentation needs a mask per image"):
        build_data(parse_train_args(["--task=segmentation", "--data.dataset=w", "--segmentation.tile=16", "--segmentation.depth=2",
                                     "--segmentation.overlap=4"]))


# ---------------------------------------------------------------- masks move with their images
def test_the_loader_moves_masks_with_images_whatever_num_workers():
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(4, 1, 10, 10, generator=g) > 0.6).to(torch.uint8).repeat_interleave(4, 2).repeat_interleave(4, 3)   # 4 px blocks
    ds = ImageDataset(images=masks * 255, masks=masks, classes=["bg", "fg"], channels=1)   # the image *is* its mask
    for elastic in (False, True):
        aug = SegAugment(24, elastic=elastic, sigma=3.0, brightness=0, contrast=0)
        batches = [list(Loader(ds, 4, shuffle=True, transform=aug, seed=5, num_workers=w)) for w in (0, 2)]
        for a, b in zip(*batches):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        for b in batches[0]:
            assert b["image"].shape == (4, 1, 24, 24) and b["mask"].shape == (4, 1, 24, 24) and b["mask"].dtype == torch.uint8
            agree = ((b["image"] > 0.5) == b["mask"].bool()).float().mean().item()
            assert agree == 1.0 if not elastic else agree > 0.97       # bilinear image vs nearest mask differ at edges only


def test_task_defaults_start_the_run_and_the_command_line_wins():
    c = parse_train_args(["--task=segmentation"])
    assert (c.data.batch_size, c.lr, c.epochs) == (8, 0.002, 50)
    c = parse_train_args(["--task", "segmentation", "--data.batch_size=3", "--epochs=2"])
    assert (c.data.batch_size, c.lr, c.epochs) == (3, 0.002, 2)
    c = parse_train_args(["--task=supervised"])
    assert (c.data.batch_size, c.epochs) == (64, 40)


# ---------------------------------------------------------------- train, evaluate, explain
def test_training_writes_history_and_a_checkpoint_that_knows_its_tiles(run):
    rows = (run / "history.csv").read_text().splitlines()
    assert rows[0].split(",")[:6] == ["epoch", "train_loss", "valid_loss", "dice", "iou", "pixel_error"] and len(rows) == 4
    r = load_run(run, "last")
    seg = r["preprocess"]["segmentation"]
    assert seg["tile"] == 32 and seg["overlap"] == 8 and seg["n_outputs"] == 1 and r["preprocess"]["channels"] == 1
    assert r["preprocess"]["size"] is None and type(r["model"]).__name__ == "UNet"


def test_eval_metrics_equal_a_recomputation_and_scikit_learn(run, capsys):
    assert eval_main([f"--run={run}", "--checkpoint=last", "--quiet"]) == 0
    rep = json.loads((run / "eval" / "tinyseg-val" / "report.json").read_text())
    m = rep["segmentation"]["metrics"]
    r = load_run(run, "last")
    val = cache(load_dataset("tinyseg")["val"])
    preds = torch.stack([seg_predict(predict_image(r["model"], val.images[i], r["preprocess"])[None])[0] for i in range(len(val))])
    y, p = val.masks[:, 0].flatten().numpy(), preds.flatten().numpy()
    assert m["dice"] == pytest.approx(f1_score(y, p), abs=1e-9)
    assert m["iou"] == pytest.approx(jaccard_score(y, p), abs=1e-9)
    assert m["pixel_error"] == pytest.approx((y != p).mean(), abs=1e-12)
    for i, row in enumerate(rep["segmentation"]["per_image"]):
        assert row["dice"] == pytest.approx(f1_score(val.masks[i, 0].flatten().numpy(), preds[i].flatten().numpy(), zero_division=1.0))
        png = np.array(Image.open(run / "eval" / "tinyseg-val" / "masks" / Path(val.paths[i]).name))
        assert np.array_equal(png, preds[i].numpy().astype(np.uint8) * 255)      # written in the dataset's values
    assert (run / "eval" / "tinyseg-val" / "segmentation.png").stat().st_size > 1000
    assert "pixel error" in (run / "eval" / "tinyseg-val" / "report.md").read_text()
    assert f"dice {m['dice']:.4f}" in capsys.readouterr().out


def test_explain_gradcam_and_occlusion_of_the_foreground(run):
    for method in ("gradcam", "occlusion"):
        assert explain_main([f"--run={run}", "--checkpoint=last", f"--method={method}", "--patch=8", "--stride=8", "--quiet"]) == 0
        man = json.loads((run / "explain" / method / "explain.json").read_text())
        assert len(man["images"]) == 3 and all(e["target"] == "disc" for e in man["images"])
        assert all((run / "explain" / method / e["file"]).is_file() for e in man["images"])
    assert explain_main([f"--run={run}", "--checkpoint=last", "--method=lime", "--quiet"]) == 1   # no classes to explain: one line


class _StopAt(Callback):
    def __init__(self, epoch, batch): self.at = (epoch, batch)
    def after_batch(self, learn):
        if learn.training and (learn.epoch, learn.iter) == self.at: raise KeyboardInterrupt


def _fit(argv, run, stop=None, resume=None):
    cfg = parse_train_args(argv)
    seed_everything(cfg.seed)                                          # as train() does
    data = build_data(cfg)
    learn = build_learner(cfg, data, build_callbacks(cfg, run, data[1:]))
    try: learn.fit(cfg.epochs, cbs=[stop] if stop else [], resume=resume)
    except KeyboardInterrupt: pass
    return learn


def test_an_interrupted_run_resumes_to_the_same_weights(reg, tmp_path):
    argv = TINY + ["--epochs=2", f"--runs_dir={tmp_path}"]
    full = _fit(argv, tmp_path / "a")
    _fit(argv, tmp_path / "b", stop=_StopAt(0, 1))                       # Ctrl-C mid-epoch: last.pt holds epoch 0, batch 2
    resumed = _fit(argv, tmp_path / "b", resume=tmp_path / "b" / "checkpoints" / "last.pt")
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["dice"] for h in full.history] == [h["dice"] for h in resumed.history]


def test_torchrun_two_processes_gather_whole_validation_masks(reg, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REPRLAB_DATASETS": str(reg / "reg.json")}
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(ROOT / "bin" / "s01-train.py"), *TINY, "--epochs=2",
                        "--name=ddp", f"--runs_dir={tmp_path}"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    last = (tmp_path / "ddp" / "history.csv").read_text().splitlines()[-1].split(",")
    # the last epoch's validation (3 images split over 2 ranks, gathered) equals one process validating the final weights
    cfg = parse_train_args(TINY + ["--epochs=2", f"--runs_dir={tmp_path}"])
    learn = build_learner(cfg, build_data(cfg))
    learn.model.load_state_dict(torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)["model"])
    res = learn.validate()
    assert float(last[3]) == pytest.approx(res["dice"], abs=1e-6) and float(last[5]) == pytest.approx(res["pixel_error"], abs=1e-9)


def test_the_data_tour_shows_images_with_their_masks(reg, tmp_path, capsys):
    from reprlab.cli import data_main
    assert data_main(["--dataset=tinyseg", f"--out={tmp_path}", "--n_images=2"]) == 0
    out = capsys.readouterr().out
    assert "train: masks (6, 1, 48, 56), classes ['bg', 'disc'], foreground" in out and "(images and masks)" in out
    assert (tmp_path / "images.png").is_file() and (tmp_path / "views.png").is_file()


def test_predict_masks_from_the_checkpoint_and_from_its_onnx_export(reg, run, tmp_path, capsys):
    from reprlab.cli import predict_main
    images = reg / "seg" / "scenes"
    assert predict_main([f"--model={run}", f"--images={images}", f"--out={tmp_path / 'pt'}", "--overlays", "--quiet"]) == 0
    man = json.loads((tmp_path / "pt" / "predictions.json").read_text())
    assert man["n"] == 9 and man["runner"] == "TorchSegmenter" and man["tile"] == 32 and man["overlap"] == 8
    r = load_run(run, "best")
    img = cache(load_dataset("tinyseg")["val"]).images[0]
    want = seg_predict(predict_image(r["model"], img, r["preprocess"])[None])[0].numpy() * 255      # s02-eval's path
    got = np.array(Image.open(tmp_path / "pt" / man["images"][6]["mask"]))
    assert man["images"][6]["image"].endswith("006.png") and np.array_equal(got, want)
    assert np.array(Image.open(tmp_path / "pt" / "006.overlay.png")).shape == (48, 56, 3)
    pytest.importorskip("onnxruntime", reason="the ONNX runner needs onnxruntime (pip install reprlab[onnx])")
    assert predict_main([f"--model={run}", "--export", f"--images={images}", f"--out={tmp_path / 'onnx'}", "--quiet"]) == 0
    assert (run / "model.onnx").is_file() and json.loads((tmp_path / "onnx" / "predictions.json").read_text())["runner"] == "OnnxSegmenter"
    same = [np.mean(np.array(Image.open(tmp_path / "pt" / f"{i:03d}.png")) == np.array(Image.open(tmp_path / "onnx" / f"{i:03d}.png")))
            for i in range(9)]
    assert min(same) > 0.999                                          # logits within 1e-4: a pixel at 0.5 may flip


def test_predict_bad_input_is_one_line(reg, run, tmp_path, capsys):
    from reprlab.cli import predict_main
    (tmp_path / "imgs").mkdir(); (tmp_path / "imgs" / "bad.png").write_bytes(b"not a png")
    assert predict_main([f"--model={run}", f"--images={tmp_path / 'imgs'}", f"--out={tmp_path / 'o'}", "--quiet"]) == 1
    assert "bad.png" in capsys.readouterr().err
    assert predict_main([f"--model={run}", f"--images={tmp_path / 'imgs'}", "--quantize=static"]) == 2
    assert "--quantize applies with --export" in capsys.readouterr().err
    assert predict_main([f"--model={tmp_path / 'nope.onnx'}", f"--images={tmp_path / 'imgs'}"]) == 1
    assert "nope.onnx" in capsys.readouterr().err
