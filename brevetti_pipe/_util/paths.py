"""Path rules shared by the job and its callbacks: artifact and scratch paths stay inside their folder, and
one reading of a local URL for the config, the storage layer and fsspec."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from brevetti_pipe.errors import ConfigError

__all__ = ["LOCAL_PROTOCOLS", "check_relative", "strip_local_scheme"]

#: the URL schemes of local files (fsspec's LocalFileSystem)
LOCAL_PROTOCOLS = ("file", "local")


def check_relative(parts: Sequence[str], where: str) -> str:
    """Join ``parts`` into a relative POSIX path; refuse absolute paths, ``..`` and ``~``.

    Raises:
        ConfigError: (a ValueError) naming ``where`` and the path received.
    """
    rel = PurePosixPath(*[str(p).replace("\\", "/") for p in parts]) if parts else PurePosixPath(".")
    if rel.is_absolute() or any(p == ".." for p in rel.parts) or (parts and str(parts[0]).startswith("~")):
        raise ConfigError(f"{where} takes a path relative to its folder; got {'/'.join(map(str, parts))!r}")
    return rel.as_posix()


def strip_local_scheme(url: str) -> str:
    """The path a local URL names, as fsspec reads it: ``file://x`` and ``local://x`` are ``x`` (relative
    unless ``x`` starts with ``/``), ``file:/x`` (one slash) is ``/x``; any other string is returned as it is."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in LOCAL_PROTOCOLS:
        return rest
    if url.startswith(tuple(f"{p}:/" for p in LOCAL_PROTOCOLS)):
        return url.partition(":")[2]
    return url
