"""Recipe registry: a recipe is a named run step plus its typed settings model."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from brevetti_pipe._util.registry import Registry
from brevetti_pipe.config._schema import JobSettings
from brevetti_pipe.errors import ConfigError

__all__ = ["Recipe", "RECIPES", "recipe"]


@dataclass(frozen=True)
class Recipe:
    """A run step and the settings model it reads.

    Attributes:
        name: the name ``run:`` uses (a registered name, ``package.module:attr`` or an entry point).
        run: ``run(job) -> model | path | None`` (``kind="run"``), or a model builder
            ``build_model(job, input_shape, classes) -> keras.Model`` (``kind="builder"``) for which
            the framework owns the loop (fit, evaluate, export).
        settings: the typed ``settings.*`` model.
        task: ``"classification"``, ``"segmentation"`` or None (what evaluation computes).
        kind: ``"run"`` or ``"builder"``.
        job_class: the ``Job`` subclass to instantiate (``run: package.module:JobSubclass``), else None.
    """

    name: str
    run: Callable[..., Any]
    settings: type[JobSettings] = JobSettings
    description: str = ""
    task: str | None = None
    kind: str = "run"
    job_class: type | None = None


def step_kind(fn: Callable[..., Any]) -> str:
    """``"builder"`` for ``fn(job, input_shape, classes)``, ``"run"`` for ``fn(job)``."""
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError):
        return "run"
    return "builder" if len(params) >= 3 else "run"


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


def recipe(name: str, settings: type[JobSettings] = JobSettings,
           task: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a run step under ``name`` (used as ``run: NAME`` in a recipe config): a full
    ``run(job)``, or a model builder ``build_model(job, input_shape, classes)`` for which the
    framework fits, evaluates and exports.

    Example:
        >>> @recipe("my_recipe", settings=MySettings, task="classification")
        ... def build_model(job, input_shape, classes): ...
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        RECIPES.register(name, Recipe(name, fn, settings, (fn.__doc__ or "").strip().split("\n")[0], task,
                                      step_kind(fn)))
        return fn

    return wrap
