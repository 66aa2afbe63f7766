"""Group weights of the sampler: which group of samples is drawn how often (no tf.data here)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np
import pandas as pd

from brevetti_pipe._util.category import category_label
from brevetti_pipe.errors import ConfigError, DeprecatedSpellingWarning, did_you_mean

__all__ = ["GroupWeights", "WEIGHTINGS", "group_labels"]

#: Named group weightings: group size -> weight (brevettiai's presets, and its old names).
WEIGHTINGS: dict[str, Callable[[Any], Any]] = {
    "uniform": lambda n: np.ones_like(n, dtype=np.float64),
    "count": lambda n: np.asarray(n, dtype=np.float64),
    "sqrt": np.sqrt,
    "log": np.log,
    "logx+1": lambda n: np.log(n) + 1,
}
_OLD_NAMES = {"square root": "sqrt"}
Weighting = Union[str, Mapping[str, float], Callable[..., Any]]


def group_labels(samples: pd.DataFrame, groupby: Sequence[str]) -> pd.Series:
    """One string label per sample for the ``groupby`` columns (tuples joined with '/')."""
    missing = [c for c in groupby if c not in samples.columns]
    if missing:
        raise ConfigError(
            f"sampler.groupby names unknown column(s) {missing}. "
            f"Available: {list(samples.columns)}.{did_you_mean(missing[0], samples.columns)}"
        )

    parts = [samples[c].map(category_label) for c in groupby]
    out = parts[0]
    for p in parts[1:]:
        out = out + "|" + p
    return out


class GroupWeights:
    """Per-group draw weights: what a DataGenerator asks a sampler (``weights``, ``group_draw``); the
    base of :class:`~brevetti_pipe.data.StratifiedSampler`.

    Args:
        groupby: columns defining the groups (e.g. ``["category"]``); None draws every
            sample once per epoch in a seeded random order.
        weighting: ``"count"`` (groups drawn in proportion to their size: a plain shuffle),
            ``"uniform"`` (every group equally often), ``"sqrt"``, ``"log"``, ``"logx+1"`` (of the
            group size), a function of the group size (``np.sqrt``; one taking ``(size, group)``
            gets the group label too) or a mapping group label -> weight.
        seed: default seed of generators built with :meth:`get`.
        batch_size, max_epoch_samples: defaults of :meth:`get` (brevettiai's sampler held them).
        group_weighing: brevettiai's name of ``weighting``.
    """

    def __init__(
        self,
        groupby: Sequence[str] | None = None,
        weighting: Weighting = "count",
        seed: int = 0,
        *,
        batch_size: int | None = None,
        max_epoch_samples: int | float | None = None,
        group_weighing: Weighting | None = None,
    ) -> None:
        if group_weighing is not None:
            warnings.warn("StratifiedSampler: write weighting=... (brevettiai's group_weighing)", DeprecatedSpellingWarning,
                          stacklevel=2)
            weighting = group_weighing
        if isinstance(weighting, str) and weighting in _OLD_NAMES:
            warnings.warn(f"StratifiedSampler: write weighting={_OLD_NAMES[weighting]!r} (brevettiai's {weighting!r})",
                          DeprecatedSpellingWarning, stacklevel=2)
            weighting = _OLD_NAMES[weighting]
        if isinstance(weighting, str) and weighting not in WEIGHTINGS:
            raise ConfigError(
                f"Unknown sampler weighting. Received: sampler.weighting={weighting!r}. Allowed: "
                f"{', '.join(map(repr, WEIGHTINGS))}, a function of the group size or a mapping group -> weight."
                f"{did_you_mean(weighting, WEIGHTINGS)}"
            )
        if isinstance(seed, int) and seed < 0:  # brevettiai's "random" seed; ours are explicit
            raise ConfigError(f"StratifiedSampler seed must be >= 0 (seeds are explicit here); got {seed}")
        self.groupby = list(groupby) if groupby else None
        self.weighting = weighting
        self.seed = seed
        self.batch_size = batch_size
        self.max_epoch_samples = max_epoch_samples

    def _group_weights(self, labels: pd.Series) -> pd.Series:
        """Weight per group label (not normalised)."""
        sizes = labels.value_counts()
        if isinstance(self.weighting, str):
            return pd.Series(np.asarray(WEIGHTINGS[self.weighting](sizes.to_numpy()), dtype=np.float64), index=sizes.index)
        if callable(self.weighting):
            fn = self.weighting
            values = []
            for group, size in sizes.items():
                try:
                    values.append(float(fn(size, group)))
                except TypeError:
                    values.append(float(fn(size)))
            out = pd.Series(values, index=sizes.index)
            if (out < 0).any() or not np.isfinite(out).all() or out.sum() <= 0:
                raise ConfigError(f"sampler.weighting function gave weights {dict(out)}; they must be finite, >= 0 "
                                  "with a positive sum")
            return out
        unknown = sorted(set(self.weighting) - set(labels))
        if unknown:
            raise ConfigError(
                f"sampler.weighting names group(s) {unknown} not in the data. "
                f"Groups: {sorted(set(labels))}.{did_you_mean(unknown[0], set(labels))}"
            )
        group_w = pd.Series({g: float(self.weighting.get(g, 0.0)) for g in sizes.index})
        if (group_w < 0).any() or group_w.sum() <= 0:
            raise ConfigError(f"sampler.weighting must be >= 0 with a positive sum; got {dict(self.weighting)}")
        return group_w

    def group_draw(self, samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
        """(group code per sample, normalised weight per group) with groups in sorted label order,
        or None without ``groupby``."""
        if not self.groupby:
            return None
        labels = group_labels(samples, self.groupby)
        order = sorted(set(labels))
        weights = self._group_weights(labels).reindex(order).to_numpy(dtype=np.float64)
        codes = labels.map({g: i for i, g in enumerate(order)}).to_numpy(dtype=np.int64)
        return codes, weights / weights.sum()

    def weights(self, samples: pd.DataFrame) -> np.ndarray | None:
        """Per-sample draw probabilities, or None when every sample is drawn once per epoch."""
        if not self.groupby or (isinstance(self.weighting, str) and self.weighting == "count"):
            return None
        labels = group_labels(samples, self.groupby)
        sizes = labels.map(labels.value_counts())
        group_w = self._group_weights(labels)
        w = labels.map(group_w).to_numpy(dtype=np.float64) / sizes.to_numpy(dtype=np.float64)
        return w / w.sum()
