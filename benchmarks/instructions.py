"""Instructions per image, hand vs brevetti: ``python -m benchmarks.instructions ROOT ANTIALIAS [K1 K2]``.

CPU time per image moves by +-10 % on a shared machine (other processes slow the same code down);
the count of executed instructions does not. Each pipeline runs under valgrind's callgrind (needs
``valgrind`` on PATH; about two minutes per pipeline, mostly TensorFlow's import): its datasets are
built first, then with counting on it reads a finite epoch of K1 images, then one of K2 images;
(instructions of the second - of the first) / (K2 - K1) is the per-image cost, without the
iterator start-up both include. The valgrind CPU has no AVX-512, so the absolute counts are those
of the AVX2 code paths; compare pipelines, not machines.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _subset(root: Path, k: int, into: Path) -> Path:
    """``k`` files of ``root`` spread over its classes, as symlinks in ``into`` (same class folders)."""
    from benchmarks.pipelines import _files

    paths = _files(root)[0]
    for path in paths[:: max(1, len(paths) // k)][:k]:
        link = into / Path(path).parent.name / Path(path).name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(path).resolve())
    return into


def _datasets(name: str, root: Path, antialias: bool, sizes: list[int], tmp: Path) -> list:
    from benchmarks import pipelines as p

    out = []
    for k in sizes:
        subset = _subset(root, k, tmp / str(k))
        ds = p.hand(subset, antialias)[0] if name == "hand" else p.brevetti(subset, antialias, repeat=False)[0]
        out.append(ds)
    return out


def child(name: str, root: Path, antialias: bool, sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _count(_datasets(name, root, antialias, sizes, Path(tmp)))


def _count(datasets: list) -> None:
    for ds in datasets:  # trace and warm every function and thread pool before counting
        for _ in ds.take(1):
            pass
    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
    for ds in datasets:
        for _ in ds:
            pass
        subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)


def _summary(path: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {path}")


def count(name: str, root: Path, antialias: bool, k1: int, k2: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             sys.executable, "-m", "benchmarks.instructions", "--child", name, str(root), "1" if antialias else "0",
             str(k1), str(k2)],
            capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
        parts = sorted(glob.glob(out + ".*"), key=lambda f: int(f.rsplit(".", 1)[1]))
        if proc.returncode != 0 or len(parts) < 2:
            raise RuntimeError(f"{name}: callgrind run failed:\n{proc.stderr[-3000:]}")
        return (_summary(parts[1]) - _summary(parts[0])) / (k2 - k1)


def main() -> None:
    if sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), sys.argv[4] == "1", [int(sys.argv[5]), int(sys.argv[6])])
        return
    root, antialias = Path(sys.argv[1]), sys.argv[2] == "1"
    k1, k2 = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (64, 192)
    per_image = {name: count(name, root, antialias, k1, k2) for name in ("hand", "brevetti")}
    for name, ir in per_image.items():
        print(f"{name}: {ir / 1e6:.3f} M instructions per image")
    print(f"brevetti / hand: {per_image['brevetti'] / per_image['hand']:.4f}")


if __name__ == "__main__":
    main()
