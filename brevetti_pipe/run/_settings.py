"""Run layer: the run step's settings model, its defaults merged into the composed config below everything else.

overrides -> a first, cheap composition learns ``run`` -> its Recipe -> the settings model -> its defaults
become ``settings`` at the lowest precedence (config files, the settings JSON and the command line override
them), so ``settings.x=V`` needs no ``+``, ``--cfg job`` shows the defaults, and unknown keys are still refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from brevetti_pipe.config import JobSettings, compose
from brevetti_pipe.config._compose import RUN_SETTINGS_GROUP, set_settings_defaults
from brevetti_pipe.config._overrides import hydra_literal
from brevetti_pipe.run.recipe import Recipe, resolve_run

__all__ = ["compose_job_config", "drop_foreign_defaults", "hinted_settings", "job_class_for", "prepare_settings", "settings_defaults", "settings_model", "upgrade_added_key_overrides"]

#: OmegaConf's marker of a value that must be set (a settings field without a default).
MISSING = "???"


def settings_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s fields with their defaults as plain (YAML-able) values; a required field is ``???``
    (a required nested model is expanded, so its own fields can be set one by one)."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        if not field.is_required():
            out[key] = to_jsonable_python(field.get_default(call_default_factory=True))
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out[key] = settings_defaults(field.annotation)
        else:
            out[key] = MISSING
    return out


def settings_model(job_class: Any, step: Recipe | None) -> type[JobSettings]:
    """The settings model a job reads: the ``settings:`` hint of its Job class (the run step's own class
    when it names one), else the run step's model, else :class:`JobSettings`."""
    cls: Any = step.job_class if step is not None and step.job_class is not None else job_class
    model: type[JobSettings] = cls._settings_model() if cls is not None else JobSettings
    if model is JobSettings and step is not None:
        model = step.settings
    return model


def installed_defaults() -> dict[str, Any]:
    """The settings defaults the compositions of this process start from (launchers carry them to workers)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    try:
        node = ConfigStore.instance().load(f"{RUN_SETTINGS_GROUP}/defaults.yaml").node
    except Exception:
        return {}
    data = OmegaConf.to_container(node, resolve=False) if node is not None else {}
    return {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}


def drop_foreign_defaults(settings: dict[str, Any], model: type[JobSettings]) -> dict[str, Any]:
    """``settings`` without the keys that only the installed defaults of another run step put there: a
    ``--multirun`` sweep over run steps composes every run with the first one's defaults. A key the run
    step's model does not know stays (and is refused) unless it still holds that default value."""
    if model.model_config.get("extra") != "forbid":
        return settings
    known = {f.alias or n for n, f in model.model_fields.items()}
    foreign = installed_defaults()
    return {k: v for k, v in settings.items() if k in known or k not in foreign or foreign[k] != v}


#: keys that once needed Hydra's ``+`` (the config did not hold them) and are in the config now
_ONCE_ADDED = ("+settings", "+export.parity_samples=", "+export.tolerance=")


def upgrade_added_key_overrides(overrides: Sequence[str]) -> list[str]:
    """``+settings.x=V`` as ``++settings.x=V`` (and ``+export.parity_samples``, ``+export.tolerance``):
    the ``+`` once needed to add such a key keeps working now that the config holds it (Hydra refuses
    ``+`` on an existing key)."""
    return [f"+{o}" if o.startswith(_ONCE_ADDED) and not o.startswith("++") else o for o in overrides]


def _may_set_run(override: str) -> bool:
    """Whether an override can change ``run`` (of the bundled configs, only recipes and experiments set it;
    a user's folder comes with ``config_dir`` or ``hydra.searchpath``)."""
    key = override.partition("=")[0].lstrip("+~").split("@")[0]
    return key.split(".")[0].split("/")[0] in ("run", "recipe", "experiment", "hydra")


