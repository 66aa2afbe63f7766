"""Bottom layer: what reaches a user's terminal: TensorFlow's start-up noise kept out, our INFO lines in notebooks.

Quiet console (:func:`quiet_tensorflow`). TensorFlow 2.21 writes, while ``import tensorflow`` loads
its extension modules, lines that no setting reaches:

- ``WARNING: All log messages before absl::InitializeLog() is called are written to STDERR``,
- ``I... port.cc:...] oneDNN custom operations are on ...`` (twice: two extension modules each
  carry their own copy of absl's logging state),
- ``I... cpu_feature_guard.cc:...] This TensorFlow binary is optimized ...`` (plus one more line).

They are written by absl's C++ logging from inside the extension modules before any Python code
could configure it (absl prints everything before ``absl::InitializeLog()``, and TensorFlow applies
``TF_CPP_MIN_LOG_LEVEL`` to absl only after the oneDNN notice). ``TF_CPP_MIN_LOG_LEVEL=2`` (set here
only when the user did not set it) hides the cpu_feature_guard lines; the absl and oneDNN lines are
filtered at the file-descriptor level, and only while ``import tensorflow`` runs: stderr (fd 2) is
a pipe for those seconds, a thread forwards every line but those three kinds. Nothing is turned
off: oneDNN stays on, so numerics and speed are unchanged. The retracing warnings of our own
repeated ``predict`` calls come through the ``tensorflow`` Python logger and are dropped by a
logging filter; that logger's INFO lines (``Assets written to: <scratch folder>`` when a SavedModel
is exported) are left out too (its level is WARNING unless someone set it). ``--verbose`` (or ``TF_CPP_MIN_LOG_LEVEL=0`` set by the user) shows everything.

Notebooks (:func:`show_logs`): ``Job.init()`` adds one stream handler to the ``brevetti_pipe``
logger when nothing configured logging, so INFO lines show in a notebook; ``show_logs(False)``
removes it.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

__all__ = ["NOISE", "filtered_stderr", "quiet_tensorflow", "show_logs"]

#: TensorFlow's start-up lines (absl pre-init warning, oneDNN notice, CPU feature notice) and the
#: retracing warnings; matched per line.
NOISE: tuple[re.Pattern[str], ...] = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
    re.compile(r"^[IW]\d{4} [\d:.]+\s+\d+ (port|cpu_feature_guard)\.cc:\d+\] "),
    re.compile(r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"),
)
_RETRACING = "triggered tf.function retracing"
_HANDLER_NAME = "brevetti_pipe.notebook"


@contextlib.contextmanager
def filtered_stderr(patterns: Sequence[re.Pattern[str]] = NOISE) -> Iterator[None]:
    """Drop the lines matching ``patterns`` that anything in this process (C++ included) writes to fd 2
    inside the block; every other line is forwarded unchanged (when the block ends at the latest).

    A no-op where fd 2 cannot be redirected (no such descriptor, no pipes)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = [line for line in lines if not _is_noise(line, patterns)]
                if kept:
                    _write_all(saved, b"".join(line + b"\n" for line in kept))
        if pending and not _is_noise(pending, patterns):
            _write_all(saved, pending)

    thread = threading.Thread(target=forward, name="brevetti-pipe-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the thread sees EOF
        thread.join(timeout=10)
        if not thread.is_alive():  # a process started inside the block may still hold the pipe
            os.close(saved)


def _is_noise(line: bytes, patterns: Sequence[re.Pattern[str]]) -> bool:
    text = line.decode("utf-8", "replace")
    return any(p.search(text) for p in patterns)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


class _RetracingFilter(logging.Filter):
    """Drops TensorFlow's "N out of the last M calls ... triggered tf.function retracing" warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return _RETRACING not in record.getMessage()
        except Exception:
            return True


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of the ``tensorflow`` package inside :func:`filtered_stderr`."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with filtered_stderr():
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` with the other finders and wraps its loader (first import only)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


_FINDER = _QuietTensorFlowFinder()
_FILTER = _RetracingFilter()
_QUIETED = [False]  # the ``tensorflow`` logger's level was set here


def quiet_tensorflow(verbose: bool = False) -> bool:
    """Keep TensorFlow's start-up noise and retracing warnings off the console (see the module docstring).

    Call it before TensorFlow is imported (the command line does); idempotent. With ``verbose`` (or a
    user-set ``TF_CPP_MIN_LOG_LEVEL=0``) it undoes what an earlier call set up and shows everything.

    Returns:
        True when the console is quiet.
    """
    tf_logger = logging.getLogger("tensorflow")
    if verbose or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() == "0":
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(_FINDER)
        tf_logger.removeFilter(_FILTER)
        if _QUIETED[0]:
            tf_logger.setLevel(logging.NOTSET)
            _QUIETED[0] = False
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    if _FILTER not in tf_logger.filters:
        tf_logger.addFilter(_FILTER)
    if tf_logger.level == logging.NOTSET:  # its INFO lines ("Assets written to: <scratch>") are not for users
        tf_logger.setLevel(logging.WARNING)
        _QUIETED[0] = True
    return True


class _UnlessConfigured(logging.Filter):
    """Our notebook handler steps aside once the application (or Hydra) configures the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers


def show_logs(enable: bool = True, level: int = logging.INFO) -> logging.Handler | None:
    """Show the ``brevetti_pipe`` logger's INFO lines on stderr when nothing configured logging
    (a notebook, a plain script); ``Job.init()`` calls it. Adds at most one handler, to the
    ``brevetti_pipe`` logger only; ``show_logs(False)`` removes it.

    Returns:
        The handler (added now or earlier), or None when removed or when logging is configured
        (the root logger or the ``brevetti_pipe`` logger has handlers of its own).
    """
    logger = logging.getLogger("brevetti_pipe")
    ours = [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]
    if not enable:
        for handler in ours:
            logger.removeHandler(handler)
            logger.setLevel(getattr(handler, "previous_level", logger.level))
        return None
    if ours:
        return ours[0]
    if logging.getLogger().handlers or logger.handlers:
        return None
    handler = logging.StreamHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_UnlessConfigured())
    handler.previous_level = logger.level  # type: ignore[attr-defined]
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    return handler
