"""Benchmark runner: ``python -m benchmarks`` (or ``make bench``) -> benchmarks/RESULTS.md.

Generates the data set (1,050 synthetic 512x512 vial images in 3 class folders, as BMP, PNG
and JPEG; deterministic), runs every pipeline in its own process, interleaved over several
rounds, and reports images/s (min / median / max over all measured epochs of all rounds) and
the ratio of medians to the hand-written tf.data pipeline measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
FORMATS = ("bmp", "png", "jpg")


def make_data(per_class: int) -> dict[str, Path]:
    from brevetti_pipe.data._demo import generate_vials

    out = {}
    for fmt in FORMATS:
        root = DATA / f"vials_{fmt}_{per_class}"
        if not root.exists():
            print(f"generating {root} ...", flush=True)
            generate_vials(str(root), per_class=per_class, size=512, fmt=fmt)
        out[fmt] = root
    return out


def run_one(name: str, root: Path, antialias: bool, epochs: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.pipelines", name, str(root), "1" if antialias else "0", str(epochs)],
                          capture_output=True, text=True, cwd=HERE.parent, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} {root.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        mem = float("nan")
    versions = {}
    for pkg in ("brevetti_pipe", "tensorflow-cpu", "tensorflow", "keras", "numpy", "pillow"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return [
        f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='minutes')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.platform()}",
        f"- Python {platform.python_version()}; " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs per run")
    parser.add_argument("--per-class", type=int, default=350)
    parser.add_argument("--formats", default="bmp,png,jpg")
    parser.add_argument("--pipelines", default="io_floor,decode_floor,keras_dir,hand,brevetti,brevetti_cached,brevetti_disk",
                        help="pipelines of the input-pipeline section (hand and brevetti are the targets' pair)")
    parser.add_argument("--rerun-rounds", type=int, default=3, help="rounds of the rerun section")
    parser.add_argument("--skip-scale", action="store_true", help="skip the split/sampler/listing scale section")
    parser.add_argument("--skip-remote", action="store_true", help="skip the S3 section")
    parser.add_argument("--remote-rounds", type=int, default=5, help="interleaved rounds of the S3 section")
    parser.add_argument("--only-remote", action="store_true", help="run only the S3 section (printed, RESULTS.md untouched)")
    parser.add_argument("--skip-jobs", action="store_true", help="skip the time-to-a-trained-model, rerun and train-step sections")
    parser.add_argument("--job-rounds", type=int, default=5, help="interleaved rounds of the time-to-a-trained-model section")
    parser.add_argument("--long-rounds", type=int, default=3,
                        help="interleaved rounds of that section's longer trainings (0: none)")
    parser.add_argument("--long-epochs", type=int, default=24, help="epochs of the longer trainings")
    parser.add_argument("--train-step", action="store_true",
                        help="run only the train-step check: steps/s of a fixed model fed by our pipeline vs in-memory "
                             "tensors (printed, RESULTS.md untouched)")
    args = parser.parse_args()
    if args.train_step:
        from benchmarks.train_step import train_step_section

        print("\n".join(train_step_section(make_data(args.per_class)["bmp"])))
        return
    if args.only_remote:
        from benchmarks.remote import remote_section

        print("\n".join(remote_section(per_class=args.per_class, rounds=args.remote_rounds)))
        return
    data = make_data(args.per_class)
    formats = [f for f in args.formats.split(",") if f]
    header = ["# Benchmark results", "", "Produced by `python -m benchmarks` (`make bench`); regenerate on the target machine.", ""]
    header += machine()
    header += [f"- load average (1, 5, 15 min) at the start: {load()}; the machine is shared, so every comparison below "
               "interleaves its rounds and compares medians measured in this run"]
    sections: list[list[str]] = []

    def publish(pending: list[str]) -> None:
        """RESULTS.md after each section, so that a long run leaves what it finished."""
        body = [line for sec in sections for line in ("", *sec)]
        targets = [line for line in body if line.startswith("- ") and "(target" in line]
        glance = ["", "## Targets at a glance", "", *targets] if targets else []
        tail = ["", f"(Still running when this was written: {', '.join(pending)}.)"] if pending else []
        (HERE / "RESULTS.md").write_text(
            "\n".join([*header, f"- load average when written: {load()}", *glance, *body, *tail]) + "\n")

    steps: list[tuple[str, Any]] = []
    if not args.skip_jobs:
        from benchmarks.trained import rerun_section, ttm_section

        steps += [("time to a trained model", lambda: ttm_section(rounds=args.job_rounds, long_rounds=args.long_rounds,
                                                                 long_epochs=args.long_epochs)),
                  ("reruns", lambda: rerun_section(rounds=args.rerun_rounds))]
    if not args.skip_scale:
        from benchmarks.scale import scale_section

        # --skip-remote also leaves out the scale section's S3 listings (moto on loopback)
        steps.append(("scale", (lambda: scale_section(s3_sizes=())) if args.skip_remote else scale_section))
    steps.append(("input pipeline", lambda: pipelines_section(args, data, formats)))
    if not args.skip_jobs:
        from benchmarks.train_step import train_step_section

        steps.append(("train step", lambda: train_step_section(data["bmp"])))
    if not args.skip_remote:
        from benchmarks.remote import remote_section

        steps.append(("remote", lambda: remote_section(per_class=args.per_class, rounds=args.remote_rounds)))
    for i, (_, run) in enumerate(steps):
        sections.append(run())
        publish([name for name, _ in steps[i + 1:]])
    print((HERE / "RESULTS.md").read_text())


def load() -> str:
    try:
        return ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


#: the cached pipelines: an extra first epoch fills the cache, epochs 2+ are measured
_CACHED = {"brevetti_cached": "cached (memory)", "brevetti_disk": "cached on disk (data.cache=<dir>, checksummed entries)"}


def pipelines_section(args: argparse.Namespace, data: dict[str, Path], formats: list[str]) -> list[str]:
    plan = []
    for fmt in formats:
        plan += [("io_floor", fmt, False), ("decode_floor", fmt, False), ("keras_dir", fmt, False)]
        for aa in (True, False):
            plan += [("hand", fmt, aa), ("brevetti", fmt, aa)]
        plan += [("brevetti_cached", fmt, True), ("brevetti_disk", fmt, True)]
    chosen = set(args.pipelines.split(","))
    plan = [p for p in plan if p[0] in chosen]
    results: dict[tuple[str, str, bool], list[float]] = {}
    cpu: dict[tuple[str, str, bool], list[float]] = {}
    cached_first: dict[tuple[str, str], list[float]] = {}
    setups: dict[tuple[str, str, bool], list[float]] = {}
    for r in range(args.rounds):
        order = plan if r % 2 == 0 else list(reversed(plan))  # alternate to spread drift
        for name, fmt, aa in order:
            epochs = args.epochs + 1 if name in _CACHED else args.epochs
            res = run_one(name, data[fmt], aa, epochs)
            rates, cpu_ms = res["epochs"], res["cpu_ms"]
            setups.setdefault((name, fmt, aa), []).append(res["setup_s"])
            if name in _CACHED:
                cached_first.setdefault((name, fmt), []).append(rates[0])
                rates, cpu_ms = rates[1:], cpu_ms[1:]  # epoch 2 onward
            results.setdefault((name, fmt, aa), []).extend(rates)
            cpu.setdefault((name, fmt, aa), []).extend(cpu_ms)
            print(f"round {r + 1}: {name:16s} {fmt} antialias={aa!s:5s} {statistics.median(rates):8.0f} img/s", flush=True)
    lines = ["## Input pipeline", "", f"Data: {args.per_class * 3} synthetic 512x512 vial images in 3 class folders per format -> batches of 32 at "
             "224x224, rescale to [0, 1], per-sample flip + brightness from stateless seeds, one-hot. "
             f"{args.rounds} interleaved rounds x {args.epochs} measured epochs, each pipeline in its own process; "
             "images/s over an epoch after one warm-up batch. Ratios are medians over the hand-written tf.data "
             "pipeline (same format and antialias) from this run. CPU ms/image is the process's CPU time (all "
             "threads) per image, median: less sensitive than images/s to other load on a shared machine; its "
             "ratio is hand's CPU time over ours (above 1.0: ours needs less CPU).", ""]
    lines += ["| pipeline | format | antialias | min | median | max | ratio to hand | CPU ms/image | CPU ratio |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    med = {k: statistics.median(v) for k, v in results.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    for (name, fmt, aa), values in results.items():
        base = ("hand", fmt, aa if name != "keras_dir" else False)
        hand = med.get(base)
        informative = hand and name not in ("io_floor", "decode_floor")
        ratio = f"{med[(name, fmt, aa)] / hand:.2f}x" if informative else "-"
        cratio = f"{cmed[base] / cmed[(name, fmt, aa)]:.2f}x" if informative and base in cmed else "-"
        lines.append(f"| {name} | {fmt} | {'on' if aa else 'off'} | {min(values):.0f} | {med[(name, fmt, aa)]:.0f} | "
                     f"{max(values):.0f} | {ratio} | {cmed[(name, fmt, aa)]:.2f} | {cratio} |")
    lines += ["", "### Targets", ""]
    for fmt in formats:
        for aa in (True, False):
            if ("hand", fmt, aa) in med:
                r = med[("brevetti", fmt, aa)] / med[("hand", fmt, aa)]
                c = cmed[("hand", fmt, aa)] / cmed[("brevetti", fmt, aa)]
                lines.append(f"- brevetti_pipe / hand, {fmt}, antialias {'on' if aa else 'off'}: {r:.2f}x (target >= 0.95x) "
                             f"{'met' if r >= 0.95 else 'NOT met'} (CPU per image: {c:.2f}x)")
        if ("keras_dir", fmt, False) in med:
            r = med[("brevetti", fmt, False)] / med[("keras_dir", fmt, False)]
            lines.append(f"- brevetti_pipe (antialias off) / Keras directory loader, {fmt}: {r:.2f}x (target >= 1.0x) {'met' if r >= 1.0 else 'NOT met'}")
        for name, what in _CACHED.items():
            if (name, fmt, True) in med:
                r = med[(name, fmt, True)] / med[("hand", fmt, True)]
                first = statistics.median(cached_first[(name, fmt)]) / med[("hand", fmt, True)]
                if name == "brevetti_disk":  # filled by a pre-pass while the dataset is built, before epoch 1
                    fill = statistics.median(setups[(name, fmt, True)]) - statistics.median(setups[("brevetti", fmt, True)])
                    where = f"the fill runs before epoch 1: {fill:.1f} s more set-up than uncached"
                else:
                    where = f"epoch 1 including the cache fill: {first:.2f}x"
                lines.append(f"- {what} epoch 2+ / hand (antialias on), {fmt}: {r:.2f}x (target >= 3x) "
                             f"{'met' if r >= 3 else 'NOT met'}; {where}")
    return lines


if __name__ == "__main__":
    main()
