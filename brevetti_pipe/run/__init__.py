"""Run layer: the Job facade and what it delegates to (context, lifecycle, export, recipes)."""

from brevetti_pipe.run.job import Job, JobInterrupted, environment
from brevetti_pipe.run.recipe import RECIPES, Recipe, recipe

__all__ = ["Job", "JobInterrupted", "RECIPES", "Recipe", "environment", "recipe"]
