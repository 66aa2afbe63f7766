"""Error hierarchy shared by every layer, from config validation to storage."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable

__all__ = [
    "BrevettiPipeError",
    "ChecksumError",
    "ConfigError",
    "DatasetError",
    "DeprecatedSpellingWarning",
    "ExportError",
    "JobLockedError",
    "MetricError",
    "SplitError",
    "StageError",
    "StorageError",
    "describe",
    "did_you_mean",
    "folder_error",
]


class BrevettiPipeError(Exception):
    """Base class of every error brevetti_pipe raises on purpose."""


class ConfigError(BrevettiPipeError, ValueError):
    """A config value, override or settings JSON is invalid. Exit code 2 on the CLI."""


class DatasetError(BrevettiPipeError):
    """A dataset cannot be listed, is empty, or its samples are unusable."""


class ExportError(BrevettiPipeError):
    """An exported model format does not predict what the trained model predicts (export parity)."""


class JobLockedError(BrevettiPipeError):
    """Another live process runs the same job id (its lock under the job folder is held)."""


class MetricError(BrevettiPipeError, ValueError):
    """A metric value handed to the job is not a number."""


class SplitError(BrevettiPipeError):
    """The sample split cannot be computed or a persisted split is unreadable."""


class StageError(BrevettiPipeError, ValueError):
    """A map stage got parameters or inputs it cannot work with."""


class StorageError(BrevettiPipeError, OSError):
    """A read or write through fsspec failed."""


class DeprecatedSpellingWarning(FutureWarning):
    """A brevettiai spelling was translated to ours; the message names the new spelling."""


class ChecksumError(StorageError):
    """Fetched bytes differ from the listing (a short read, or the object changed): retried as a
    transient fault, never handed on as a corrupt sample."""


def did_you_mean(value: str, options: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest option, or '' when nothing is close."""
    match = difflib.get_close_matches(str(value), [str(o) for o in options], n=1, cutoff=0.6)
    return f" Did you mean '{match[0]}'?" if match else ""


def folder_error(exc: OSError, folders: dict[str, str | None]) -> BaseException:
    """The ConfigError naming the config key (of ``folders``: key -> configured path) whose folder could not be
    created; ``exc`` itself when it concerns none of them."""
    failed = os.path.abspath(str(exc.filename)) if exc.filename else None
    for key, path in folders.items():
        wanted = os.path.abspath(path) if path else None
        if failed and wanted and (wanted.startswith(failed) or failed.startswith(wanted)):
            reason = exc.strerror or type(exc).__name__
            return ConfigError(f"Cannot create the folder {key} names ({reason}: {exc.filename}). Received: {key}={path}")
    return exc


# A brevetti_pipe error raised inside a tf.data Python function reaches the caller wrapped in a
# TensorFlow error whose text holds the Python traceback; its last line is the original error.
_WRAPPED = re.compile(r"brevetti_pipe\.errors\.\w+Error: ([^\n]+)")
# ... and one a graph's ``tf.debugging.Assert`` raises prints its message in brackets
_ASSERTED = re.compile(r"assertion failed: \[brevetti_pipe\.errors\.\w+Error: ([^\n]+)\]")


def describe(exc: BaseException) -> str:
    """One-line reason for a failed job: our own errors as written (also when TensorFlow
    wrapped them), anything else as ``Type: message``."""
    if isinstance(exc, BrevettiPipeError):
        return str(exc)
    found = _ASSERTED.findall(str(exc)) or _WRAPPED.findall(str(exc))
    if found:
        return found[-1].strip()
    return f"{type(exc).__name__}: {exc}"
