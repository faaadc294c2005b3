"""Images/s forward + backward of every registered encoder at 32 px, batch 128, fp32 and bf16 autocast, channels_last
off and on, against the bare torchvision model called directly (same weights): the wrapper's overhead.

Wrapper and bare model are timed alternately (w b w b ...); the overhead is the median of the paired time
ratios, so machine noise affects both alike. Claim: the median wrapper overhead over all torchvision families and
settings is <= 2 % (single settings scatter by +-5-15 % on this VM between repetitions, in both directions; the
max is reported, not claimed). `--from_json` recomputes the table and claims from a results file.

    python bench/encoder_throughput.py [--quick] [--encoders resnet18,conv] [--reps 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import claim, table, write  # noqa: E402

from reprlab.core import amp_is_fast, tune_allocator  # noqa: E402
from reprlab.encoders import TV_FAMILIES, create_encoder, list_encoders  # noqa: E402


class Bare(nn.Module):
    "The torchvision model itself, its classifier replaced by nothing: what a user would call without reprlab."
    def __init__(self, name: str):
        super().__init__()
        m = torchvision.models.get_model(name, weights=None)
        if hasattr(m, "fc"): m.fc = nn.Identity()
        elif name.startswith("convnext"): m.classifier[2] = nn.Identity()
        else: m.classifier = nn.Identity()
        self.m = m
    def forward(self, x): return self.m(x)


def step_time(model, x, amp: bool, iters: int) -> float:
    "Seconds per forward + backward of a batch (after one warm-up step)."
    def one():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        out.float().sum().backward()
        for p in model.parameters(): p.grad = None
    one()
    t = time.perf_counter()
    for _ in range(iters): one()
    return (time.perf_counter() - t) / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="resnet18 only (the claim needs a torchvision family), 9 short repetitions (about a minute)")
    ap.add_argument("--encoders", default=None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--from_json", help="recompute the claims of an earlier results file instead of measuring")
    a = ap.parse_args()
    if a.from_json:
        import json
        old = json.loads(Path(a.from_json).read_text())
        write("encoder_throughput", old["figures"], claims_from(old["figures"]), settings=old.get("settings"))
        return
    torch.set_num_threads(a.threads)
    tune_allocator()          # the Learner does this on the CPU; both sides get it
    names = a.encoders.split(",") if a.encoders else (["resnet18"] if a.quick else list_encoders())
    # quick: one family, but enough interleaved pairs that the median ratio is stable (2 pairs scattered by +-5 %)
    if a.quick: a.reps, a.iters = 9, 2
    x0 = torch.randn(a.bs, 3, 32, 32)
    rows, figures = [], {}
    for name in names:
        for amp in ((False, True) if amp_is_fast("cpu") else (False,)):   # bf16 only where it is fast (it is 3-15x slower on AVX2)
            for cl in (False, True):
                torch.manual_seed(0)
                enc = create_encoder(name).train()
                bare = None
                if name in TV_FAMILIES:
                    bare = Bare(name).train()
                    src = [v for k, v in bare.m.state_dict().items()]
                    dst = list(enc.state_dict())
                    if len(src) == len(dst): enc.load_state_dict(dict(zip(dst, src)))
                fmt = torch.channels_last if cl else torch.contiguous_format
                x = x0.contiguous(memory_format=fmt)
                enc = enc.to(memory_format=fmt)
                if bare is not None: bare = bare.to(memory_format=fmt)
                tw, tb = [], []
                for _ in range(a.reps):
                    tw.append(step_time(enc, x, amp, a.iters))
                    if bare is not None: tb.append(step_time(bare, x, amp, a.iters))
                w = a.bs / statistics.median(tw)
                b = a.bs / statistics.median(tb) if tb else None
                over = (statistics.median(p / q for p, q in zip(tw, tb)) - 1) * 100 if b else None   # median of paired ratios
                key = f"{name} {'bf16' if amp else 'fp32'} {'channels_last' if cl else 'contiguous'}"
                figures[key] = dict(wrapper_img_s=w, bare_img_s=b, overhead_pct=over)
                rows.append(dict(encoder=name, dtype="bf16" if amp else "fp32", channels_last=cl, img_s=round(w, 1),
                                 bare_img_s=round(b, 1) if b else "-", overhead_pct=f"{over:+.1f}" if over is not None else "-"))
                print(f"{key}: {w:,.0f} img/s" + (f", bare {b:,.0f}, overhead {over:+.1f} %" if b else ""), flush=True)
    print(table(rows, ["encoder", "dtype", "channels_last", "img_s", "bare_img_s", "overhead_pct"]))
    write("encoder_throughput", figures, claims_from(figures), settings=dict(bs=a.bs, size=32, reps=a.reps, iters=a.iters, threads=a.threads), quick=a.quick)


def claims_from(figures: dict) -> list[dict]:
    "The claim (median overhead) and the spread, from the per-setting figures."
    over = [f["overhead_pct"] for f in figures.values() if f.get("overhead_pct") is not None]
    if not over: return []
    print(f"wrapper overhead over {len(over)} settings: median {statistics.median(over):+.2f} %, "
          f"min {min(over):+.1f} %, max {max(over):+.1f} %, within +-2 %: {sum(abs(o) <= 2 for o in over)}/{len(over)}")
    return [claim("median wrapper overhead over bare torchvision, % (all families, fp32/bf16, channels_last off/on)",
                  statistics.median(over), "<= 2")]


if __name__ == "__main__":
    main()
