"""Error hierarchy shared by every layer, from config validation to storage."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BrevettiPipeError",
    "ConfigError",
    "DatasetError",
    "SplitError",
    "StageError",
    "StorageError",
    "did_you_mean",
]


class BrevettiPipeError(Exception):
    """Base class of every error brevetti_pipe raises on purpose."""


class ConfigError(BrevettiPipeError, ValueError):
    """A config value, override or settings JSON is invalid. Exit code 2 on the CLI."""


class DatasetError(BrevettiPipeError):
    """A dataset cannot be listed, is empty, or its samples are unusable."""


class SplitError(BrevettiPipeError):
    """The sample split cannot be computed or a persisted split is unreadable."""


class StageError(BrevettiPipeError, ValueError):
    """A map stage got parameters or inputs it cannot work with."""


class StorageError(BrevettiPipeError, OSError):
    """A read or write through fsspec failed."""


def did_you_mean(value: str, options: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest option, or '' when nothing is close."""
    match = difflib.get_close_matches(str(value), [str(o) for o in options], n=1, cutoff=0.6)
    return f" Did you mean '{match[0]}'?" if match else ""
