"""Path rules shared by the job and its callbacks: artifact and scratch paths stay inside their folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from brevetti_pipe.errors import ConfigError

__all__ = ["check_relative"]


def check_relative(parts: Sequence[str], where: str) -> str:
    """Join ``parts`` into a relative POSIX path; refuse absolute paths, ``..`` and ``~``.

    Raises:
        ConfigError: (a ValueError) naming ``where`` and the path received.
    """
    rel = PurePosixPath(*[str(p).replace("\\", "/") for p in parts]) if parts else PurePosixPath(".")
    if rel.is_absolute() or any(p == ".." for p in rel.parts) or (parts and str(parts[0]).startswith("~")):
        raise ConfigError(f"{where} takes a path relative to its folder; got {'/'.join(map(str, parts))!r}")
    return rel.as_posix()
