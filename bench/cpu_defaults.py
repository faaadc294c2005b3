"""Which CPU defaults pay off on this machine: mixed precision, channels_last and the allocator setting, side by side.

`s01-train`'s defaults are `--amp=auto` (bf16 autocast only where the CPU computes bf16 natively) and channels_last.
This benchmark measures each choice against its alternative on the machine at hand, for the registered encoders a
user trains first (conv, conv_res, resnet18 with the CIFAR stem, vit_mini): training images/s (forward, backward,
AdamW step) at 32 px, batch 64, the s01-train batch size. The four precision x memory-format settings of an encoder
are interleaved (a b c d a b c d ...), the median of the repetitions is reported. (The allocator setting the
Learner applies, `reprlab.core.tune_allocator`, is measured over whole epochs by `trainer_overhead.py`.)

Claims (on whichever kind of CPU runs it; an AVX2 machine can be reproduced on an AVX-512 one with
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`, which the results record):
- auto precision: images/s of the precision `amp_is_fast` picks / the faster of fp32 and bf16, worst encoder >= 0.9;
- channels_last / contiguous images/s at the auto precision, median over the conv encoders >= 1.0.

    python bench/cpu_defaults.py [--quick] [--reps 5] [--threads 2] [--encoders conv,conv_res,resnet18,vit_mini]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import claim, table, write  # noqa: E402

CONV = ("conv", "conv_res", "resnet18")


def make(encoder: str, bs: int, cl: bool):
    "A classifier on `encoder` with its AdamW optimiser and one fixed batch, in `channels_last` if `cl`."
    from reprlab.checkpoint import create_model
    torch.manual_seed(0)
    kw = dict(encoder_kwargs=dict(cifar_stem=True)) if encoder == "resnet18" else {}
    m = create_model("classifier", encoder=encoder, n_classes=10, **kw)
    x, y = torch.randn(bs, 3, 32, 32), torch.randint(0, 10, (bs,))
    if cl: m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    return m, torch.optim.AdamW(m.parameters(), 1e-3), x, y


def images_per_s(setup, bf16: bool, seconds: float, warmup: int = 2) -> float:
    "Training images/s with bf16 autocast on or off, over about `seconds` of steps (at least 1) after 1 + `warmup` steps."
    m, opt, x, y = setup
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    t = time.perf_counter(); step(); one = time.perf_counter() - t
    for _ in range(warmup if one < seconds else 0): step()     # bf16 on an AVX2 CPU: a step can take 20 s
    steps = max(1, round(seconds / one))            # as many steps as fit: a slow machine measures fewer, never fails
    t = time.perf_counter()
    for _ in range(steps): step()
    return len(x) * steps / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter windows, 3 repetitions (about two minutes)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per setting and repetition")
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--encoders", default="conv,conv_res,resnet18,vit_mini")
    a = ap.parse_args()
    if a.quick: a.reps, a.seconds, a.encoders = 3, 1.0, "conv,conv_res,vit_mini"
    torch.set_num_threads(a.threads)
    from reprlab.core import amp_is_fast, cpu_info
    auto_bf16 = amp_is_fast("cpu")
    print(f"CPU: {cpu_info()}; auto precision: {'bf16' if auto_bf16 else 'fp32'}", flush=True)
    settings = [(bf16, cl) for bf16 in (False, True) for cl in (False, True)]
    figures, rows = {"encoders": {}}, []
    for enc in a.encoders.split(","):
        setups = {s: make(enc, a.bs, s[1]) for s in settings}
        got = {s: [] for s in settings}
        for _ in range(a.reps):
            for s in settings: got[s].append(images_per_s(setups[s], s[0], a.seconds))    # interleaved
        med = {s: statistics.median(v) for s, v in got.items()}
        name = lambda s: f"{'bf16' if s[0] else 'fp32'} {'channels_last' if s[1] else 'contiguous'}"
        best_prec = max(med[(False, True)], med[(True, True)])        # the faster precision, both in channels_last
        figures["encoders"][enc] = dict({name(s): round(v, 1) for s, v in med.items()},
                                        auto_vs_best_precision=med[(auto_bf16, True)] / best_prec,
                                        channels_last_vs_contiguous=med[(auto_bf16, True)] / med[(auto_bf16, False)],
                                        bf16_vs_fp32=med[(True, True)] / med[(False, True)])
        for s in settings: rows.append(dict(encoder=enc, setting=name(s), img_s=med[s], vs_default=med[s] / med[(auto_bf16, True)]))
        print(f"{enc}: " + ", ".join(f"{name(s)} {v:,.0f}" for s, v in med.items()) + " img/s", flush=True)
    print(table(rows, ["encoder", "setting", "img_s", "vs_default"]))
    encs = figures["encoders"]
    conv = [v["channels_last_vs_contiguous"] for k, v in encs.items() if k in CONV] or [v["channels_last_vs_contiguous"] for v in encs.values()]
    claims = [claim("auto precision images/s / the faster of fp32 and bf16 (worst encoder)",
                    min(v["auto_vs_best_precision"] for v in encs.values()), ">= 0.9"),
              claim("channels_last / contiguous images/s at the auto precision (median over conv encoders)", statistics.median(conv), ">= 1.0")]
    write("cpu_defaults", figures, claims, settings=dict(bs=a.bs, reps=a.reps, seconds=a.seconds, threads=a.threads,
                                                         auto_precision="bf16" if auto_bf16 else "fp32"), quick=a.quick)


if __name__ == "__main__":
    main()
