"""Bottom layer: leaving a console command at once when its work is done.

With TensorFlow loaded, the interpreter's own teardown after a finished command (a garbage
collection, then the destruction of every TensorFlow object: the eager context, traced functions,
datasets, the memory cache) takes 1.5-2 s on 2 cores and saves nothing: every output of a job is
written, closed and uploaded before the command returns. So once a console command has returned
(or called ``sys.exit``), :func:`exit_after` does what a normal exit does that matters: threads are
shut down as Python does it (``threading._shutdown``: executors told to stop, non-daemon threads
joined), every ``atexit`` handler runs (logging flushed and closed, temporary folders removed, HTTP
sessions closed, MLflow runs ended, a user's own handlers), stdout and stderr are flushed, and the
process leaves with ``os._exit(code)``. Without TensorFlow, with ``BREVETTI_PIPE_FULL_EXIT=1``, or
when an exception escapes the command (Python prints its traceback), the normal exit runs.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["exit_after", "leaving"]

_leaving = False


def _fast() -> bool:
    return ("tensorflow" in sys.modules and os.environ.get("BREVETTI_PIPE_FULL_EXIT") != "1"
            and hasattr(threading, "_shutdown") and hasattr(atexit, "_run_exitfuncs"))


def leaving() -> bool:
    """Whether the process is leaving through :func:`exit_after`'s ``os._exit``: an ``atexit``
    handler that only waits for work the process would otherwise finalise can skip its wait."""
    return _leaving


def exit_after(command: Callable[[], Any]) -> NoReturn:
    """Run a console ``command`` (its return value or ``sys.exit`` argument is the exit code), then exit."""
    try:
        code = command()
    except SystemExit as exc:
        code = exc.code
    if not _fast():
        sys.exit(code)
    if code is not None and not isinstance(code, int):  # sys.exit("message"): Python prints it, status 1
        print(code, file=sys.stderr)
        code = 1
    _leave(int(code or 0))


def _leave(code: int) -> NoReturn:
    global _leaving
    _leaving = True
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx runs first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (BrokenPipeError, ValueError):  # the reader left, or a closed stream: nothing left to flush
            pass
        except OSError as exc:  # e.g. a full disk under `> table.txt`: the output is lost, as Python says it
            try:
                os.write(2, f"brevetti-pipe: error: could not write the output: {exc}\n".encode())
            except OSError:
                pass
            code = code or 120  # what CPython's own exit returns when flushing stdout fails
    os._exit(code)
