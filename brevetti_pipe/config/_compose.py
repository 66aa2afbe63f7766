"""Hydra composition for Python callers (``Job.init``), translation of Hydra's errors, and size caps on config files."""

from __future__ import annotations

import os
import re
from typing import Any, cast
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from brevetti_pipe._util.paths import strip_local_scheme
from brevetti_pipe._util.resources import config_dir as bundled_config_dir
from brevetti_pipe.errors import ConfigError, did_you_mean

__all__ = [
    "MAX_DEPTH", "MAX_NODES", "RUN_SETTINGS_GROUP", "check_config_folder", "check_size", "compose", "defaults_loop",
    "set_settings_defaults", "translate_hydra_error",
]

#: The config group (``configs/config.yaml``'s first, optional defaults entry, package ``settings``) holding
#: the run step's settings defaults, so config files, the settings JSON and the command line override them.
RUN_SETTINGS_GROUP = "run_settings"

#: Caps on one config document: nesting depth, and values after YAML anchors/aliases are expanded.
MAX_DEPTH = 100
MAX_NODES = 200_000
#: Hydra plugins by group and option -> what to install to get them.
_PLUGINS = {
    "hydra/launcher": {
        "joblib": "brevetti_pipe[joblib]", "submitit_local": "brevetti_pipe[submitit]",
        "submitit_slurm": "brevetti_pipe[submitit]", "ray": "brevetti_pipe[ray]", "ray_aws": "brevetti_pipe[ray]",
        "rq": "hydra-rq-launcher",
    },
    "hydra/sweeper": {"optuna": "brevetti_pipe[optuna]", "ax": "hydra-ax-sweeper", "nevergrad": "hydra-nevergrad-sweeper"},
}

_MISSING_RE = re.compile(r"Could not find '([^']+)'")
_OPTIONS_RE = re.compile(r"Available options in '([^']+)':\s*\n((?:\s*\S+\s*\n?)+)")
_FULL_KEY_RE = re.compile(r"full_key: (\S+)")
_COULD_NOT_RE = re.compile(r"Could not (?:override|append to config\.?) '([^']+)'")
_GROUP_ENTRIES_RE = re.compile(r"Did you mean to override one of ([^?\n]+)\?")


def translate_hydra_error(exc: BaseException, keys_at: Callable[[str], list[str]] | None = None) -> ConfigError:
    """Turn a Hydra/OmegaConf composition error into one readable ConfigError line.

    Args:
        exc: the exception Hydra raised.
        keys_at: optional lookup of the keys that exist at a dotted path (for suggestions).
    """
    loop = defaults_loop(exc)
    if loop:
        return loop
    text = str(exc).strip()
    missing = _MISSING_RE.search(text)
    if missing:
        wanted = missing.group(1)
        group, _, option = wanted.rpartition("/")
        options = [str(o) for o in (getattr(exc, "options", None) or [])]
        if not options:
            options_match = _OPTIONS_RE.search(text)
            options = options_match.group(2).split("Config search path")[0].split() if options_match else []
        plugin = _PLUGINS.get(group, {}).get(option)
        if plugin and option not in options:
            kind = group.split("/")[-1].capitalize()
            return ConfigError(
                f"{kind} '{option}' is not installed. Received: {group}={option}. Install {plugin} "
                f"(pip install '{plugin}').{' Installed: ' + ', '.join(options) + '.' if options else ''}"
            )
        if group and options:
            return ConfigError(
                f"Unknown option '{option}' for config group '{group}'. Received: {group}={option}. "
                f"Available options: {', '.join(options)}.{did_you_mean(option, options)}"
            )
        return ConfigError(f"Config '{wanted}' not found.{' Available: ' + ', '.join(options) if options else ''}")
    full_key = _FULL_KEY_RE.search(text) or _COULD_NOT_RE.search(text)
    entries = _GROUP_ENTRIES_RE.search(text)
    if full_key and entries:  # e.g. callbacks=[report]: a group chosen by several defaults-list entries
        key, names = full_key.group(1), [e.strip() for e in entries.group(1).split(",")]
        example = names[0].split("@", 1)[-1]
        return ConfigError(
            f"'{key}' cannot be set as a whole: it is made of the defaults-list entries {', '.join(names)}. "
            f"Received: {key}=... Set a value inside one ({example}.PARAM=VALUE), remove one (~{names[0]}) "
            f"or add one (+{key}@{key}.NAME=NAME)."
        )
    if full_key and ("not in struct" in text or "Could not override" in text or "Could not append" in text):
        key = full_key.group(1)
        parent, _, leaf = key.rpartition(".")
        hint, allowed = "", _model_fields_at(parent)
        if leaf in allowed:  # a valid key the composed config leaves out: Hydra wants it added with '+'
            return ConfigError(f"Key '{key}' is not set in the composed config; to set it use +{key}=VALUE.")
        if allowed:
            hint = did_you_mean(leaf, allowed)
        elif keys_at is not None:
            try:
                allowed = keys_at(parent)
            except Exception:
                allowed = []
            hint = did_you_mean(leaf, allowed)
        allowed_txt = f" Allowed keys here: {', '.join(allowed)}." if allowed else ""
        add = f" To add a new key use +{key}=VALUE." if _accepts_new_keys(parent) else ""
        return ConfigError(f"Unknown key '{key}'.{hint}{allowed_txt}{add}")
    first = text.splitlines()[0] if text else type(exc).__name__
    rest = " ".join(line.strip() for line in text.splitlines()[1:] if line.strip())
    return ConfigError(f"{first} {rest}".strip())


