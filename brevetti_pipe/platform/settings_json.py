"""Platform layer: the settings JSON a platform injects at ``<root>/jobs/<id>/job.json``, read through storage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe._util.retry import RetryPolicy
from brevetti_pipe.config import JobConfig, parse_settings_json
from brevetti_pipe.config import resolve_config as _resolve
from brevetti_pipe.errors import ConfigError, StorageError
from brevetti_pipe.platform import layout
from brevetti_pipe.storage import IoTools

__all__ = ["read_settings_json", "resolve_config"]


def read_settings_json(
    *, root: str, job_id: str, explicit: str | None, storage_options: dict[str, Any], retry_seconds: float,
) -> tuple[str, dict[str, Any] | None]:
    """Read ``job.settings_json`` (required) or the job's ``job.json`` on the platform (optional).

    Returns:
        The URL and its document, or None when the optional file is missing.

    Raises:
        ConfigError: a required file is missing, or a file is unreadable or invalid.
        StorageError: the store failed.
    """
    url = explicit or layout.settings_json_url(root, job_id)
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    io = IoTools({protocol: dict(storage_options or {})}, retry=RetryPolicy(retry_seconds))
    try:
        if not io.exists(url):
            if explicit:
                raise ConfigError(f"Settings JSON not found. Received: job.settings_json={url!r}")
            return url, None
        raw = io.read_file(url)
    except ConfigError:
        raise
    except StorageError as exc:
        raise StorageError(f"Cannot read the settings JSON: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"Cannot read settings JSON {_secrets.redact(url)!r}: {_secrets.redact(str(exc))}") from None
    return url, parse_settings_json(raw, url)


def resolve_config(cfg: DictConfig, overrides: Sequence[str] = (), groups: Sequence[str] = ()) -> JobConfig:
    """:func:`brevetti_pipe.config.resolve_config` with the platform's settings JSON layered in."""
    return _resolve(cfg, overrides, groups, settings_source=read_settings_json)
