"""Hydra composition for Python callers (``Job.init``) and translation of Hydra's errors."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from brevetti_pipe._resources import config_dir as bundled_config_dir
from brevetti_pipe.errors import ConfigError, did_you_mean

__all__ = ["compose", "translate_hydra_error"]

_MISSING_RE = re.compile(r"Could not find '([^']+)'")
_OPTIONS_RE = re.compile(r"Available options in '([^']+)':\s*\n((?:\s*\S+\s*\n?)+)")
_FULL_KEY_RE = re.compile(r"full_key: (\S+)")
_COULD_NOT_RE = re.compile(r"Could not (?:override|append to config\.?) '([^']+)'")


def translate_hydra_error(exc: BaseException, keys_at: Callable[[str], list[str]] | None = None) -> ConfigError:
    """Turn a Hydra/OmegaConf composition error into one readable ConfigError line.

    Args:
        exc: the exception Hydra raised.
        keys_at: optional lookup of the keys that exist at a dotted path (for suggestions).
    """
    text = str(exc).strip()
    missing = _MISSING_RE.search(text)
    if missing:
        wanted = missing.group(1)
        group, _, option = wanted.rpartition("/")
        options = [str(o) for o in (getattr(exc, "options", None) or [])]
        if not options:
            options_match = _OPTIONS_RE.search(text)
            options = options_match.group(2).split("Config search path")[0].split() if options_match else []
        if group and options:
            return ConfigError(
                f"Unknown option '{option}' for config group '{group}'. Received: {group}={option}. "
                f"Available options: {', '.join(options)}.{did_you_mean(option, options)}"
            )
        return ConfigError(f"Config '{wanted}' not found.{' Available: ' + ', '.join(options) if options else ''}")
    full_key = _FULL_KEY_RE.search(text) or _COULD_NOT_RE.search(text)
    if full_key and ("not in struct" in text or "Could not override" in text or "Could not append" in text):
        key = full_key.group(1)
        parent, _, leaf = key.rpartition(".")
        hint, allowed = "", []
        if keys_at is not None:
            try:
                allowed = keys_at(parent)
            except Exception:
                allowed = []
            hint = did_you_mean(leaf, allowed)
        allowed_txt = f" Allowed keys here: {', '.join(allowed)}." if allowed else ""
        return ConfigError(f"Unknown key '{key}'.{hint}{allowed_txt} To add a new key use +{key}=VALUE.")
    first = text.splitlines()[0] if text else type(exc).__name__
    rest = " ".join(line.strip() for line in text.splitlines()[1:] if line.strip())
    return ConfigError(f"{first} {rest}".strip())


def _hydra_overrides_with_dir(overrides: Sequence[str], config_dir: str | os.PathLike[str] | None) -> list[str]:
    out = list(overrides)
    if config_dir is not None:
        path = Path(config_dir).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"Config directory not found. Received: config_dir={str(config_dir)!r}")
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
    task = [str(o) for o in OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False)]
    groups = list(cfg.hydra.runtime.choices.keys())
    return cfg, task, groups
