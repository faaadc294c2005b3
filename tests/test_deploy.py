"""reprlab.deploy against PyTorch: the ONNX graph's logits equal the eager model's on manually normalised input for any
batch and size (UNet's padding included), the runners' tiled predictions equal `predict_tiled` on the torch model,
metadata and checkpoint settings round-trip, writes are atomic, bad input is named, and int8 keeps a trained model's
masks and Dice. Small models (UNet depth 2, width 8); onnx / onnxruntime are the optional extra (skipped without)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from reprlab.checkpoint import create_model, save_checkpoint
from reprlab.deploy import (OnnxSegmenter, RawInputModel, TorchSegmenter, export_onnx, export_run, load_segmenter,
                            quantize_onnx, read_metadata)
from reprlab.seg_losses import DiceBCELoss, seg_metrics
from reprlab.segmentation import EncoderUNet, UNet
from reprlab.tiling import predict_tiled

WHY = "onnxruntime (pip install 'reprlab[onnx]') is not installed"


@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx", reason="onnx (pip install 'reprlab[onnx]') is not installed")
    return pytest.importorskip("onnxruntime", reason=WHY)


def unet(in_chans=1, n_classes=1, seed=0, **kw) -> UNet:
    "A small random UNet (BatchNorm with non-trivial running statistics, so the export's folding is exercised), eval mode."
    torch.manual_seed(seed)
    net = UNet(in_chans, n_classes, depth=kw.pop("depth", 2), width=kw.pop("width", 8), **kw)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2); m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5); m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def u8(*shape, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def session(ort, path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def maxabs(a, b) -> float:
    return (torch.as_tensor(a) - torch.as_tensor(b)).abs().max().item()


def test_module_imports_without_onnx():
    code = ("import sys; sys.modules['onnx'] = None; sys.modules['onnxruntime'] = None\n"
            "import torch; from reprlab.deploy import RawInputModel, export_onnx, OnnxSegmenter, TorchSegmenter\n"
            "from reprlab.segmentation import UNet\n"
            "seg = TorchSegmenter(UNet(1, 1, depth=1, width=2).eval(), tile=8)\n"
            "assert seg.predict(torch.zeros(10, 12, dtype=torch.uint8)).shape == (1, 10, 12)\n"
            "for f in (lambda: export_onnx(UNet(1, 1, depth=1, width=2), 'x.onnx'), lambda: OnnxSegmenter('x.onnx')):\n"
            "    try: f()\n"
            "    except ImportError as e: assert \"pip install 'reprlab[onnx]'\" in str(e), e\n"
            "    else: raise AssertionError('no ImportError')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("n_classes", [1, 3])
def test_onnx_logits_equal_torch_for_any_batch_and_size(ort, tmp_path, n_classes):
    net = unet(n_classes=n_classes)
    sess = session(ort, export_onnx(net, tmp_path / "m.onnx"))
    for b in (1, 3):
        for h, w in [(64, 64), (100, 77), (33, 50), (7, 5), (1, 1)]:       # 1 x 1: replicate padding (too short to reflect)
            x = u8(b, 1, h, w, seed=h * w + b)
            with torch.no_grad(): ref = net(x.float() / 255)
            out = sess.run(None, {"image": x.numpy()})[0]
            assert out.shape == (b, n_classes, h, w)
            assert maxabs(out, ref) < 1e-4, (b, h, w)


def test_deep_unet_padding_fallback_and_encoder_unet(ort, tmp_path):
    "Depth 4 pads to multiples of 16: reflect for 37 x 29, replicate on both axes once one side is too short (5 x 40)."
    for net in (unet(depth=4, width=4), EncoderUNet("conv", in_chans=1).eval()):
        sess = session(ort, export_onnx(net, tmp_path / "m.onnx", example_size=32))
        for h, w in [(32, 32), (37, 29), (5, 40), (3, 3)]:
            x = u8(2, 1, h, w, seed=h + w)
            with torch.no_grad(): ref = net(x.float() / 255)
            assert maxabs(sess.run(None, {"image": x.numpy()})[0], ref) < 1e-4, (type(net).__name__, h, w)


def test_normalisation_is_inside_the_graph(ort, tmp_path):
    net = unet(in_chans=3, n_classes=2)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    sess = session(ort, export_onnx(net, tmp_path / "m.onnx", mean=mean, std=std))
    x = u8(2, 3, 40, 52)
    with torch.no_grad():
        ref = net((x.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])
        assert maxabs(RawInputModel(net, mean, std)(x), ref) < 1e-5
        wrong = net(x.float() / 255)                                           # not normalised: clearly different
    out = sess.run(None, {"image": x.numpy()})[0]
    assert maxabs(out, ref) < 1e-4 and maxabs(out, wrong) > 1e-2
    only_mean = session(ort, export_onnx(net, tmp_path / "m2.onnx", mean=0.5))  # one number: every channel, no std
    with torch.no_grad(): assert maxabs(only_mean.run(None, {"image": x.numpy()})[0], net(x.float() / 255 - 0.5)) < 1e-4
    inp = sess.get_inputs()[0]
    assert (inp.name, inp.type, inp.shape) == ("image", "tensor(uint8)", ["batch", 3, "height", "width"])
    assert sess.get_outputs()[0].name == "logits"


def test_runner_predict_equals_torch_and_predict_tiled(ort, tmp_path):
    net = unet(in_chans=3)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    path = export_onnx(net, tmp_path / "m.onnx", mean=mean, std=std, metadata=dict(tile=48, overlap=12))
    onx, pt = OnnxSegmenter(path, threads=1), TorchSegmenter(net, mean, std, tile=48, overlap=12)
    img = u8(3, 130, 97, seed=3)
    m, s = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    with torch.no_grad(): ref = predict_tiled(lambda t: net((t.float() / 255 - m) / s), img, 48, 12, batch_size=8)
    out = onx.predict(img)
    assert out.shape == (1, 130, 97)
    assert maxabs(out, pt.predict(img)) < 1e-4 and maxabs(out, ref) < 1e-4
    assert maxabs(onx.predict(img.numpy(), window="none", batch_size=2), pt.predict(img, window="none")) < 1e-4
    assert maxabs(onx.predict(img, tile=64, overlap=0), pt.predict(img, tile=64, overlap=0)) < 1e-4
    with torch.no_grad(): whole = net((img[None].float() / 255 - m) / s)
    assert maxabs(TorchSegmenter(net, mean, std).predict(img), whole[0]) < 1e-5   # no tile: one piece
    assert maxabs(onx(img[None].numpy()), whole) < 1e-4


def test_mask_binary_and_multiclass(ort, tmp_path):
    img = u8(70, 90, seed=5)
    bin_seg = OnnxSegmenter(export_onnx(unet(), tmp_path / "b.onnx", metadata=dict(threshold=0.3)))
    logits = bin_seg.predict(img)
    assert bin_seg.threshold == 0.3
    assert torch.equal(bin_seg.mask(img), (torch.sigmoid(logits[0]) > 0.3).to(torch.uint8))
    assert torch.equal(bin_seg.mask(img, threshold=0.7), (torch.sigmoid(logits[0]) > 0.7).to(torch.uint8))
    multi = OnnxSegmenter(export_onnx(unet(n_classes=4), tmp_path / "k.onnx", metadata=dict(tile=32, overlap=8)))
    mk = multi.mask(img)
    assert mk.dtype == torch.uint8 and mk.shape == (70, 90)
    assert torch.equal(mk, multi.predict(img).argmax(0).to(torch.uint8))


def test_metadata_round_trips(ort, tmp_path):
    meta = dict(tile=256, overlap=32, threshold=0.45, classes=["cell", "membrane"], extra={"note": "é", "n": [1, 2.5]})
    path = export_onnx(unet(), tmp_path / "m.onnx", mean=[0.5], std=[0.25], metadata=meta)
    got = read_metadata(path)
    assert {k: got[k] for k in meta} == meta
    assert got["mean"] == [0.5] and got["std"] == [0.25] and got["in_chans"] == 1 and got["n_classes"] == 1
    seg = OnnxSegmenter(path)
    assert (seg.tile, seg.overlap, seg.threshold, seg.metadata) == (256, 32, 0.45, got)
    onnx = pytest.importorskip("onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["reprlab"]) == got
    assert read_metadata(export_onnx(unet(), tmp_path / "bare.onnx"))["mean"] is None
    with pytest.raises(ValueError, match=r"metadata\['std'\]=\[0.3\] differs from the std=\[0.25\]"):
        export_onnx(unet(), tmp_path / "x.onnx", mean=[0.5], std=[0.25], metadata=dict(std=[0.3]))
    with pytest.raises(ValueError, match="metadata must be JSON-serialisable"):
        export_onnx(unet(), tmp_path / "x.onnx", metadata=dict(bad=object()))
    with pytest.raises(ValueError, match="metadata must be a dict or None, got list"):
        export_onnx(unet(), tmp_path / "x.onnx", metadata=[1])


class Broken(nn.Module):
    in_chans = 1

    def forward(self, x): raise RuntimeError("cannot trace this")


def test_export_is_atomic(ort, tmp_path):
    path = export_onnx(unet(), tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]                 # no temp file left
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="cannot trace this"): export_onnx(Broken(), path)
    with pytest.raises(RuntimeError, match="cannot trace this"): export_onnx(Broken(), tmp_path / "new.onnx")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    # a failure at the check, after the export: still nothing written
    import onnx
    orig = onnx.checker.check_model
    onnx.checker.check_model = lambda *a, **k: (_ for _ in ()).throw(onnx.checker.ValidationError("bad graph"))
    try:
        with pytest.raises(onnx.checker.ValidationError): export_onnx(unet(seed=1), path)
    finally: onnx.checker.check_model = orig
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def write_run(root, segmentation="preprocess", name="best.pt", **pre):
    "A run dir with a checkpoint; its segmentation record inside `preprocess` (where --task=segmentation puts it), at the top, or none."
    net = create_model("unet", in_chans=1, n_classes=1, depth=2, width=8)
    torch.manual_seed(1)
    for p in net.parameters(): p.data.normal_(0, 0.3)
    ckpt = dict(model=net.state_dict(), model_spec=net.spec, preprocess=dict(channels=1, classes=["bg", "membrane"], **pre))
    seg = dict(tile=32, overlap=8, threshold=0.4, arch="unet", window="hann")
    if segmentation == "preprocess": ckpt["preprocess"]["segmentation"] = seg
    elif segmentation == "top": ckpt["segmentation"] = seg
    save_checkpoint(ckpt, root / "checkpoints" / name)
    return net.eval()


def test_load_segmenter_dispatch(ort, tmp_path):
    run = tmp_path / "runs" / "seg"
    net = write_run(run, mean=[0.4], std=[0.2])
    img = u8(50, 61, seed=7)
    ref = TorchSegmenter(net, [0.4], [0.2], tile=32, overlap=8).predict(img)
    for p in (run, run / "checkpoints" / "best.pt"):
        seg = load_segmenter(p)
        assert type(seg) is TorchSegmenter and (seg.tile, seg.overlap, seg.threshold) == (32, 8, 0.4)
        assert maxabs(seg.predict(img), ref) < 1e-6
    out = export_run(run)
    assert out == dict(onnx=run / "model.onnx", int8=None)
    onx = load_segmenter(out["onnx"], threads=1)
    assert type(onx) is OnnxSegmenter and (onx.tile, onx.overlap, onx.threshold) == (32, 8, 0.4)
    assert onx.metadata["classes"] == ["bg", "membrane"] and onx.metadata["checkpoint"] == str(run / "checkpoints" / "best.pt")
    assert maxabs(onx.predict(img), ref) < 1e-4
    write_run(tmp_path / "runs" / "top", segmentation="top", mean=[0.4], std=[0.2])
    assert load_segmenter(tmp_path / "runs" / "top").threshold == 0.4
    # last.pt when there is no best.pt; no segmentation / normalisation record: whole image, threshold 0.5, x / 255
    bare = tmp_path / "runs" / "bare"
    net2 = write_run(bare, segmentation=None, name="last.pt")
    seg = load_segmenter(bare)
    assert (seg.tile, seg.overlap, seg.threshold, seg.model.mean, seg.model.std) == (None, 0, 0.5, None, None)
    with torch.no_grad(): assert maxabs(seg.predict(img), net2(img[None, None].float() / 255)[0]) < 1e-6


def test_bad_input_is_named(ort, tmp_path):
    path = export_onnx(unet(), tmp_path / "m.onnx", metadata=dict(tile=32))
    seg = OnnxSegmenter(path)
    with pytest.raises(ValueError, match=r"tiles must hold raw uint8 pixels \(n, C, H, W\) \(the model normalises them itself\), got dtype torch.float32"):
        seg(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="image must hold raw uint8 pixels .* got dtype float64"):
        seg.predict(np.random.rand(40, 40))
    with pytest.raises(ValueError, match=r"image must be uint8 \(H, W\) or \(C, H, W\) with C = 1 channel\(s\), got shape \(3, 40, 40\)"):
        seg.predict(u8(3, 40, 40))
    with pytest.raises(ValueError, match=r"tiles must be uint8 \(n, C, H, W\) with C = 1 channel\(s\), got shape \(1, 32, 32\)"):
        seg(u8(1, 32, 32))
    with pytest.raises(ValueError, match="tiles must be a uint8 .* tensor or ndarray, got list"):
        seg([[1, 2]])
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\), got 1.5"):
        seg.mask(u8(20, 20), threshold=1.5)
    with pytest.raises(ValueError, match="overlap must be in"):
        seg.predict(u8(40, 40), overlap=32)
    with pytest.raises(ValueError, match="optimization must be one of"):
        OnnxSegmenter(path, optimization="max")
    with pytest.raises(ValueError, match=r"image must be a uint8 \(B, 1, H, W\) tensor, got torch.float32"):
        RawInputModel(unet())(torch.rand(1, 1, 8, 8))
    for p in (tmp_path / "missing.onnx", tmp_path / "missing.pt", tmp_path / "no-run"):
        with pytest.raises(FileNotFoundError, match=str(p)): load_segmenter(p)
    with pytest.raises(FileNotFoundError, match=f"ONNX model {tmp_path / 'missing.onnx'} does not exist"):
        OnnxSegmenter(tmp_path / "missing.onnx")
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(FileNotFoundError, match="has no checkpoint"): load_segmenter(tmp_path / "empty-run")
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(ValueError, match=r"path must be an ONNX model \(.onnx\), a reprlab checkpoint \(.pt\) or a run dir"):
        load_segmenter(tmp_path / "model.txt")
    with pytest.raises(ValueError, match="std must be None or 1 finite numbers > 0"):
        export_onnx(unet(), tmp_path / "x.onnx", std=[-1.0])
    with pytest.raises(ValueError, match="opset must be an integer >= 13 and <= 20, got 9"):
        export_onnx(unet(), tmp_path / "x.onnx", opset=9)


def disks(n, size=64, seed=0):
    "`n` noisy uint8 images (n, 1, size, size) of 1-3 bright disks, and their float masks."
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(n, 1, size, size, dtype=torch.bool)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([size, size, 8]) + torch.tensor([0, 0, 6])).tolist()
            masks[i, 0] |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    x = 70 + 90 * masks.float() + 25 * torch.randn(n, 1, size, size, generator=g)
    return x.clamp(0, 255).to(torch.uint8), masks.float()


@pytest.fixture(scope="module")
def trained(ort, tmp_path_factory):
    "A small UNet trained for 40 steps to find bright disks, exported: (path, train images, test images, test masks)."
    torch.manual_seed(0)
    net = UNet(1, 1, depth=2, width=8)
    x, y = disks(8)
    opt, loss_fn = torch.optim.Adam(net.parameters(), 1e-2), DiceBCELoss()
    for _ in range(40):
        opt.zero_grad(); loss_fn(net((x.float() / 255 - 0.4) / 0.2), y).backward(); opt.step()
    path = export_onnx(net.eval(), tmp_path_factory.mktemp("q") / "fp32.onnx", mean=[0.4], std=[0.2], metadata=dict(tile=64))
    xt, yt = disks(6, size=80, seed=1)
    return path, x, xt, yt


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_keeps_the_masks(trained, mode):
    import onnx
    path, x_train, x_test, y_test = trained
    calib = list(x_train[:8]) if mode == "static" else None
    q = quantize_onnx(path, path.with_name(f"{mode}.onnx"), mode, calibration=calib)
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert ("ConvInteger" in ops) if mode == "dynamic" else ("QuantizeLinear" in ops and "DequantizeLinear" in ops)
    assert q.stat().st_size < 0.7 * path.stat().st_size                             # int8 weights (graph overhead: a tiny model)
    fp, i8 = OnnxSegmenter(path)(x_test), OnnxSegmenter(q)(x_test)
    fg = (fp > 0).float().mean().item()
    agree = ((fp > 0) == (i8 > 0)).float().mean().item()
    d32, d8 = seg_metrics(fp, y_test.long())["dice"], seg_metrics(i8, y_test.long())["dice"]
    same = seg_metrics(i8, (fp > 0).long())["dice"]                                # int8's mask against fp32's
    assert 0.03 < fg < 0.97 and d32 > 0.8, (fg, d32)                                # the masks are not trivial
    assert agree >= 0.97 and same >= 0.9 and abs(d8 - d32) < 0.03, (agree, same, d32, d8)
    meta = read_metadata(q)
    assert meta["tile"] == 64 and meta["mean"] == read_metadata(path)["mean"] and meta["quantization"]["mode"] == mode
    assert not [p for p in q.parent.iterdir() if p.name.startswith(".")]            # no temp files or folders


def test_quantize_arguments(trained, tmp_path):
    path, x_train, *_ = trained
    with pytest.raises(ValueError, match="mode='static' needs calibration"): quantize_onnx(path, tmp_path / "q.onnx", "static")
    with pytest.raises(ValueError, match="calibration is only for mode='static'"):
        quantize_onnx(path, tmp_path / "q.onnx", "dynamic", calibration=[x_train[0]])
    with pytest.raises(ValueError, match="calibration must hold at least one"): quantize_onnx(path, tmp_path / "q.onnx", "static", calibration=[])
    with pytest.raises(ValueError, match=r"calibration\[1\] must hold raw uint8 pixels"):
        quantize_onnx(path, tmp_path / "q.onnx", "static", calibration=[x_train[0], x_train[1].float()])
    with pytest.raises(ValueError, match="mode must be 'dynamic' or 'static', got 'fp16'"): quantize_onnx(path, tmp_path / "q.onnx", "fp16")
    with pytest.raises(FileNotFoundError, match="nope.onnx"): quantize_onnx(tmp_path / "nope.onnx", tmp_path / "q.onnx")
    assert not list(tmp_path.iterdir())
