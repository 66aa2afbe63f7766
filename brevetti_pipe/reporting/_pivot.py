"""Pivot tables of the samples table: counts (and aggregates) per row x column field."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from brevetti_pipe._util.category import category_label
from brevetti_pipe.storage import IoTools, join_url

__all__ = ["export_pivot_table", "pivot_counts"]


def _labels(series: pd.Series) -> pd.Series:
    return series.map(category_label)


def pivot_counts(samples: pd.DataFrame, rows: Sequence[str], cols: Sequence[str]) -> pd.DataFrame:
    """Sample counts with ``rows`` as the index and ``cols`` as the columns (tuples joined by '/')."""
    missing = [c for c in [*rows, *cols] if c not in samples.columns]
    if missing:
        raise KeyError(f"pivot fields {missing} are not sample columns; available: {list(samples.columns)}")
    frame = pd.DataFrame({c: _labels(samples[c]) for c in [*rows, *cols]})
    frame["count"] = 1
    table = frame.pivot_table(index=list(rows), columns=list(cols) or None, values="count", aggfunc="sum", fill_value=0)
    return table.astype(int)


def export_pivot_table(
    pivot_dir: str,
    samples: pd.DataFrame,
    rows: Sequence[str] = ("dataset_id",),
    cols: Sequence[str] = ("category",),
    agg: Mapping[str, str] | None = None,
    io: IoTools | None = None,
    **_: Any,
) -> pd.DataFrame:
    """Write a pivot table of ``samples`` into ``pivot_dir`` and return the counts table.

    Files: ``summary_fields.json`` (the field definitions: name, label, role), ``pivot_data.json``
    (one record per group with its ``count`` and the ``agg`` columns) and ``pivot.csv`` (the
    rows x cols count table). Extra keyword arguments of the brevettiai signature
    (``datasets``, ``fields``, ``tags``) are accepted and ignored.
    """
    io = io or IoTools()
    rows, cols = list(rows), list(cols)
    table = pivot_counts(samples, rows, cols)
    keys = [*rows, *cols]
    frame = pd.DataFrame({c: _labels(samples[c]) for c in keys})
    grouped = frame.assign(count=1).groupby(keys, dropna=False)
    data = grouped["count"].sum().reset_index()
    for column, how in (agg or {}).items():
        if column in samples.columns:
            values = samples[column].groupby([frame[k] for k in keys], dropna=False).agg(how).reset_index(drop=True)
            data[column] = _labels(values) if values.dtype == object else values
    fields = [{"name": k, "label": k.replace("_", " "), "role": "row" if k in rows else "column"} for k in keys]
    fields.append({"name": "count", "label": "samples", "role": "value"})
    io.write_file(join_url(pivot_dir, "summary_fields.json"), json.dumps(fields, indent=2))
    io.write_file(join_url(pivot_dir, "pivot_data.json"), data.to_json(orient="records", indent=2))
    io.write_file(join_url(pivot_dir, "pivot.csv"), table.to_csv())
    return table
