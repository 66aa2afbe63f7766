"""Reporting layer: the output.json document, metric values and the confusion-matrix charts."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.errors import ConfigError, MetricError
from brevetti_pipe.storage import IoTools

__all__ = ["clean_metrics", "epoch_values", "output_document", "write_confusion_matrix"]

log = logging.getLogger(__name__)


def clean_metrics(metrics: Mapping[str, Any]) -> dict[str, float | int]:
    """Metric values as numbers (ints stay ints).

    A value that is not finite (NaN, inf: a diverged training) is kept, with a warning naming it;
    :func:`output_document` writes it as null (JSON has no NaN).

    Raises:
        MetricError: (a ValueError) for a value that is not a number (text, None).
    """
    clean: dict[str, float | int] = {}
    for name, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise MetricError(f"Metric '{name}' must be a number; got {value!r}") from None
        if not math.isfinite(number):
            log.warning("Metric '%s' is not finite (%s); output.json records it as null", name, number)
        clean[str(name)] = int(value) if isinstance(value, int) and not isinstance(value, bool) else number
    return clean


def progress_name(key: str) -> str:
    """Keras log key -> our metric name: ``val_loss`` -> ``devel_loss``, ``loss`` -> ``train_loss``."""
    if key.startswith("val_"):
        return "devel_" + key[4:]
    if key.startswith(("train_", "devel_", "test_")) or key in ("learning_rate", "lr"):
        return key
    return "train_" + key


def epoch_values(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """An epoch's metrics for progress reports: numbers kept (non-finite as None), the rest dropped."""
    values: dict[str, float | None] = {}
    for k, v in metrics.items():
        try:
            number = float(v)
        except (TypeError, ValueError):
            continue
        values[k] = number if math.isfinite(number) else None
    return values


def output_document(
    *, job: Mapping[str, Any], status: str, settings: Any, config: Any, metrics: Mapping[str, Any], **fields: Any
) -> dict[str, Any]:
    """The output.json document (secrets redacted); ``metrics`` is also written as ``output`` for old readers,
    a non-finite metric as null (JSON has no NaN)."""
    metrics = {k: v if math.isfinite(v) else None for k, v in metrics.items()}
    return _secrets.redact_obj({
        "job": dict(job), "status": status, "settings": settings, "config": config,
        "metrics": dict(metrics), "output": dict(metrics), **fields,
    })


def write_confusion_matrix(io: IoTools, url: str, matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> list[list[int]]:
    """Write a confusion matrix (rows true, columns predicted) as JSON for the report.

    Raises:
        ConfigError: the matrix is not len(classes) x len(classes).
    """
    rows = [[int(v) for v in row] for row in matrix]
    if len(rows) != len(classes) or any(len(r) != len(classes) for r in rows):
        raise ConfigError(f"confusion matrix must be {len(classes)}x{len(classes)} for classes {list(classes)}")
    io.write_file(url, json.dumps({"classes": list(classes), "matrix": rows}))
    return rows


def confusion_counts(y_true: Sequence[int], y_pred: Sequence[int], n: int) -> list[list[int]]:
    """Counts per (true class, predicted class)."""
    matrix = [[0] * n for _ in range(n)]
    for t, p in zip(y_true, y_pred):
        matrix[int(t)][int(p)] += 1
    return matrix
