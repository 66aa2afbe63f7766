"""Recipe registry and the resolver of ``run:``: a run step (registered name, entry point or
``package.module:attr``) becomes a :class:`Recipe`, a callable plus its typed settings model."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import os
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from brevetti_pipe._util.registry import Registry
from brevetti_pipe.config._load import is_import_path
from brevetti_pipe.config._schema import JobSettings
from brevetti_pipe.errors import ConfigError, did_you_mean

__all__ = ["Recipe", "RECIPES", "as_recipe", "is_import_path", "recipe", "resolve_run", "step_kind"]


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


#: Where a decorated function keeps its Recipe (``run: pkg.mod:build_model`` finds it there).
_RECIPE_ATTR = "__brevetti_pipe_recipe__"


def _is_job_class(obj: Any) -> bool:
    """A ``Job`` subclass, recognised without importing the job module (it imports this one)."""
    return isinstance(obj, type) and any(
        c.__module__ == "brevetti_pipe.run.job" and c.__name__ == "Job" for c in obj.__mro__)


def _is_job_subclass(obj: Any) -> bool:
    """A strict subclass of ``Job`` (the base class itself adds nothing to a run step)."""
    return _is_job_class(obj) and not (obj.__module__ == "brevetti_pipe.run.job" and obj.__name__ == "Job")


def _overrides_run(cls: type) -> bool:
    for c in cls.__mro__:
        if c.__module__ == "brevetti_pipe.run.job" and c.__name__ == "Job":
            return False
        if "run" in vars(c):
            return True
    return False


def _first_parameter_hint(fn: Callable[..., Any]) -> Any:
    """The annotation of ``fn``'s first parameter (the job), evaluated; None when absent or unresolvable."""
    try:
        first = next(iter(inspect.signature(fn).parameters.values()), None)
    except (TypeError, ValueError):
        return None
    if first is None or first.annotation is first.empty:
        return None
    try:
        return typing.get_type_hints(fn).get(first.name)
    except Exception:  # a forward reference the module cannot resolve: no hint
        return first.annotation if isinstance(first.annotation, type) else None


