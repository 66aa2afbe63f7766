"""Run layer: the accept/reject threshold a line runs at, chosen on devel (pure NumPy, no TensorFlow).

A sample is *accepted* when its probability of the accept class (e.g. ``good``) is at least the
threshold, else *rejected*. The *escape rate* is the fraction of defective samples (any other
class) that are accepted; the *false reject rate* the fraction of accept-class samples rejected.
:func:`choose_operating_point` picks the lowest threshold whose devel escape rate is at most
``max_escape_rate``: of all thresholds allowed, it rejects the fewest good samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from brevetti_pipe.errors import ConfigError, StageError, did_you_mean

__all__ = [
    "OperatingPoint", "accept_index", "choose_operating_point", "decisions", "rates", "tradeoff_curve",
]

_KEY = "evaluation.operating_point.accept_class"


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold on P(accept class) and its rates on the samples it was measured on.

    ``escape_rate`` is None when there were no defective samples, ``false_reject_rate`` None when
    there were no accept-class samples (a rate of nothing is undefined, not 0).
    """

    threshold: float
    escape_rate: float | None
    false_reject_rate: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def accept_index(classes: Sequence[str], accept_class: str) -> int:
    """The output column of ``accept_class``.

    Raises:
        ConfigError: naming ``evaluation.operating_point.accept_class`` when it is not a class.
    """
    names = list(classes)
    if accept_class not in names:
        raise ConfigError(
            f"{_KEY} must be one of the model's classes {names}. Received: {_KEY}={accept_class!r}"
            + did_you_mean(accept_class, names)
        )
    return names.index(accept_class)


def _split(scores: Any, is_good: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    g = np.asarray(is_good, dtype=bool).reshape(-1)
    if s.shape != g.shape:
        raise StageError(f"scores and is_good differ in length: {s.shape[0]} != {g.shape[0]}")
    return s[g], s[~g]


def rates(scores: Any, is_good: Any, threshold: float) -> OperatingPoint:
    """Escape and false reject rates of accepting ``scores >= threshold``.

    Args:
        scores: P(accept class) per sample.
        is_good: True where the sample's true class is the accept class.
        threshold: accept at or above it.
    """
    good, bad = _split(scores, is_good)
    escape = float(np.mean(bad >= threshold)) if bad.size else None
    false_reject = float(np.mean(good < threshold)) if good.size else None
    return OperatingPoint(float(threshold), escape, false_reject)


def _candidates(scores: np.ndarray) -> np.ndarray:
    """Every threshold that changes a decision: each distinct score (ties move together), plus one
    just above the highest (reject everything), ascending."""
    distinct = np.unique(scores)
    top = np.nextafter(distinct[-1], np.inf) if distinct.size else 1.0
    return np.append(distinct, top)


def tradeoff_curve(scores: Any, is_good: Any) -> list[OperatingPoint]:
    """The escape / false reject trade-off at every threshold that changes a decision, ascending."""
    good, bad = _split(scores, is_good)
    thresholds = _candidates(np.concatenate([good, bad]))
    # counts via sorted search: O((n + t) log n) instead of one pass per threshold
    good_sorted, bad_sorted = np.sort(good), np.sort(bad)
    rejected_good = np.searchsorted(good_sorted, thresholds, side="left")
    accepted_bad = bad.size - np.searchsorted(bad_sorted, thresholds, side="left")
    return [
        OperatingPoint(float(t), float(a / bad.size) if bad.size else None, float(r / good.size) if good.size else None)
        for t, a, r in zip(thresholds, accepted_bad, rejected_good)
    ]


def choose_operating_point(scores: Any, is_good: Any, max_escape_rate: float) -> OperatingPoint:
    """The lowest threshold whose escape rate is at most ``max_escape_rate`` (the fewest false rejects
    among the allowed thresholds). Without defective samples every threshold is allowed, so the
    lowest score is chosen (nothing is rejected) and ``escape_rate`` is None.

    Raises:
        ConfigError: ``max_escape_rate`` outside [0, 1].
    """
    if not 0.0 <= max_escape_rate <= 1.0 or math.isnan(max_escape_rate):
        raise ConfigError(f"evaluation.operating_point.max_escape_rate must be in [0, 1]. Received: {max_escape_rate}")
    for point in tradeoff_curve(scores, is_good):  # ascending: the first allowed one rejects the fewest
        if point.escape_rate is None or point.escape_rate <= max_escape_rate:
            return point
    raise AssertionError("unreachable: the top threshold accepts nothing")  # pragma: no cover


def decisions(p_accept: Any, threshold: float) -> list[str]:
    """``accept`` where P(accept class) >= ``threshold``, else ``reject``."""
    return ["accept" if p >= threshold else "reject" for p in np.asarray(p_accept, dtype=np.float64).reshape(-1)]
