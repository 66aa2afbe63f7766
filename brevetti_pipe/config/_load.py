"""Composed Hydra config + platform settings JSON + CLI overrides -> one validated JobConfig.

Precedence, lowest to highest: framework defaults < config files / recipe < platform
settings JSON < command line. Hydra composes the first two; this module layers the JSON
on top and then re-applies the command-line overrides so they keep the last word.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any, Protocol, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.config._compose import MAX_DEPTH, check_size
from brevetti_pipe.config._errors import validate_model
from brevetti_pipe.config._schema import JobConfig, JobSection
from brevetti_pipe.errors import ConfigError, StorageError, did_you_mean

__all__ = ["JSON_KEYS", "SettingsSource", "is_import_path", "parse_settings_json", "resolve_config", "target_error"]

_HP = "hydra_plugins.hydra_"
#: ``_target_`` values a command line or settings JSON may hold, by exact name and by the node that holds
#: them: our sweep summary and Hydra's callbacks, the launchers and sweepers of the supported plugins
#: (basic, joblib, submitit, ray, optuna) and Optuna's samplers. Nothing else, nowhere else.
_ALLOWED_TARGETS: dict[str, tuple[str, ...]] = {
    r"hydra\.callbacks\.[^.]+": (
        "brevetti_pipe.cli.sweep.SweepSummary", "brevetti_pipe.sweep.SweepSummary",
        "hydra.experimental.callbacks.LogJobReturnCallback", "hydra.experimental.callbacks.PickleJobInfoCallback",
    ),
    r"hydra\.launcher": (
        "hydra._internal.core_plugins.basic_launcher.BasicLauncher", f"{_HP}joblib_launcher.joblib_launcher.JoblibLauncher",
        f"{_HP}submitit_launcher.submitit_launcher.LocalLauncher", f"{_HP}submitit_launcher.submitit_launcher.SlurmLauncher",
        f"{_HP}ray_launcher.ray_launcher.RayLauncher",
    ),
    r"hydra\.sweeper": (
        "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", f"{_HP}optuna_sweeper.optuna_sweeper.OptunaSweeper",
    ),
    r"hydra\.sweeper\.sampler": tuple(
        f"optuna.samplers.{c}Sampler" for c in ("TPE", "Random", "CmaEs", "NSGAII", "MOTPE", "Grid")
    ),
}
#: Keys that name code to import and run although they are not called ``_target_``.
_CODE_KEYS = re.compile(r"^hydra\.(sweeper\.custom_search_space|launcher\.(.+\.)?runtime_env)(\.|$)")
#: Top-level keys a platform settings JSON may set.
JSON_KEYS = ("settings", "datasets", "split", "sampler", "pipeline", "data")
#: ``package.module:attribute`` (the attribute may be dotted: ``pkg.mod:Class.method``): code to import.
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
#: Keys whose value picks a component by name; from a settings JSON only registered names, never code.
_NAMING_KEYS = ("type", "generator", "run")


def is_import_path(value: str) -> bool:
    """Whether ``value`` reads as ``package.module:attribute`` (code to import), not a registered name."""
    return bool(_IMPORT_PATH.match(value))


def _json_code_error(path: str, value: Any, url: str) -> ConfigError | None:
    """The error for a settings JSON naming code: ``run``, a ``_target_`` anywhere, or a
    ``package.module:attr`` as a component's ``type`` or a dataset's ``generator``. A settings JSON comes
    from outside; which code runs stays with the user's own config files and command line."""
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_" or (key == "run" and not path):
                return ConfigError(
                    f"Settings JSON {url!r} may not set '{where}': it names code to run, which only config files "
                    f"and the command line choose. Received: {where}={item!r}.")
            if (key in _NAMING_KEYS and isinstance(item, str) and is_import_path(item)
                    and path.split(".")[0] != "settings"):
                return ConfigError(
                    f"Settings JSON {url!r} may not name code in '{where}'. Received: {where}={item!r}. Allowed: "
                    "a registered name; code is chosen only in config files and on the command line.")
            error = _json_code_error(where, item, url)
            if error:
                return error
    elif isinstance(value, list):
        return next((e for i, v in enumerate(value) if (e := _json_code_error(f"{path}[{i}]", v, url))), None)
    return None


