"""Sweeps: a summary row per run (sweep.csv, sweep.html) after a Hydra multirun, or on demand."""

from __future__ import annotations

import argparse
import html
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.storage import IoTools

__all__ = ["RUN_FILE", "SweepSummary", "main", "summarize_sweep", "write_run_summary"]

log = logging.getLogger(__name__)

RUN_FILE = "brevetti_run.json"
#: set by SweepSummary in the launching process: how many runs of the last sweep failed
LAST_SWEEP: dict[str, Any] = {}


def write_run_summary(output_dir: str, record: dict[str, Any]) -> None:
    """Write one run's summary (job id, status, overrides, metrics, error, report) into its Hydra dir."""
    os.makedirs(output_dir, exist_ok=True)
    record = {**record, "overrides": [_secrets.redact_config_text(o) for o in record.get("overrides", [])]}
    IoTools().write_file(os.path.join(output_dir, RUN_FILE), json.dumps(_secrets.redact_obj(record), indent=2))


def _load_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    runs = []
    for path in sorted(sweep_dir.glob(f"*/{RUN_FILE}"), key=lambda p: (len(p.parent.name), p.parent.name)):
        try:
            record = _secrets.redact_obj(json.loads(path.read_text()))  # a run's own scrub may have missed one
        except (OSError, ValueError):
            record = {"status": "unreadable", "error": f"cannot read {path}"}
        record["run"] = path.parent.name
        runs.append(record)
    return runs


def summarize_sweep(sweep_dir: str | os.PathLike[str], sort_by: str | None = None, ascending: bool = False) -> pd.DataFrame:
    """Collect every run of ``sweep_dir`` into ``sweep.csv`` and ``sweep.html`` there; returns the table.

    Args:
        sweep_dir: the Hydra sweep directory (runs in numbered sub-folders).
        sort_by: a metric name to sort by (missing values last); default: run order.
        ascending: sort ascending instead of descending.
    """
    folder = Path(sweep_dir)
    runs = _load_runs(folder)
    rows = []
    for r in runs:
        row = {"run": r["run"], "job_id": r.get("job_id"), "status": r.get("status"),
               "overrides": " ".join(r.get("overrides", [])), "error": r.get("error") or ""}
        row.update({k: v for k, v in (r.get("metrics") or {}).items()})
        row["report"] = r.get("report") or ""
        rows.append(row)
    table = pd.DataFrame(rows, columns=None if rows else ["run", "job_id", "status", "overrides", "error", "report"])
    if sort_by:
        if sort_by not in table.columns:
            log.warning("sweep summary: no metric %r; sorting by run", sort_by)
        else:
            table = table.sort_values(sort_by, ascending=ascending, na_position="last", kind="mergesort")
    io = IoTools()
    io.write_file(str(folder / "sweep.csv"), table.to_csv(index=False))
    io.write_file(str(folder / "sweep.html"), _html(table, folder, sort_by))
    return table


def _html(table: pd.DataFrame, folder: Path, sort_by: str | None) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = []
    for _, row in table.iterrows():
        cells = []
        for col, value in row.items():
            text = "" if pd.isna(value) else (f"{value:.4g}" if isinstance(value, float) else str(value))
            if col == "report" and text:
                href = os.path.relpath(text, folder) if os.path.isabs(text) else text
                cells.append(f"<td><a href='{html.escape(href)}'>report</a></td>")
            else:
                cls = " class='failed'" if col == "status" and text == "failed" else ""
                cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    order = f"sorted by {html.escape(sort_by)}" if sort_by else "in run order"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>sweep</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2rem .5rem}th{background:#eee}.failed{color:#d62728;font-weight:600}"
        f"</style></head><body><h1>Sweep: {len(table)} runs</h1><p>{order}</p>"
        f"<table><tr>{head}</tr>{''.join(body)}</table></body></html>"
    )


class SweepSummary(Callback):
    """Hydra callback: after a multirun, writes sweep.csv and sweep.html into the sweep dir."""

    def __init__(self, sort_by: str | None = None, ascending: bool = False) -> None:
        self.sort_by = sort_by
        self.ascending = ascending

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.dir
        table = summarize_sweep(sweep_dir, self.sort_by, self.ascending)
        failed = int((table["status"] != "completed").sum()) if len(table) else 0
        LAST_SWEEP.update({"dir": str(sweep_dir), "runs": len(table), "failed": failed})
        log.info("Sweep summary: %s (%d runs, %d failed)", os.path.join(sweep_dir, "sweep.csv"), len(table), failed)


def main(argv: Sequence[str] | None = None) -> None:
    """``brevetti-pipe-summary SWEEP_DIR``: (re)build the summary of a sweep, e.g. one run on a cluster."""
    parser = argparse.ArgumentParser(prog="brevetti-pipe-summary", description=main.__doc__)
    parser.add_argument("sweep_dir", help="the Hydra sweep directory (multirun/<date>/<time>)")
    parser.add_argument("--sort-by", default=None, help="metric to sort by, e.g. devel_accuracy")
    parser.add_argument("--ascending", action="store_true", help="sort ascending (default: descending)")
    args = parser.parse_args(argv)
    if not Path(args.sweep_dir).is_dir():
        print(f"brevetti-pipe-summary: error: not a directory: {args.sweep_dir}", file=sys.stderr)
        sys.exit(2)
    table = summarize_sweep(args.sweep_dir, args.sort_by, args.ascending)
    print(table.to_string(index=False))
    print(f"\nWrote {os.path.join(args.sweep_dir, 'sweep.csv')} and sweep.html")
    if len(table) and (table["status"] != "completed").any():
        sys.exit(1)
