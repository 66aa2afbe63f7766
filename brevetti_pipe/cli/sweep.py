"""Sweeps: a summary row per run (sweep.csv, sweep.html) after a Hydra multirun, or on demand."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.storage import IoTools

__all__ = ["RUN_FILE", "SweepSummary", "main", "summarize_sweep", "sweep_table", "write_run_summary"]

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


_MINIMISE = re.compile(r"(loss|error|escape|reject|mae|mse|rmse)", re.I)


def _parse_overrides(overrides: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """``key -> (value, text)`` of one run's overrides, parsed with Hydra's own override parser
    (an override it cannot parse is kept whole, as text)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed: dict[str, tuple[Any, str]] = {}
    for line in overrides:
        try:
            ov = parser.parse_override(line)
        except Exception:
            key, _, text = line.partition("=")
            parsed[key] = (text, text)
            continue
        key = ov.get_key_element()
        value = ov.value() if not ov.is_sweep_override() else None
        parsed[key] = (value if isinstance(value, (int, float, str, bool)) or value is None else str(value),
                       ov.get_value_element_as_str())
    return parsed


def _duration(record: dict[str, Any]) -> float | None:
    """Seconds from the run's output.json (``started_at`` to ``ended_at``), when it can be read."""
    artifacts = record.get("artifacts")
    if not artifacts:
        return None
    try:
        out = json.loads(IoTools().read_file(f"{str(artifacts).rstrip('/')}/output.json"))
        start = dt.datetime.fromisoformat(out["started_at"])
        end = dt.datetime.fromisoformat(out["ended_at"])
    except Exception:
        return None
    return max(0.0, (end - start).total_seconds())


def _sweep_settings(folder: Path) -> tuple[str | None, str | None]:
    """(``sweep.objective``, the sweeper's direction) from the sweep's multirun.yaml, when recorded."""
    path = folder / "multirun.yaml"
    if not path.is_file():
        return None, None
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(path)
        objective = OmegaConf.select(cfg, "sweep.objective", default=None)
        direction = OmegaConf.select(cfg, "hydra.sweeper.direction", default=None)
    except Exception:
        return None, None
    if direction is not None and not isinstance(direction, str):
        direction = str(list(direction)[0]) if len(direction) else None
    return (str(objective) if objective else None), direction