def _probe_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that can change ``run``: settings overrides dropped (they may name keys only the
    defaults add), a sweep reduced to its first value (a sweep over run steps gets the first one's defaults)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for arg in overrides:
        key = arg.partition("=")[0].lstrip("+~")
        if key.split("@")[0] == "settings" or key.startswith("settings."):
            continue
        try:
            ov = parser.parse_override(arg)
            if ov.is_sweep_override():
                arg = f"{arg.partition('=')[0]}={hydra_literal(next(iter(ov.sweep_iterator())))}"
        except Exception:
            pass  # the real composition reports a malformed override
        out.append(arg)
    return out


def prepare_settings(overrides: Sequence[str], *, config_dir: str | os.PathLike[str] | None = None,
                     config_name: str = "config", job_class: Any = None) -> type[JobSettings]:
    """Compose once to learn ``run``, then install its settings model's defaults as the lowest-precedence
    ``settings`` of the compositions that follow (the CLI's and ``Job.init``'s). No TensorFlow import (a
    user's module may import it itself).

    Args:
        overrides: Hydra overrides (as given on the command line or to ``Job.init``).
        config_dir: the user's ``--config-dir``.
        config_name: the primary config.
        job_class: the Job subclass being built (``MyJob.init``), whose ``settings:`` hint counts.

    Returns:
        The settings model whose defaults were installed.

    Raises:
        ConfigError: ``run`` names no run step (unknown name, module not importable, ...).
    """
    from omegaconf import OmegaConf

    set_settings_defaults({})
    run: Any = None
    if config_dir is not None or config_name != "config" or any(map(_may_set_run, overrides)):
        try:
            cfg, _, _ = compose(_probe_overrides(overrides), config_dir=config_dir, config_name=config_name)
            run = OmegaConf.select(cfg, "run", default=None)
        except Exception:  # noqa: S110 - the real composition reports what is wrong, with its own message
            pass
    step = resolve_run(str(run)) if run not in (None, "") else None
    model = settings_model(job_class, step)
    if model is not JobSettings:
        set_settings_defaults(settings_defaults(model))
    return model


def hinted_settings(job_class: Any) -> type[JobSettings]:
    """The ``settings:`` hint of a Job class (a JobSettings subclass), else :class:`JobSettings`."""
    import typing

    try:
        hinted = typing.get_type_hints(job_class).get("settings", JobSettings)
    except Exception:
        hinted = job_class.__annotations__.get("settings", JobSettings)
    return hinted if isinstance(hinted, type) and issubclass(hinted, JobSettings) else JobSettings


def compose_job_config(job_class: Any, job_id: str | None, api_key: str | None, overrides: Sequence[str], *,
                       config_dir: str | os.PathLike[str] | None, config_name: str,
                       argv: Sequence[str] | None) -> tuple[Any, list[str], dict[str, Any]]:
    """What ``Job.init`` composes: seed-style flags from ``argv`` below the explicit arguments, the run
    step's settings defaults below everything, then Hydra and the platform settings JSON.

    Returns:
        The validated JobConfig, the task overrides and Hydra's config-group choices.
    """
    from brevetti_pipe._util import secrets as _secrets
    from brevetti_pipe.config._argv import init_arguments
    from brevetti_pipe.platform import resolve_config

    job_id, api_key, overrides = init_arguments(argv, job_class._settings_model(), job_id, api_key, overrides)
    if api_key:
        _secrets.set_api_key(api_key)
    overrides = [*upgrade_added_key_overrides(overrides), *([f"job.id={hydra_literal(str(job_id))}"] if job_id else [])]
    prepare_settings(overrides, config_dir=config_dir, config_name=config_name, job_class=job_class)
    cfg, task_overrides, groups = compose(overrides, config_dir=config_dir, config_name=config_name)
    return resolve_config(cfg, task_overrides, groups), task_overrides, dict(cfg.hydra.runtime.choices)


def job_class_for(job_class: Any, config: Any) -> tuple[Any, Any]:
    """The Job class to build for ``config`` (the subclass ``run`` names, when it names one) and the
    config with the settings defaults of other run steps dropped.

    Raises:
        ConfigError: ``run`` names a Job class that is not a ``job_class``.
    """
    from brevetti_pipe.errors import ConfigError

    step = resolve_run(config.run) if config.run else None
    target = job_class
    if step is not None and step.job_class is not None and not issubclass(job_class, step.job_class):
        if not issubclass(step.job_class, job_class):
            raise ConfigError(
                f"run names the Job class {step.job_class.__qualname__}, which is not a {job_class.__qualname__}. "
                f"Received: run={config.run!r}. Build it with {step.job_class.__qualname__}.init() or Job.init().")
        target = step.job_class
    if step is not None:
        settings = drop_foreign_defaults(config.settings, settings_model(target, step))
        if settings != config.settings:
            config = config.model_copy(update={"settings": settings})
    return target, config
