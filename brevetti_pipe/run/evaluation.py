"""Evaluation of a trained model on each purpose: one pass of predictions, the task's metrics, a
per-sample predictions table (filled in by the run layer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["Evaluation"]


@dataclass
class Evaluation:
    """What evaluating one purpose produced.

    Attributes:
        purpose: ``devel``, ``test`` or ``train``.
        metrics: ``<purpose>_<metric>`` values (also in output.json).
        samples: the evaluated rows of the samples table, in prediction order.
        probabilities: (N, C) class probabilities (classification), else None.
        y_true: (N,) true class indices (classification), else None.
        extra: task-specific arrays (e.g. per-sample IoU for segmentation).
    """

    purpose: str
    metrics: dict[str, float]
    samples: pd.DataFrame
    probabilities: np.ndarray | None = None
    y_true: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
