"""What every benchmark shares: machine and version facts, and the results file of ARCHITECTURE.md."""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from reprlab.core import atomic_write_text

RESULTS = Path(os.environ.get("REPRLAB_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")   # tests write elsewhere


EMULATION_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")     # set both to avx2 / AVX2 to measure an AVX2 machine here


def machine_kind() -> str:
    "The kind of CPU the figures are from: 'avx512-bf16' (native bf16), 'avx512', 'avx2', ...; '-emulated' when lowered by the env."
    from reprlab.core import cpu_info
    info = cpu_info()
    kind = "avx512-bf16" if info["native_bf16"] else info["capability"].lower()
    return kind + ("-emulated" if any(os.environ.get(k) for k in EMULATION_ENV) else "")


def machine() -> dict:
    "CPU model, torch's capability and native bf16 (the machine kind), cores, memory and whether a GPU was used."
    import torch
    from reprlab.core import cpu_info
    info = cpu_info()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else None
    return dict(cpu=info["model"], kind=machine_kind(), capability=info["capability"], native_bf16=info["native_bf16"],
                emulation={k: os.environ[k] for k in EMULATION_ENV if os.environ.get(k)} or None,
                cores=os.cpu_count(), mem_gib=round(mem, 1) if mem else None, python=platform.python_version(),
                gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, torch_threads=torch.get_num_threads())


def versions(*names: str) -> dict:
    "Installed versions of `names` (and torch, torchvision, reprlab)."
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for n in ("torch", "torchvision", "reprlab", *names):
        try: out[n] = version(n)
        except PackageNotFoundError: out[n] = None
    return out


def claim(what: str, value: float, goal: str) -> dict:
    "One claim: `goal` is '>= X' or '<= X'; `holds` is computed, never typed in."
    op, x = goal.split()
    holds = value >= float(x) if op == ">=" else value <= float(x) if op == "<=" else None
    if holds is None: raise ValueError(f"goal must be '>= X' or '<= X', got {goal!r}")
    return dict(what=what, value=round(float(value), 4), goal=goal, holds=bool(holds))


def results_path(name: str, quick: bool = False) -> Path:
    "bench/results/NAME[-quick]-KIND.json: one file per benchmark, mode and machine kind, so both kinds' figures are kept."
    return RESULTS / f"{name}{'-quick' if quick else ''}-{machine_kind()}.json"


def write(name: str, figures: dict, claims: list[dict], extra_versions=(), path: Path | None = None, **extra) -> Path:
    "Write bench/results/NAME[-quick]-KIND.json (or `path`) and print the claims and the machine kind."
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = dict(name=name, machine=machine(), versions=versions(*extra_versions), command=" ".join([Path(sys.executable).name] + sys.argv),
               figures=figures, claims=claims, **extra)
    path = path or results_path(name, bool(extra.get("quick")))
    print(f"machine: {out['machine']['cpu']}, {out['machine']['kind']}, {out['machine']['torch_threads']} threads")
    atomic_write_text(path, json.dumps(out, indent=1) + "\n")
    for c in claims: print(f"claim: {c['what']} = {c['value']:.3g} (goal {c['goal']}): {'holds' if c['holds'] else 'FAILS'}")
    print(f"wrote {path}")
    return path


def table(rows: list[dict], cols: list[str]) -> str:
    "A plain-text table of `rows` (dicts) with columns `cols`."
    fmt = lambda v: f"{v:,.1f}" if isinstance(v, float) else str(v)
    w = {c: max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(w[c]) for c in cols), "  ".join("-" * w[c] for c in cols)]
    lines += ["  ".join(fmt(r.get(c, "")).ljust(w[c]) for c in cols) for r in rows]
    return "\n".join(lines)
