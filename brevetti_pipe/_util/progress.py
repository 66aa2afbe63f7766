"""Bottom layer: console progress bars (tqdm) for long steps; drawn on stderr, and only when stderr is a terminal.

Every long step shows one: listing a dataset, hashing files without a store checksum (MD5),
checking samples (full decode), fetching remote files into the cache, the facets atlas. Use it
for any loop a user may wait on (export, predict)::

    from brevetti_pipe._util.progress import ProgressBar, progress

    with ProgressBar(len(files), "Exporting") as bar:
        for f in files:
            ...
            bar.update()

    for row in progress(rows, "Predicting", unit="image"):
        ...

Bars go to ``sys.stderr`` and are off when it is not a terminal (CI logs, log files, pipes, a
Hydra job log: they never receive carriage-return frames). ``BREVETTI_PIPE_PROGRESS=0`` turns them
off on a terminal too, ``=1`` forces them on (for example in a terminal multiplexer that hides its
TTY). Nothing here goes through :mod:`logging`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TextIO, TypeVar

__all__ = ["ProgressBar", "enabled", "progress"]

T = TypeVar("T")


def enabled(stream: TextIO | None = None) -> bool:
    """True when bars are drawn on ``stream`` (default stderr): a terminal, unless ``BREVETTI_PIPE_PROGRESS``
    says otherwise."""
    forced = os.environ.get("BREVETTI_PIPE_PROGRESS", "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return False
    if forced in ("1", "true", "yes", "on"):
        return True
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def _bar(total: int | None, desc: str, stream: TextIO | None, **kwargs: Any) -> Any:
    from tqdm import tqdm

    stream = stream or sys.stderr
    return tqdm(total=total, desc=desc, file=stream, disable=not enabled(stream), dynamic_ncols=True,
                leave=False, mininterval=0.2, **kwargs)


class ProgressBar:
    """``with ProgressBar(total, "Caching") as bar: bar.update(n)``; draws (tqdm) only on a terminal.

    Args:
        total: the number of steps (None: unknown, a counter is shown).
        desc: what is being done, shown before the bar.
        stream: where to draw (default stderr).
        unit: what a step is (``"file"``, ``"image"``).
    """

    def __init__(self, total: int | None, desc: str, stream: TextIO | None = None, unit: str = "it") -> None:
        self.total = None if total is None else max(int(total), 0)
        self.desc = desc
        self.done = 0
        self._bar = _bar(self.total, desc, stream, unit=unit)
        self.enabled = not self._bar.disable

    def __enter__(self) -> ProgressBar:
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def progress(iterable: Iterable[T], desc: str, total: int | None = None, stream: TextIO | None = None,
             unit: str = "it") -> Iterator[T]:
    """Iterate ``iterable`` with a bar (``total`` defaults to ``len(iterable)`` when it has one)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with ProgressBar(total, desc, stream, unit=unit) as bar:
        for item in iterable:
            yield item
            bar.update()