def defaults_loop(exc: BaseException) -> ConfigError | None:
    """The ConfigError for a RecursionError Hydra raised on config files whose defaults lists include each
    other (a.yaml: ``defaults: [b]``, b.yaml: ``defaults: [a]``), naming the configs in the loop; else None."""
    if not isinstance(exc, RecursionError):
        return None
    chain: list[str] = []
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_create_defaults_tree_impl":
            node = getattr(tb.tb_frame.f_locals.get("root"), "node", None)
            path = node.get_config_path() if node is not None else None
            if path in chain:
                loop = " -> ".join([*chain[chain.index(path):], path])
                return ConfigError(f"The config defaults lists form a loop: {loop}. Remove one of these entries "
                                   "from a 'defaults' list.")
            if path:
                chain.append(path)
        tb = tb.tb_next
    return None


def _model_fields_at(parent: str) -> list[str]:
    """The keys the validated config allows at ``parent`` when a pydantic model sits there, else []."""
    from brevetti_pipe.config._errors import fields_at
    from brevetti_pipe.config._schema import JobConfig

    return [] if parent.split(".")[0] in ("", "hydra", "settings") else fields_at(JobConfig, tuple(parent.split(".")))


def _accepts_new_keys(parent: str) -> bool:
    """Whether the validated config takes keys a user adds under ``parent`` (so ``+key=VALUE`` is worth offering)."""
    from brevetti_pipe.config._errors import accepts_extra_keys
    from brevetti_pipe.config._schema import JobConfig

    parts = parent.split(".") if parent else []
    if parts[:1] == ["hydra"]:
        return parts[:2] == ["hydra", "callbacks"]
    return parts[:1] != ["settings"] and accepts_extra_keys(JobConfig, tuple(parts))


