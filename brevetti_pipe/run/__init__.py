"""Run layer: the Job facade and what it delegates to (context, lifecycle, training, evaluation, export, recipes)."""

from brevetti_pipe.run.evaluation import Evaluation
from brevetti_pipe.run.job import Job, JobInterrupted, environment
from brevetti_pipe.run.keras_callbacks import KERAS_CALLBACKS, keras_callback
from brevetti_pipe.run.recipe import RECIPES, Recipe, recipe

__all__ = ["Evaluation", "Job", "JobInterrupted", "KERAS_CALLBACKS", "RECIPES", "Recipe", "environment",
           "keras_callback", "recipe"]
