"""Fail if `nbdev-export` would change lib/, `nbdev-clean` would change nbs/, or `tools/make_readme.py` would change
README.md (the notebooks are the source; README.md is made from nbs/index.ipynb): what `make export` runs."""
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

root = Path(__file__).resolve().parents[1]
bindir = Path(sys.executable).parent


def snapshot(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def differences(a: Path, b: Path) -> list[str]:
    out, cmp = [], filecmp.dircmp(a, b, ignore=["__pycache__"])
    stack = [(cmp, Path())]
    while stack:
        c, rel = stack.pop()
        out += [f"only in before: {rel / n}" for n in c.left_only] + [f"only in after: {rel / n}" for n in c.right_only]
        out += [f"changed: {rel / n}" for n in filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)[1]]
        stack += [(sub, rel / n) for n, sub in c.subdirs.items()]
    return out


with tempfile.TemporaryDirectory() as tmp:
    lib0 = snapshot(root / "lib" / "reprlab", Path(tmp) / "lib")
    nbs0 = snapshot(root / "nbs", Path(tmp) / "nbs")
    readme = root / "README.md"
    readme0 = readme.read_bytes() if readme.is_file() else None
    for cmd in ("nbdev-export", "nbdev-clean"):
        subprocess.run([str(bindir / cmd)], cwd=root, check=True)
    subprocess.run([sys.executable, str(root / "tools" / "make_readme.py")], cwd=root, check=True)   # after the clean, as make export
    bad = [f"lib/reprlab: {d}" for d in differences(lib0, root / "lib" / "reprlab")]
    bad += [f"nbs: {d}" for d in differences(nbs0, root / "nbs")]
    if readme0 != (readme.read_bytes() if readme.is_file() else None):
        bad.append("README.md: changed (it is made from nbs/index.ipynb: edit the notebook)")
    if bad:
        print("nbs/, lib/ and README.md disagree (now fixed in your working tree by export/clean/make_readme; review and commit):\n  "
              + "\n  ".join(bad), file=sys.stderr)
        sys.exit(1)
print("check-export: lib/ matches nbs/, notebooks are clean, README.md matches nbs/index.ipynb")
