"""Where a job's time goes: marks taken as it runs, turned into per-phase seconds for output.json."""

from __future__ import annotations

import os
import time

__all__ = ["PhaseTimer", "process_started"]

#: (phase, from mark, to mark) in job order; a phase is reported when both of its marks were taken.
_PHASES = (
    ("imports", "process_start", "main"),
    ("compose_validate", "main", "job_built"),
    ("job_start", "job_built", "run_start"),  # lock, output.json, start callbacks, framework seeding
    ("graph_and_model_build", "samples_ready", "train_begin"),
    ("training", "train_begin", "train_end"),
    ("evaluation", "train_end", "run_end"),
    ("run_step", "samples_ready", "run_end"),  # when the run step does not report its training
    ("export", "run_end", "completed"),
)


def process_started() -> float | None:
    """This process's start as a ``time.time()`` value (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as fh:
            boot = time.time() - float(fh.read().split()[0])  # to 10 ms; /proc/stat's btime is whole seconds
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class PhaseTimer:
    """Wall-clock marks (``time.time()``) of a job's steps and the phases between them."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    def mark(self, name: str, at: float | None = None) -> None:
        """Record that ``name`` happened now (or at ``at``); the first mark of a name counts."""
        self.marks.setdefault(name, time.time() if at is None else at)

    def phases(self, measured: dict[str, float] | None = None) -> dict[str, float]:
        """Seconds per phase: imports, compose_validate, ``measured`` (listing, sample_check, split),
        graph_and_model_build, training, evaluation (or run_step when training was not marked),
        export; and ``total`` from the process start (or the first mark) to completion."""
        m = self.marks
        out: dict[str, float] = {}
        for name, start, end in _PHASES:
            if name == "run_step" and "train_begin" in m:
                continue
            if start in m and end in m:
                out[name] = max(0.0, m[end] - m[start])
        for name, seconds in (measured or {}).items():
            out[name] = seconds
        if "completed" in m and m:
            out["total"] = m["completed"] - min(m.values())
        order = [p for p, _, _ in _PHASES[:3]] + list(measured or {}) + [p for p, _, _ in _PHASES[3:]] + ["total"]
        return {k: round(out[k], 3) for k in order if k in out}
