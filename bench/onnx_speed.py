"""Deployed U-Net on the CPU: onnxruntime float32 against PyTorch eager float32 (tiles / second, whole ISBI 2012 slices
predicted tile by tile), and int8 (dynamic and static) against float32 (Dice on the validation masks).

Data: the ISBI 2012 EM slices (../shared/data/isbi2012-em.tar.gz, extracted to a temp dir; or --data DIR holding
scenes/ and masks/): 512 x 512 8-bit grey, masks 255 = membrane. Slices 00-19 train, 20-24 validate.

Model: a reprlab checkpoint of a trained segmentation run (--checkpoint PATH: its model, normalisation, tile,
overlap, threshold), or else the project's UNet (depth 4, width 32, BatchNorm) trained here for --train_seconds
(default 60) on random 128 x 128 crops of the 20 training slices (flips, DiceBCE, Adam 1e-3, batch 4), so that the
Dice comparison is about a model that finds membranes (on this shared 2-core VM 60 s is only ~35 steps; the
recorded figures used --train_seconds 180: 100 steps, validation Dice 0.725). It is exported with
`reprlab.deploy.export_onnx` (raw uint8 in, normalisation in the graph) and quantised with `quantize_onnx`: 'dynamic' (ConvInteger) and 'static' (QDQ,
MinMax calibration on 16 random 256 x 256 training tiles).

Speed: every runner predicts the 5 validation slices with `predict(slice, tile, overlap)` (reprlab.tiling, Hann
window, batch 8 tiles): 9 tiles of 256 per 512 x 512 slice at overlap 32, 45 tiles per pass. The runners are timed
in turn (interleaved: torch, ORT fp32, ORT int8 ..., repeated --reps times, each after one untimed warm-up pass);
a runner's speed is 45 tiles / the median pass time. torch.set_num_threads and onnxruntime's intra_op_num_threads
are both --threads (default 2, the machine's cores). Claims: ORT fp32 tiles/s / PyTorch eager tiles/s >= 1.5; each
int8 model's Dice on the validation masks within 0.01 of float32's.

--variants adds rows for what might close a gap: ORT at graph optimisation levels 'basic' / 'extended' (default
'all'), PyTorch with channels_last memory format. --encoder_unet also times EncoderUNet('resnet18', in_chans=1)
(random weights: speed only).

    python bench/onnx_speed.py [--quick] [--threads 2] [--reps 3] [--checkpoint PATH] [--train_seconds 60]
                               [--tile 256] [--overlap 32] [--variants] [--encoder_unet]
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import claim, table, write  # noqa: E402

from reprlab.checkpoint import create_model  # noqa: E402
from reprlab.deploy import (OnnxSegmenter, TorchSegmenter, checkpoint_segmenter_args, export_onnx,  # noqa: E402
                            quantize_onnx)
from reprlab.seg_losses import DiceBCELoss, SegMeter  # noqa: E402
from reprlab.segmentation import EncoderUNet, n_parameters  # noqa: E402
from reprlab.testing import shared_data  # noqa: E402


def load_isbi(data: str | None, tmp: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    "All 25 slices uint8 (25, 1, 512, 512) and masks bool (25, 1, 512, 512) from --data, /tmp/isbi or the shared tarball."
    from PIL import Image
    cands = [Path(data)] if data else [Path("/tmp/isbi/isbi2012-em")]
    root = next((c for c in cands if (c / "scenes").is_dir()), None)
    if root is None:
        if data: sys.exit(f"--data {data}: no scenes/ folder there")
        tar = shared_data("isbi2012-em.tar.gz")
        if tar is None: sys.exit("isbi2012-em.tar.gz not found in ../shared/data (or give --data DIR with scenes/ and masks/)")
        with tarfile.open(tar) as t: t.extractall(tmp, filter="data")
        root = tmp / "isbi2012-em"
    load = lambda p: np.asarray(Image.open(p).convert("L"))
    names = [f"{i:02d}.png" for i in range(25)]
    x = torch.from_numpy(np.stack([load(root / "scenes" / n) for n in names]))[:, None]
    y = torch.from_numpy(np.stack([load(root / "masks" / n) for n in names]) > 127)[:, None]
    return x.contiguous(), y, str(root)


def train_unet(x: torch.Tensor, y: torch.Tensor, seconds: float, crop: int = 128, batch: int = 4, seed: int = 0):
    "The project's UNet (depth 4, width 32) trained for `seconds` on random crops of `x` / `y`: (model, mean, std, log)."
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = create_model("unet", in_chans=1, n_classes=1, depth=4, width=32)
    mean, std = (x.float() / 255).mean().item(), (x.float() / 255).std().item()
    xs, ys = (x.float() / 255 - mean) / std, y.float()
    opt, loss_fn = torch.optim.Adam(model.parameters(), 1e-3), DiceBCELoss()
    t0, steps, losses = time.perf_counter(), 0, []
    model.train()
    while time.perf_counter() - t0 < seconds:
        i = torch.randint(0, len(xs), (batch,), generator=g)
        oy, ox = torch.randint(0, xs.shape[-2] - crop + 1, (2, batch), generator=g)
        xb = torch.stack([xs[k, :, a:a + crop, b:b + crop] for k, a, b in zip(i, oy, ox)])
        yb = torch.stack([ys[k, :, a:a + crop, b:b + crop] for k, a, b in zip(i, oy, ox)])
        if torch.rand((), generator=g) < 0.5: xb, yb = xb.flip(-1), yb.flip(-1)
        if torch.rand((), generator=g) < 0.5: xb, yb = xb.flip(-2), yb.flip(-2)
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward(); opt.step()
        steps += 1; losses.append(loss.item())
    log = dict(steps=steps, seconds=round(time.perf_counter() - t0, 1), crop=crop, batch=batch, lr=1e-3,
               loss_first=round(losses[0], 4), loss_last10=round(statistics.mean(losses[-10:]), 4))
    return model.eval(), [mean], [std], log


def calibration_tiles(x: torch.Tensor, n: int = 16, tile: int = 256, seed: int = 1) -> list[torch.Tensor]:
    "`n` random uint8 (1, tile, tile) crops of the training slices."
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(0, len(x), (1,), generator=g))
        a, b = torch.randint(0, x.shape[-1] - tile + 1, (2,), generator=g).tolist()
        out.append(x[k, :, a:a + tile, b:b + tile].clone())
    return out


def timed_pass(seg, slices, tile, overlap, batch_size) -> tuple[float, list[torch.Tensor]]:
    "Seconds to predict every slice, and the logits."
    gc.collect()
    t = time.perf_counter()
    out = [seg.predict(s, tile=tile, overlap=overlap, batch_size=batch_size) for s in slices]
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 validation slices, 2 repetitions, 20 s of training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--checkpoint", default=None, help="a reprlab checkpoint of a trained segmentation run (else: train here)")
    ap.add_argument("--train_seconds", type=float, default=None, help="training time of the fallback model (default 60; --quick 20)")
    ap.add_argument("--tile", type=int, default=None, help="tile size (default: the checkpoint's, else 256)")
    ap.add_argument("--overlap", type=int, default=None, help="tile overlap (default: the checkpoint's, else 32)")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--data", default=None, help="folder with scenes/ and masks/ (default /tmp/isbi/isbi2012-em or the shared tarball)")
    ap.add_argument("--variants", action="store_true", help="also ORT at optimisation levels basic / extended, PyTorch channels_last")
    ap.add_argument("--encoder_unet", action="store_true", help="also time EncoderUNet('resnet18', in_chans=1) (random weights)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="onnx_speed.") as tmp: run(a, Path(tmp))


def run(a, tmp: Path):
    "The benchmark, its files (data, ONNX models) in `tmp`."
    torch.set_num_threads(a.threads)
    cap = torch.backends.cpu.get_cpu_capability()
    print(f"CPU capability (torch.backends.cpu.get_cpu_capability()): {cap}; {a.threads} threads for torch and onnxruntime", flush=True)
    x, y, origin = load_isbi(a.data, tmp)
    n_val = 2 if a.quick else 5
    val_x, val_y = list(x[20:20 + n_val]), y[20:20 + n_val]
    reps = 2 if a.quick else a.reps

    if a.checkpoint:
        ck = checkpoint_segmenter_args(a.checkpoint)
        model, mean, std, train_log = ck["model"], ck["mean"], ck["std"], dict(checkpoint=str(a.checkpoint))
        tile, overlap, thr = a.tile or ck["tile"] or 256, a.overlap if a.overlap is not None else ck["overlap"], ck["threshold"]
    else:
        secs = a.train_seconds if a.train_seconds is not None else (20 if a.quick else 60)
        print(f"no --checkpoint: training UNet(depth 4, width 32) for {secs:.0f} s on the 20 training slices ...", flush=True)
        model, mean, std, train_log = train_unet(x[:20], y[:20], secs)
        tile, overlap, thr = a.tile or 256, 32 if a.overlap is None else a.overlap, 0.5
        print(f"trained: {train_log}", flush=True)
    meta = dict(tile=tile, overlap=overlap, threshold=thr, classes=["cell", "membrane"])
    fp32 = export_onnx(model, tmp / "unet.onnx", mean, std, metadata=meta)
    t0 = time.perf_counter()
    dyn = quantize_onnx(fp32, tmp / "unet.int8-dynamic.onnx", "dynamic")
    sta = quantize_onnx(fp32, tmp / "unet.int8-static.onnx", "static", calibration=calibration_tiles(x[:20], tile=tile))
    quant_s = time.perf_counter() - t0
    ort = lambda p, opt="all": OnnxSegmenter(p, threads=a.threads, optimization=opt)
    runners = {"torch eager fp32": TorchSegmenter(model, mean, std, tile, overlap, thr),
               "ORT fp32": ort(fp32), "ORT int8 dynamic": ort(dyn), "ORT int8 static": ort(sta)}
    if a.variants:
        runners["ORT fp32 basic"], runners["ORT fp32 extended"] = ort(fp32, "basic"), ort(fp32, "extended")
        cl = TorchSegmenter(create_model(model.spec["name"], **model.spec["kwargs"]), mean, std, tile, overlap, thr)
        cl.model.model.load_state_dict(model.state_dict())
        cl.model.to(memory_format=torch.channels_last)
        runners["torch eager fp32 channels_last"] = cl
    if a.encoder_unet:
        torch.manual_seed(0)
        enc = EncoderUNet("resnet18", in_chans=1).eval()
        runners["EncoderUNet-r18 torch eager fp32"] = TorchSegmenter(enc, mean, std, tile, overlap, thr)
        runners["EncoderUNet-r18 ORT fp32"] = ort(export_onnx(enc, tmp / "enc.onnx", mean, std, metadata=meta))
    n_tiles = 9 * n_val if (tile, overlap) == (256, 32) else None
    if n_tiles is None:
        from reprlab.tiling import tile_grid
        n_tiles = n_val * len(tile_grid(512, 512, tile, overlap))
    load_before = os.getloadavg()
    logits = {}
    for name, seg in runners.items():                                            # warm-up, and the predictions
        _, logits[name] = timed_pass(seg, val_x, tile, overlap, a.batch_size)
    times = {k: [] for k in runners}
    for r in range(reps):                                                        # interleaved: noise hits every runner alike
        for name, seg in runners.items():
            time.sleep(0.2)
            times[name].append(timed_pass(seg, val_x, tile, overlap, a.batch_size)[0])
        print(f"repetition {r + 1}/{reps}: " + ", ".join(f"{k} {n_tiles / v[-1]:.2f}" for k, v in times.items()) + " tiles/s", flush=True)

    ref = logits["torch eager fp32"]
    per = {}
    for name in runners:
        meter = SegMeter(threshold=thr)
        for lg, yt in zip(logits[name], val_y): meter.update(lg[None], yt[None].long())
        m = meter.compute()
        same_model = not name.startswith("EncoderUNet")
        agree = statistics.mean(((l > 0) == (r_ > 0)).float().mean().item() for l, r_ in zip(logits[name], ref)) if same_model else None
        per[name] = dict(tiles_s=n_tiles / statistics.median(times[name]), seconds=[round(v, 3) for v in times[name]],
                         dice=m["dice"], iou=m["iou"], pixel_error=m["pixel_error"], mask_agreement_with_torch=agree,
                         max_abs_logit_diff_vs_torch=max((l - r_).abs().max().item() for l, r_ in zip(logits[name], ref)) if same_model else None)
    base, fp = per["torch eager fp32"], per["ORT fp32"]
    figures = dict(cpu_capability=cap, threads=a.threads, data=origin, val_slices=[f"{20 + i:02d}.png" for i in range(n_val)],
                   tiles_per_pass=n_tiles, tile=tile, overlap=overlap, batch_size=a.batch_size, window="hann",
                   model=dict(spec=getattr(model, "spec", None), parameters=n_parameters(model), mean=mean, std=std, threshold=thr),
                   training=train_log, quantize_seconds=round(quant_s, 1), exporter="torch.onnx.export(dynamo=False), opset 17",
                   file_mb={p.name: round(p.stat().st_size / 2**20, 2) for p in (fp32, dyn, sta)},
                   runners=per, ort_speedup=fp["tiles_s"] / base["tiles_s"],
                   speedup_vs_torch={k: v["tiles_s"] / base["tiles_s"] for k, v in per.items()},
                   dice_change={k: per[k]["dice"] - fp["dice"] for k in ("ORT int8 dynamic", "ORT int8 static")},
                   load_avg_before=load_before, load_avg_after=os.getloadavg())
    if a.encoder_unet:
        figures["encoder_unet_ort_speedup"] = per["EncoderUNet-r18 ORT fp32"]["tiles_s"] / per["EncoderUNet-r18 torch eager fp32"]["tiles_s"]
    rows = [dict(runner=k, **{"tiles/s": f"{v['tiles_s']:.2f}", "vs torch": f"{figures['speedup_vs_torch'][k]:.2f}x",
                              "Dice": f"{v['dice']:.4f}", "agree": "" if v["mask_agreement_with_torch"] is None else f"{v['mask_agreement_with_torch']:.4f}"})
            for k, v in per.items()]
    print(table(rows, ["runner", "tiles/s", "vs torch", "Dice", "agree"]) +
          f"\n({n_val} validation slices 512 x 512, tile {tile}, overlap {overlap}, {n_tiles} tiles per pass, median of {reps}; "
          f"agree = fraction of pixels whose mask equals torch fp32's)")
    print(f"load average (1, 5, 15 min) before {load_before}, after {figures['load_avg_after']}")
    claims = [claim("ORT fp32 tiles/s / PyTorch eager fp32 tiles/s (UNet depth 4 width 32, whole slices in 256 tiles)", figures["ort_speedup"], ">= 1.5")]
    for k, v in figures["dice_change"].items():
        claims.append(claim(f"|Dice {k} - Dice ORT fp32| on the validation masks", abs(v), "<= 0.01"))
    write("onnx_speed", figures, claims, extra_versions=("onnx", "onnxruntime", "numpy", "pillow"), quick=a.quick,
          settings=dict(threads=a.threads, reps=reps, checkpoint=a.checkpoint, variants=a.variants, encoder_unet=a.encoder_unet))


if __name__ == "__main__":
    main()
