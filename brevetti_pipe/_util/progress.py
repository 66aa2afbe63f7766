"""A console progress bar for long steps (listing, caching, facets); silent when not a TTY."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """``with ProgressBar(total, "Caching") as bar: bar.update(n)``; draws only on a terminal."""

    def __init__(self, total: int, desc: str, stream: TextIO | None = None, min_interval: float = 0.1) -> None:
        self.total = max(int(total), 0)
        self.desc = desc
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self._last = 0.0
        self._interval = min_interval

    def __enter__(self) -> ProgressBar:
        self._draw(force=True)
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self._interval and self.done < self.total:
            return
        self._last = now
        width = 30
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * width)
        self.stream.write(f"\r{self.desc}: [{bar:<{width}}] {self.done}/{self.total}")
        self.stream.flush()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.enabled:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
