"""StratifiedSampler: how often each group of samples is drawn per epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from brevetti_pipe._util.category import category_label
from brevetti_pipe.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from brevetti_pipe.data._generator import DataGenerator

__all__ = ["StratifiedSampler", "group_labels"]


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


class StratifiedSampler:
    """Draws training samples with per-group weights, seeded per epoch.

    Args:
        groupby: columns defining the groups (e.g. ``["category"]``); None draws every
            sample once per epoch in a seeded random order.
        weighting: ``"count"`` (groups drawn in proportion to their size: a plain shuffle),
            ``"uniform"`` (every group equally often) or a mapping group label -> weight.
        seed: default seed of generators built with :meth:`get`.
    """

    def __init__(
        self,
        groupby: Sequence[str] | None = None,
        weighting: str | Mapping[str, float] = "count",
        seed: int = 0,
    ) -> None:
        if isinstance(weighting, str) and weighting not in ("count", "uniform"):
            raise ConfigError(
                f"Unknown sampler weighting. Received: sampler.weighting={weighting!r}. "
                f"Allowed: 'count', 'uniform' or a mapping group -> weight.{did_you_mean(weighting, ['count', 'uniform'])}"
            )
        self.groupby = list(groupby) if groupby else None
        self.weighting = weighting
        self.seed = seed

    def weights(self, samples: pd.DataFrame) -> np.ndarray | None:
        """Per-sample draw probabilities, or None when every sample is drawn once per epoch."""
        if not self.groupby or (isinstance(self.weighting, str) and self.weighting == "count"):
            return None
        labels = group_labels(samples, self.groupby)
        sizes = labels.map(labels.value_counts())
        if isinstance(self.weighting, str):  # uniform
            group_w = pd.Series(1.0, index=labels.unique())
        else:
            unknown = sorted(set(self.weighting) - set(labels))
            if unknown:
                raise ConfigError(
                    f"sampler.weighting names group(s) {unknown} not in the data. "
                    f"Groups: {sorted(set(labels))}.{did_you_mean(unknown[0], set(labels))}"
                )
            group_w = pd.Series({g: float(self.weighting.get(g, 0.0)) for g in labels.unique()})
            if (group_w < 0).any() or group_w.sum() <= 0:
                raise ConfigError(f"sampler.weighting must be >= 0 with a positive sum; got {dict(self.weighting)}")
        w = labels.map(group_w).to_numpy(dtype=np.float64) / sizes.to_numpy(dtype=np.float64)
        return w / w.sum()

    def get(self, samples: pd.DataFrame, shuffle: bool = True, **kwargs: Any) -> DataGenerator:
        """A DataGenerator drawing ``samples`` with this sampler's weights."""
        from brevetti_pipe.data._generator import DataGenerator

        kwargs.setdefault("seed", self.seed)
        return DataGenerator(samples, shuffle=shuffle, sampler=self, **kwargs)
