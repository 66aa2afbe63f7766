"""Samples-table helpers brevettiai users know: ``explode`` list/tuple columns into rows."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

__all__ = ["explode"]


def _listlike(value: object) -> bool:
    return isinstance(value, (list, tuple, set, frozenset))


def explode(
    samples: pd.DataFrame, on: Sequence[str] | None = None, fillna: str = "N/A", duplicate_id: str | None = "id",
    keep_empty: bool = True,
) -> pd.DataFrame:
    """One row per element of each list/tuple cell in the ``on`` columns (brevettiai's ``explode``).

    Args:
        samples: the table.
        on: columns to explode (default: every column holding lists or tuples).
        fillna: value for missing cells (when ``duplicate_id`` is set, so that they group).
        duplicate_id: a column numbering the original row groups (rows equal on ``on`` share an
            id), so that counts can be de-duplicated after exploding; None for none.
        keep_empty: an empty list gives one row with a missing value instead of none.

    Returns:
        A new table; the input is not changed.
    """
    df = samples.copy()
    on = list(on or df.columns)
    for column in on:
        cells = df[column]
        if keep_empty:
            df[column] = cells.map(lambda v: None if _listlike(v) and len(v) == 0 else v)
    explodable = [c for c in on if df[c].map(_listlike).any()]
    if duplicate_id is not None:
        df = df.astype({c: object for c in on}).fillna(fillna)
        keys = pd.DataFrame({c: df[c].map(lambda v: tuple(v) if _listlike(v) else v) for c in on})
        df[duplicate_id] = keys.groupby(on, sort=True, dropna=False).ngroup().to_numpy()
    for column in explodable:
        df[column] = df[column].map(lambda v: list(v) if _listlike(v) else v)
        df = df.explode(column)
    return df.reset_index(drop=True)
