"""Locates the bundled configs/ tree, in a checkout and in an installed wheel alike."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

__all__ = ["config_dir"]


@lru_cache(maxsize=1)
def config_dir() -> Path:
    """Return the absolute path of the bundled ``configs/`` directory.

    A wheel ships it as the ``brevetti_pipe._configs`` package; a checkout (or an
    editable install) keeps it beside the package as ``configs/``.
    """
    package = Path(__file__).resolve().parent.parent
    checkout = package.parent / "configs"
    if (checkout / "config.yaml").is_file():
        return checkout
    installed = package / "_configs"
    if (installed / "config.yaml").is_file():
        return installed
    raise FileNotFoundError(
        f"brevetti_pipe's configs/ directory was not found at {checkout} or {installed}; "
        "reinstall the package."
    )