def as_recipe(name: str, obj: Any, where: str = "run") -> Recipe:
    """The Recipe for a run step object (a registered entry point, or ``package.module:attr``).

    Accepted: a :class:`Recipe`; a function decorated with :func:`recipe`; a plain ``run(job)`` or a
    model builder ``build_model(job, input_shape, classes)`` (the kind from :func:`step_kind`; the
    settings model from the first parameter's annotation, a ``Job`` subclass with a ``settings:``
    hint, as whose class the job is then built); a ``Job`` subclass overriding ``run()`` (the
    settings model from its ``settings:`` hint).

    Raises:
        ConfigError: naming ``where`` and the value for anything else.
    """
    if isinstance(obj, Recipe):
        return obj
    decorated = getattr(obj, _RECIPE_ATTR, None)
    if isinstance(decorated, Recipe):
        return decorated
    doc = (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
    if _is_job_subclass(obj):
        if not _overrides_run(obj):
            raise ConfigError(
                f"The Job subclass {obj.__qualname__} does not override run(), so it has nothing to run. "
                f"Received: {where}={name!r}. Define run(self) in it, or name a run(job) function.")
        return Recipe(name, obj.run, obj._settings_model(), doc, None, "run", obj)
    if _is_job_class(obj):
        raise ConfigError(f"The Job base class has no run step of its own. Received: {where}={name!r}. "
                          "Name your Job subclass or a run(job) function.")
    if isinstance(obj, type):
        raise ConfigError(
            f"{obj.__qualname__} is a class but not a brevetti_pipe Job subclass. Received: {where}={name!r}. "
            "Expected a run(job) function, a build_model(job, input_shape, classes) function or a Job subclass.")
    if not callable(obj):
        raise ConfigError(
            f"The run step is not callable: {type(obj).__name__} {obj!r}. Received: {where}={name!r}. "
            "Expected a run(job) function, a build_model(job, input_shape, classes) function or a Job subclass.")
    if not (inspect.isfunction(obj) or inspect.ismethod(obj)):
        raise ConfigError(
            f"The run step must be a Python function, got {type(obj).__name__} {obj!r}. Received: {where}={name!r}. "
            "Expected a run(job) function, a build_model(job, input_shape, classes) function or a Job subclass.")
    settings, job_class = _job_hint(obj, name, where)
    return Recipe(name, obj, settings, doc, None, step_kind(obj), job_class)


def _job_hint(fn: Callable[..., Any], name: str, where: str = "run") -> tuple[type[JobSettings], type | None]:
    """(settings model, Job class) from ``fn``'s first parameter annotated with a Job subclass, else
    (JobSettings, None)."""
    hint = _first_parameter_hint(fn)
    if not _is_job_subclass(hint):
        return JobSettings, None
    if _overrides_run(hint):
        raise ConfigError(
            f"The run step annotates its job as {hint.__qualname__}, which overrides run() itself. "
            f"Received: {where}={name!r}. Name the class as the run step, or annotate the job with a "
            "Job subclass that only declares settings.")
    return hint._settings_model(), hint


def _entry_point_recipe(name: str, obj: Any) -> Recipe:
    found = as_recipe(name, obj)
    return found if found.name == name else dataclasses.replace(found, name=name)


RECIPES: Registry[Recipe] = Registry("recipe", config_group="recipe", entry_points="brevetti_pipe.recipes",
                                     adapt=_entry_point_recipe)
RECIPES.add_loader(lambda: importlib.import_module("brevetti_pipe.recipes"))


def resolve_run(value: str) -> Recipe:
    """The run step ``run:`` names: a registered recipe (built in, ``@recipe``, or an installed entry
    point in group ``brevetti_pipe.recipes``) or ``package.module:attribute`` importable from the
    working directory or ``PYTHONPATH``.

    Raises:
        ConfigError: one line naming ``run`` and the value: an unknown name (with "Did you mean"), a
            module that cannot be imported, a missing attribute, an object that is no run step.
    """
    if not is_import_path(value):
        if ":" in value or "/" in value:
            raise ConfigError(
                f"Invalid run step. Received: run={value!r}. Expected a registered recipe name or "
                "package.module:function (or package.module:JobSubclass).")
        if value not in RECIPES:
            try:
                RECIPES.get(value, where="run")
            except ConfigError as exc:
                raise ConfigError(f"{exc} Your own run step: run=package.module:function.") from None
        return RECIPES.get(value, where="run")
    module_name, _, attr = value.partition(":")
    module = _import_user_module(module_name, value)
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            owner = ".".join([module_name, *attr.split(".")[:i]])
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise ConfigError(f"'{owner}' has no attribute '{part}'. Received: run={value!r}.{did_you_mean(part, names)}")
        obj = getattr(obj, part)
    return as_recipe(value, obj)


@contextlib.contextmanager
def _working_directory_importable() -> Iterator[str]:
    """Make the working directory importable while a run step is imported, then restore ``sys.path``.

    Appended (installed packages keep precedence) and removed afterwards, unless already on it; under
    Hydra the directory the command started in (Hydra may change into its output folder).
    """
    base = os.getcwd()
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            base = HydraConfig.get().runtime.cwd or base
    except Exception:
        pass
    added = base not in sys.path and not (base == os.getcwd() and "" in sys.path)
    if added:
        sys.path.append(base)
    importlib.invalidate_caches()
    try:
        yield base
    finally:
        if added and base in sys.path:
            sys.path.remove(base)


def _import_user_module(module_name: str, value: str) -> Any:
    with _working_directory_importable() as base:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing and (module_name == missing or module_name.startswith(missing + ".")):
                close = did_you_mean(module_name, RECIPES.names()) if "." not in module_name else ""
                raise ConfigError(
                    f"Cannot import module '{module_name}' for the run step. Received: run={value!r}. It must be "
                    f"importable from the working directory ({base}) or PYTHONPATH.{close}") from None
            raise ConfigError(f"Importing '{module_name}' for the run step failed: No module named '{missing}'. "
                              f"Received: run={value!r}.") from None
        except ConfigError:
            raise
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ConfigError(f"Importing '{module_name}' for the run step failed: {type(exc).__name__}: {detail}. "
                              f"Received: run={value!r}.") from None


def recipe(name: str, settings: type[JobSettings] = JobSettings,
           task: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a run step under ``name`` (used as ``run: NAME`` in a recipe config): a full
    ``run(job)``, or a model builder ``build_model(job, input_shape, classes)`` for which the
    framework fits, evaluates and exports. Without ``settings``, a first parameter annotated with a
    Job subclass (``def run(job: MyJob)``) gives the settings model (its ``settings:`` hint) and the
    class the job is built as.

    Example:
        >>> @recipe("my_recipe", settings=MySettings, task="classification")
        ... def build_model(job, input_shape, classes): ...
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        hinted, job_class = _job_hint(fn, name)
        found = Recipe(name, fn, hinted if settings is JobSettings else settings,
                       (fn.__doc__ or "").strip().split("\n")[0], task, step_kind(fn), job_class)
        RECIPES.register(name, found)
        setattr(fn, _RECIPE_ATTR, found)
        return fn

    return wrap