class SettingsSource(Protocol):
    """Reads the platform settings JSON for a job (the platform layer's; config does no I/O).

    Returns the URL it read (for messages) and the parsed document, or None when there is none.
    """

    def __call__(
        self, *, root: str, job_id: str, explicit: str | None, storage_options: dict[str, Any], retry_seconds: float,
    ) -> tuple[str, dict[str, Any] | None]: ...


def parse_settings_json(raw: bytes, url: str) -> dict[str, Any]:
    """Parse and check a platform settings JSON document read from ``url``.

    Secret values in it (``api_key`` and friends) are taken out and remembered for redaction.

    Raises:
        ConfigError: naming the file (and line/column for a parse error) on bad content.
    """
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except RecursionError:
        raise ConfigError(f"Settings JSON {url!r} is too large: nested more than {MAX_DEPTH} levels deep.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Settings JSON {url!r} is not UTF-8 text: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"Malformed settings JSON {url!r} at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"Settings JSON {url!r} must hold a JSON object, got {type(doc).__name__}")
    check_size(doc, _json_children, f"Settings JSON {url!r}")
    for key in list(doc):
        if _secrets.SECRET_KEYS.search(key) and isinstance(doc[key], str):
            if key.lower().replace("-", "_") == "api_key":
                _secrets.set_api_key(doc[key])
            _secrets.add_secret(doc.pop(key))
    code = _json_code_error("", doc, url)
    if code:
        raise code
    unknown = [k for k in doc if k not in JSON_KEYS]
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"Unknown key '{key}' in settings JSON {url!r}.{did_you_mean(key, JSON_KEYS)} "
            f"Allowed top-level keys: {', '.join(JSON_KEYS)}."
        )
    return doc


def target_error(path: str, value: Any) -> ConfigError | None:
    """The error for a ``_target_`` (or a logging handler ``class``) at or under ``path`` outside the allowlist."""
    leaf = path.rsplit(".", 1)[-1]
    if isinstance(value, dict):
        return next((e for k, v in value.items() if (e := target_error(f"{path}.{k}" if path else str(k), v))), None)
    if isinstance(value, list):
        return next((e for v in value if (e := target_error(path, v))), None)
    if leaf == "_target_":
        node = path.rpartition(".")[0]
        allowed = next((names for where, names in _ALLOWED_TARGETS.items() if re.fullmatch(where, node)), ())
        if value not in allowed:
            hint = f"Allowed at {node}: {', '.join(allowed)}." if allowed else (
                "A '_target_' is allowed only under hydra.callbacks.<name>, hydra.launcher and hydra.sweeper.")
            return ConfigError(f"'_target_' {value!r} is not allowed. Received: {path}={value}. {hint}")
    if _CODE_KEYS.match(path) and value not in (None, "", {}):
        return ConfigError(f"{path} names code to run and cannot be set here. Received: {path}={value}.")
    if leaf == "class" and re.match(r"^hydra\.(job|hydra)_logging\.", path) and not str(value).startswith("logging."):
        return ConfigError(f"Logging handler class {value!r} is not allowed. Received: {path}={value}. Allowed: logging.*.")
    return None


def _json_children(node: object) -> list[object]:
    if isinstance(node, dict):
        return list(node.values())
    return list(node) if isinstance(node, list) else []


_INTERPOLATION = re.compile(r"(\\*)\$\{")


def _literal(value: Any) -> Any:
    """A JSON value with every ``${...}`` escaped: platform-injected text is data, never an
    interpolation or a resolver call (``${oc.env:DB_PASSWORD}`` stays those characters)."""
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v) for v in value]
    if isinstance(value, str) and "${" in value:
        # OmegaConf: a run of 2n backslashes before ${ is n backslashes, \${ is a literal ${
        return _INTERPOLATION.sub(lambda m: m.group(1) * 2 + "\\${", value)
    return value


def _group_package(group: str, package: str | None) -> str | None:
    if package:
        return None if package == "_global_" else package.replace("_group_", group.replace("/", "."))
    return group.replace("/", ".")