def check_size(root: object, children: Callable[[object], list[object]], where: str) -> None:
    """Refuse a document deeper than MAX_DEPTH or with more than MAX_NODES values once expanded.

    Shared sub-trees (YAML aliases) are measured once, so a billion-laughs file is refused in
    microseconds instead of being expanded.

    Raises:
        ConfigError: starting with ``where`` (e.g. ``Config file PATH``), naming the limit.
    """
    memo: dict[int, tuple[int, int]] = {}
    active: set[int] = set()
    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = [memo[id(k)] for k in children(node)]
            size, depth = 1 + sum(k[0] for k in kids), 1 + max((k[1] for k in kids), default=0)
            if size > MAX_NODES or depth > MAX_DEPTH:
                what = f"nested more than {MAX_DEPTH} levels deep" if depth > MAX_DEPTH else (
                    f"more than {MAX_NODES} values once its anchors/aliases are expanded")
                raise ConfigError(f"{where} is too large: {what}.")
            memo[key] = (size, depth)
            active.discard(key)
        elif key in active:
            raise ConfigError(f"{where} refers to itself (a recursive anchor/alias).")
        elif key not in memo:
            active.add(key)
            stack.append((node, True))
            stack.extend((k, False) for k in children(node))


def _yaml_children(node: object) -> list[object]:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def check_config_folder(folder: str | os.PathLike[str]) -> None:
    """Check every YAML file under a user's config folder with :func:`check_size` before Hydra loads it.

    Raises:
        ConfigError: naming the file that is too deep, too large once expanded, or self-referencing.
    """
    import yaml

    root = Path(strip_local_scheme(str(folder))).expanduser()
    for path in sorted(root.rglob("*.y*ml")) if root.is_dir() else []:
        try:
            node = yaml.compose(path.read_text(encoding="utf-8", errors="replace"), Loader=yaml.SafeLoader)
        except RecursionError:
            raise ConfigError(f"Config file {path} is too large: nested more than {MAX_DEPTH} levels deep.") from None
        except yaml.YAMLError:
            continue  # Hydra reports syntax errors itself, naming the file
        if node is not None:
            check_size(node, _yaml_children, f"Config file {path}")


def set_settings_defaults(defaults: dict[str, Any]) -> None:
    """Make ``defaults`` the lowest-precedence ``settings`` of every composition that follows in this
    process (Hydra's ConfigStore, option ``run_settings/defaults``; launchers carry it to their workers)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=RUN_SETTINGS_GROUP, name="defaults", node=dict(defaults), provider="brevetti_pipe")


def _hydra_overrides_with_dir(overrides: Sequence[str], config_dir: str | os.PathLike[str] | None) -> list[str]:
    out = list(overrides)
    if config_dir is not None:
        path = Path(config_dir).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"Config directory not found. Received: config_dir={str(config_dir)!r}")
        check_config_folder(path)
        out.append(f"hydra.searchpath=[file://{path}]")
    return out


def compose(
    overrides: Sequence[str] = (),
    *,
    config_dir: str | os.PathLike[str] | None = None,
    config_name: str = "config",
) -> tuple[DictConfig, list[str], list[str]]:
    """Compose the config with Hydra's compose API, exactly as the CLI would.

    Returns:
        (config, the task overrides, the config group names).

    Raises:
        ConfigError: for unknown keys, unknown group options and malformed overrides.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    all_overrides = _hydra_overrides_with_dir(overrides, config_dir)

    def _compose(ovs: list[str]) -> DictConfig:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(bundled_config_dir()), version_base="1.3", job_name="brevetti_pipe"):
                return hydra_compose(config_name=config_name, overrides=ovs, return_hydra_config=True)
        finally:
            GlobalHydra.instance().clear()

    try:
        cfg = _compose(all_overrides)
    except ConfigError:
        raise
    except Exception as exc:
        bad = _FULL_KEY_RE.search(str(exc)) or _COULD_NOT_RE.search(str(exc))

        def keys_at(path: str) -> list[str]:
            base = _compose([o for o in all_overrides if not (bad and bad.group(1) in o)])
            node = OmegaConf.select(base, path) if path else base
            return [str(k) for k in node.keys() if k != "hydra"] if isinstance(node, DictConfig) else []

        raise translate_hydra_error(exc, keys_at) from None
    # unresolved: an override's value may itself look like an interpolation
    task = [str(o) for o in cast("list[Any]", OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False))]
    groups = list(cfg.hydra.runtime.choices.keys())
    return cfg, task, groups
