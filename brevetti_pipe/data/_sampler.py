"""StratifiedSampler: how often each group of samples is drawn per epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from brevetti_pipe.data._weights import WEIGHTINGS, GroupWeights, Weighting, group_labels

if TYPE_CHECKING:
    from brevetti_pipe.data._generator import DataGenerator

__all__ = ["StratifiedSampler", "WEIGHTINGS", "Weighting", "group_labels"]


class StratifiedSampler(GroupWeights):
    """Draws training samples with per-group weights, seeded per epoch (arguments: :class:`GroupWeights`).

    Example:
        >>> StratifiedSampler(["category"], "sqrt").get(samples, batch_size=8, output_structure=("img", "onehot"))
    """

    def get(self, samples: pd.DataFrame, shuffle: bool = True, **kwargs: Any) -> DataGenerator:
        """A DataGenerator drawing ``samples`` with this sampler's weights."""
        from brevetti_pipe.data._generator import DataGenerator

        kwargs.setdefault("seed", self.seed)
        if self.batch_size is not None:
            kwargs.setdefault("batch_size", self.batch_size)
        if self.max_epoch_samples is not None:
            kwargs.setdefault("max_epoch_samples", self.max_epoch_samples)
        return DataGenerator(samples, shuffle=shuffle, sampler=self, **kwargs)
