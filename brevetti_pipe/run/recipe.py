"""Recipe registry: a recipe is a named run step plus its typed settings model."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from brevetti_pipe._util.registry import Registry
from brevetti_pipe.config._schema import JobSettings
from brevetti_pipe.errors import ConfigError

__all__ = ["Recipe", "RECIPES", "recipe"]


@dataclass(frozen=True)
class Recipe:
    """A run step (``run(job) -> model | path | None``) and the settings model it reads."""

    name: str
    run: Callable[[Any], Any]
    settings: type[JobSettings] = JobSettings
    description: str = ""


def _as_recipe(name: str, obj: Any) -> Recipe:
    """An entry point's object as a Recipe: a Recipe, or a ``run(job)`` function."""
    if isinstance(obj, Recipe):
        return obj
    if callable(obj) and not isinstance(obj, type):
        return Recipe(name, obj, JobSettings, (obj.__doc__ or "").strip().split("\n")[0])
    raise ConfigError(
        f"The entry point '{name}' (group brevetti_pipe.recipes) must be a run(job) function or a Recipe; "
        f"got {type(obj).__name__}. Received: {obj!r}"
    )


RECIPES: Registry[Recipe] = Registry("recipe", config_group="recipe", entry_points="brevetti_pipe.recipes", adapt=_as_recipe)
RECIPES.add_loader(lambda: importlib.import_module("brevetti_pipe.recipes"))


def recipe(name: str, settings: type[JobSettings] = JobSettings) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register a run step under ``name`` (used as ``run: NAME`` in a recipe config).

    Example:
        >>> @recipe("my_recipe", settings=MySettings)
        ... def run(job): ...
    """

    def wrap(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        RECIPES.register(name, Recipe(name, fn, settings, (fn.__doc__ or "").strip().split("\n")[0]))
        return fn

    return wrap