def _reapply_overrides(cfg: DictConfig, composed: DictConfig, overrides: Sequence[str], groups: set[str]) -> None:
    """Re-apply command-line overrides onto ``cfg`` (after the JSON merge) so they win."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    for ov in parsed:
        key = ov.key_or_group
        if key.startswith("hydra") or ov.is_sweep_override():
            continue
        if key in groups or (ov.package is not None and key.split("@")[0] in groups):
            path = _group_package(key, ov.package)
            if path and OmegaConf.select(composed, path, throw_on_missing=False) is not None:
                OmegaConf.update(cfg, path, OmegaConf.select(composed, path), merge=False, force_add=True)
            continue
        if ov.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            if isinstance(node, DictConfig) and leaf in node:
                del node[leaf]
            continue
        OmegaConf.update(cfg, key, ov.value(), merge=False, force_add=True)


def resolve_config(
    cfg: DictConfig,
    overrides: Sequence[str] = (),
    groups: Sequence[str] = (),
    *,
    settings_source: SettingsSource | None = None,
) -> JobConfig:
    """Layer the platform settings JSON and the CLI overrides onto a composed config and validate it.

    Args:
        cfg: the config Hydra composed (files + recipe + CLI).
        overrides: the command-line overrides (Hydra's ``task`` overrides).
        groups: the config group names (``HydraConfig.runtime.choices`` keys).
        settings_source: reads the platform settings JSON; None reads none (the platform
            layer's :func:`brevetti_pipe.platform.resolve_config` passes its reader).

    Returns:
        The validated JobConfig; ``job.id`` is filled in with a fresh UUID when it was null.

    Raises:
        ConfigError: for any invalid value, unknown key, or unreadable settings JSON.
    """
    try:
        plain = OmegaConf.to_container(cfg, resolve=False)
        work = cast(DictConfig, OmegaConf.create(plain))
        work.pop("hydra", None)
        OmegaConf.set_struct(work, False)
        if OmegaConf.select(work, "job.id") in (None, ""):
            OmegaConf.update(work, "job.id", str(uuid.uuid4()), force_add=True)
        job_id = str(OmegaConf.select(work, "job.id"))
        validate_model(JobSection, {"id": job_id}, prefix="job")  # before it names a file to read
        explicit = OmegaConf.select(work, "job.settings_json")
        root = str(OmegaConf.select(work, "platform.root", default="."))
        options = OmegaConf.select(work, "platform.storage_options", default=None)
        options = OmegaConf.to_container(options, resolve=True) if options is not None else {}
        _secrets.restore({"storage_options": options}, prefix="platform")
        retry = float(OmegaConf.select(work, "platform.retry_seconds", default=60.0) or 60.0)
        # credentials in these URLs are masked in any error of the read below (the Python API's overrides
        # were not masked by the command line's guard)
        _secrets.collect_secrets({"root": root, "settings_json": explicit, "storage_options": options})
        url, doc = None, None
        if settings_source is not None:
            url, doc = settings_source(root=root, job_id=job_id, explicit=str(explicit) if explicit else None,
                                       storage_options=options if isinstance(options, dict) else {},
                                       retry_seconds=retry)
        if doc:
            composed = cast(DictConfig, OmegaConf.create(plain))  # as composed: the overrides are applied again on it
            composed.pop("hydra", None)
            for key, value in _literal(doc).items():
                replace = key == "datasets"  # a platform's dataset list is the whole selection
                if replace or not isinstance(value, dict) or not isinstance(work.get(key), DictConfig):
                    work[key] = value
                else:
                    work[key] = OmegaConf.merge(work[key], value)
            _reapply_overrides(work, composed, overrides, set(groups))
        unset = sorted(k for k in OmegaConf.missing_keys(work) if k.startswith("settings."))
        if unset:  # a settings field without a default (``???``) that nothing set
            raise ConfigError(f"Missing required key '{unset[0]}'. Set it in a config file or on the command line: "
                              f"{unset[0]}=VALUE.{' Also unset: ' + ', '.join(unset[1:]) + '.' if unset[1:] else ''}")
        data = cast("dict[str, Any]", OmegaConf.to_container(work, resolve=True))
        if isinstance(data, dict):
            _secrets.restore(data)
        _secrets.collect_secrets(data)
    except (ConfigError, StorageError):
        raise
    except OmegaConfBaseException as exc:
        raise ConfigError(f"Invalid config: {exc}".replace("\n", " ")) from None
    config = validate_model(JobConfig, data, source=url if doc else None)
    # a _target_ the schema let through (under storage_options, generator_params, ...) runs nowhere, but
    # is refused all the same so that no later code path can ever instantiate it; stages and callbacks
    # refuse unknown parameters (a _target_ among them) themselves, naming the key
    error = target_error("", {k: v for k, v in data.items() if k not in ("pipeline", "callbacks")})
    if error:
        raise ConfigError(f"{error}{f' (in {url})' if doc else ''}")
    return config
