"""The framework-owned loop for model-builder recipes: build, fit, evaluate (filled in by the run layer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from brevetti_pipe.run.recipe import Recipe

__all__ = ["train_evaluate"]


def train_evaluate(job: Any, recipe: Recipe) -> Any:
    """(``job``: the running :class:`~brevetti_pipe.run.job.Job`; typed loosely, the job imports this module.)
    Build the recipe's model in ``job.strategy.scope()``, fit it, evaluate it; returns the model."""
    raise NotImplementedError("model-builder recipes are not wired yet")