def sweep_table(runs: Sequence[dict[str, Any]], objective: str | None = None,
                direction: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per run: ``run``, ``job_id``, a column per swept parameter, ``status``, ``duration_s``,
    the final metrics, ``best``, ``error``, ``report``, ``overrides``.

    Returns:
        The table and what the page needs besides: ``params`` (swept keys), ``constant`` (overrides
        every run shares), ``metrics``, ``objective``, ``minimise``, ``best`` (row position or None).
    """
    parsed = [_parse_overrides(r.get("overrides", [])) for r in runs]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    texts = {k: {p.get(k, (None, None))[1] for p in parsed} for k in keys}
    params = [k for k in keys if len(texts[k]) > 1]
    constant = [f"{k}={next(iter(texts[k]))}" for k in keys if k not in params]
    metrics = list(dict.fromkeys(m for r in runs for m in (r.get("metrics") or {})))
    given = objective
    objective = objective if objective else (metrics[0] if metrics else None)
    if objective and objective in metrics:
        metrics.remove(objective)
        metrics.insert(0, objective)
    minimise = direction.lower().startswith("min") if direction else bool(objective and _MINIMISE.search(objective))
    rows = []
    for r, p in zip(runs, parsed):
        row: dict[str, Any] = {"run": r["run"], "job_id": r.get("job_id")}
        row.update({k: p[k][0] if k in p else None for k in params})
        row.update(status=r.get("status"), duration_s=_duration(r))
        row.update({m: (r.get("metrics") or {}).get(m) for m in metrics})
        row.update(error=r.get("error") or "", report=r.get("report") or "", overrides=" ".join(r.get("overrides", [])))
        rows.append(row)
    columns = ["run", "job_id", *params, "status", "duration_s", *metrics, "best", "error", "report", "overrides"]
    table = pd.DataFrame(rows, columns=[c for c in columns if c != "best"])
    best = None
    if objective and objective in table.columns:
        scores = pd.to_numeric(table[objective], errors="coerce").where(table["status"] == "completed")
        if scores.notna().any():  # the table still has its RangeIndex: the label is the position
            best = int(scores.idxmin() if minimise else scores.idxmax())
    table.insert(columns.index("best"), "best", [i == best for i in range(len(table))])
    return table, {"params": params, "constant": constant, "metrics": metrics, "objective": objective,
                   "objective_given": bool(given),
                   "minimise": minimise, "best": best}


def summarize_sweep(sweep_dir: str | os.PathLike[str], sort_by: str | None = None, ascending: bool = False,
                    objective: str | None = None, direction: str | None = None) -> pd.DataFrame:
    """Collect every run of ``sweep_dir`` into ``sweep.csv`` and ``sweep.html`` there; returns the table.

    Args:
        sweep_dir: the Hydra sweep directory (runs in numbered sub-folders).
        sort_by: a metric name to sort by (missing values last); default: run order.
        ascending: sort ascending instead of descending.
        objective: the metric that picks the best run (default: ``sweep.objective`` of the sweep's
            multirun.yaml, else the first metric).
        direction: ``maximize`` or ``minimize`` (default: the sweeper's, else minimise losses and
            error rates, maximise anything else).
    """
    folder = Path(sweep_dir)
    runs = _load_runs(folder)
    recorded_objective, recorded_direction = _sweep_settings(folder)
    table, info = sweep_table(runs, objective or recorded_objective, direction or recorded_direction)
    if sort_by:
        if sort_by not in table.columns:
            log.warning("sweep summary: no metric %r; sorting by run", sort_by)
        else:
            table = table.sort_values(sort_by, ascending=ascending, na_position="last", kind="mergesort")
    io = IoTools()
    io.write_file(str(folder / "sweep.csv"), table.to_csv(index=False))
    io.write_file(str(folder / "sweep.html"), _html(table, folder, sort_by, info))
    return table


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _html(table: pd.DataFrame, folder: Path, sort_by: str | None, info: dict[str, Any]) -> str:
    from brevetti_pipe.reporting._figures import objective_svg
    from brevetti_pipe.reporting._report import render_page

    objective, params = info["objective"], info["params"]
    rows = []
    for _, row in table.iterrows():
        report = str(row["report"] or "")
        href = os.path.relpath(report, folder) if report and os.path.isabs(report) else report
        duration = row["duration_s"]
        rows.append({
            "run": row["run"], "job_id": _cell(row["job_id"]), "params": [_cell(row[p]) for p in params],
            "status": _cell(row["status"]), "metrics": [_cell(row[m]) for m in info["metrics"]],
            "duration": "" if duration is None or pd.isna(duration) else f"{float(duration):.1f} s",
            "best": bool(row["best"]), "error": row["error"], "report": href,
        })
    charts = []
    if objective and objective in table.columns and len(table) > 1:
        best_pos = next((i for i, b in enumerate(table["best"]) if b), None)
        scores = [None if pd.isna(v) else float(v) for v in pd.to_numeric(table[objective], errors="coerce")]
        for p in params:
            values = [None if pd.isna(v) else v for v in table[p]]
            if any(v is not None for v in values) and any(s is not None for s in scores):
                present = [i for i, v in enumerate(values) if v is not None]
                charts.append(objective_svg(p, [values[i] for i in present], objective, [scores[i] for i in present],
                                            present.index(best_pos) if best_pos in present else None))
    failed = int((table["status"] != "completed").sum()) if len(table) else 0
    return render_page(
        "sweep.html.j2", title=f"Sweep {folder.name}", folder=str(folder), rows=rows, params=params,
        metrics=info["metrics"], objective=objective, minimise=info["minimise"], constant=info["constant"],
        objective_given=info["objective_given"],
        charts=charts, failed=failed, order=f"sorted by {sort_by}" if sort_by else "in run order",
    )


class SweepSummary(Callback):
    """Hydra callback: after a multirun, writes sweep.csv and sweep.html into the sweep dir."""

    def __init__(self, sort_by: str | None = None, ascending: bool = False) -> None:
        self.sort_by = sort_by
        self.ascending = ascending

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        sweep_dir = config.hydra.sweep.dir
        objective = OmegaConf.select(config, "sweep.objective", default=None)
        direction = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
        table = summarize_sweep(sweep_dir, self.sort_by, self.ascending, objective=objective,
                                direction=direction if isinstance(direction, str) else None)
        failed = int((table["status"] != "completed").sum()) if len(table) else 0
        LAST_SWEEP.update({"dir": str(sweep_dir), "runs": len(table), "failed": failed})
        log.info("Sweep summary: %s (%d runs, %d failed)", os.path.join(sweep_dir, "sweep.csv"), len(table), failed)


def main(argv: Sequence[str] | None = None) -> None:
    """``brevetti-pipe-summary SWEEP_DIR``: (re)build the summary of a sweep, e.g. one run on a cluster."""
    parser = argparse.ArgumentParser(prog="brevetti-pipe-summary", description=main.__doc__)
    parser.add_argument("sweep_dir", help="the Hydra sweep directory (multirun/<date>/<time>)")
    parser.add_argument("--sort-by", default=None, help="metric to sort by, e.g. devel_accuracy")
    parser.add_argument("--ascending", action="store_true", help="sort ascending (default: descending)")
    parser.add_argument("--objective", default=None,
                        help="metric that picks the best run (default: the sweep's sweep.objective, else the first metric)")
    parser.add_argument("--direction", choices=("maximize", "minimize"), default=None,
                        help="best is the largest or the smallest objective (default: minimise losses, maximise others)")
    args = parser.parse_args(argv)
    if not Path(args.sweep_dir).is_dir():
        print(f"brevetti-pipe-summary: error: not a directory: {args.sweep_dir}", file=sys.stderr)
        sys.exit(2)
    table = summarize_sweep(args.sweep_dir, args.sort_by, args.ascending, args.objective, args.direction)
    print(table.drop(columns=["overrides"]).to_string(index=False))
    print(f"\nWrote {os.path.join(args.sweep_dir, 'sweep.csv')} and sweep.html")
    if len(table) and (table["status"] != "completed").any():
        sys.exit(1)
