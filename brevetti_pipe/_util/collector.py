"""Bottom layer: Python's cyclic garbage collector paused while a process starts up.

Start-up (importing Hydra, pydantic, Keras and TensorFlow, composing and validating the config) creates
hundreds of thousands of long-lived objects and no garbage cycles worth collecting, yet every full
collection walks all of them: left on, the collector spends 0.8-1 s of a job's start-up finding nothing.
Paused there, and with the objects alive after the framework import frozen (``gc.freeze``: skipped by
every later collection), a job's own garbage is still collected as usual from then on.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Iterator

__all__ = ["pause", "pause_for_command", "paused", "resume"]

_BEFORE: list[bool] = []  # whether the collector was on when pause() turned it off


def pause() -> None:
    """Turn the collector off until :func:`resume` (a second pause() before it changes nothing)."""
    if not _BEFORE:
        _BEFORE.append(gc.isenabled())
        gc.disable()


def pause_for_command(command: str = "brevetti-pipe", module: str = "brevetti_pipe") -> None:
    """:func:`pause` when this process is the console command (``brevetti-pipe ...`` or ``python -m
    brevetti_pipe ...``, from ``sys.orig_argv``): its entry point resumes once the job starts, so no
    collection walks what the imports made in between."""
    if _is_command(list(getattr(sys, "orig_argv", [])), command, module):
        pause()


def _is_command(argv: list[str], command: str, module: str) -> bool:
    """Whether the interpreter's own arguments (before the script, ``-m`` or ``-c``) run ``command`` or ``-m module``."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m":
            return i + 1 < len(argv) and argv[i + 1] == module
        if arg == "-c":
            return False
        if arg in ("-W", "-X", "--check-hash-based-pycs"):  # options with a separate value
            i += 2
            continue
        if arg.startswith("-") and arg != "-":
            i += 1
            continue
        return os.path.basename(arg) == command  # the script
    return False


def resume(freeze: bool = False) -> None:
    """Undo :func:`pause`: the collector is on again if it was on then (no-op without a pause).
    ``freeze=True`` first freezes every object alive (else the first collection after the pause walks
    every object made during it)."""
    if _BEFORE:
        if freeze:
            gc.freeze()
        if _BEFORE.pop():
            gc.enable()


@contextlib.contextmanager
def paused(freeze: bool = False) -> Iterator[None]:
    """The collector off inside the block, as it was after it; ``freeze=True`` freezes every object alive
    when the block ends without an error (they are never collected, nor walked by a collection, again)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        if freeze:
            gc.freeze()
    finally:
        if enabled:
            gc.enable()
