"""Is a pipeline's parallelism intact? ``python -m benchmarks.threads PIPELINE ROOT ANTIALIAS [EPOCHS]``.

Per measured epoch: images/s, CPU ms per image, and for the two busiest worker threads the
share of the epoch they spent on a CPU, waiting for one (runnable, others' load) and blocked
(not runnable: waiting on a lock, a buffer, I/O). From ``/proc/<pid>/task/*/schedstat``, so it
separates "the machine is busy" (waiting) from "the pipeline holds its workers back" (blocked).
A pipeline with no serialisation point keeps both workers runnable (blocked near 0.0) on a
quiet machine.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _schedstat() -> dict[str, tuple[int, int]]:
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            on_cpu, waiting, _ = open(f"/proc/self/task/{tid}/schedstat").read().split()
        except (OSError, ValueError):
            continue
        out[tid] = (int(on_cpu), int(waiting))
    return out


def main() -> None:
    from benchmarks.pipelines import BATCH, PIPELINES

    name, root, antialias = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1"
    epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    ds, n = PIPELINES[name](root, antialias)
    if not name.startswith("brevetti"):
        ds = ds.repeat()
    it = iter(ds)
    next(it)
    main_tid = str(os.getpid())
    for epoch in range(epochs):
        before, c0, w0 = _schedstat(), time.process_time(), time.perf_counter_ns()
        for _ in range(-(-n // BATCH)):
            next(it)
        wall, cpu, after = time.perf_counter_ns() - w0, time.process_time() - c0, _schedstat()
        rows = sorted(((a - before.get(t, (0, 0))[0], b - before.get(t, (0, 0))[1]) for t, (a, b) in after.items()
                       if t != main_tid), reverse=True)[:2]
        on = sum(r[0] for r in rows) / wall
        waiting = sum(r[1] for r in rows) / wall
        print(f"{name} epoch {epoch}: {n * 1e9 / wall:.0f} images/s, {cpu * 1000 / n:.3f} CPU ms/image; two busiest "
              f"workers: on CPU {on:.2f}, waiting for a CPU {waiting:.2f}, blocked {2 - on - waiting:.2f} (of 2.00); "
              f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
