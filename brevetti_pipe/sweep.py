"""The name user configs give the sweep summary callback (``_target_: brevetti_pipe.sweep.SweepSummary``).

The sweep summary lives in :mod:`brevetti_pipe.cli.sweep`; this module re-exports it so configs written
for either name keep working.
"""

from brevetti_pipe.cli.sweep import RUN_FILE, SweepSummary, main, summarize_sweep, write_run_summary

__all__ = ["RUN_FILE", "SweepSummary", "main", "summarize_sweep", "write_run_summary"]
