"""Bottom layer: name -> component registries behind every ``type:`` key in the config tree.

One mechanism for every kind (stages, callbacks, recipes, platforms, dataset generators): a
component registers by name (a class keyword such as ``class Invert(Stage, name="invert")``
or ``@recipe(...)`` is sugar for :meth:`Registry.register`), and installed packages add
components through entry points (``[project.entry-points."brevetti_pipe.stages"]``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, cast

from brevetti_pipe.errors import ConfigError, did_you_mean

__all__ = ["Registry"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: the installed entry points, read once for every registry, with the search path they were read from
_ENTRY_POINTS: list[tuple[tuple[tuple[str, float], ...], Any]] = []


def _installed_entry_points(group: str) -> importlib.metadata.EntryPoints:
    """The entry points of ``group``: every registry's first look reads one table of all groups, read
    again when ``sys.path`` or one of its folders changed since (a package installed or added), as
    ``importlib.metadata`` itself sees installs."""
    def mtime(path: str) -> float:
        try:
            return os.stat(path or ".").st_mtime
        except OSError:
            return -1.0

    key = tuple((p, mtime(p)) for p in sys.path)
    if not _ENTRY_POINTS or _ENTRY_POINTS[0][0] != key:
        _ENTRY_POINTS[:] = [(key, importlib.metadata.entry_points())]
    return cast(importlib.metadata.EntryPoints, _ENTRY_POINTS[0][1].select(group=group))


class Registry(Generic[T]):
    """A named collection of components of one kind (stages, callbacks, recipes, ...).

    Registering a name twice is an error, never a silent overwrite; looking up an
    unknown name raises a ``ConfigError`` that lists the known names.

    Example:
        >>> stages = Registry("stage", config_group="pipeline")
        >>> stages.register("identity", lambda x: x)  # doctest: +ELLIPSIS
        <function ...>
    """

    def __init__(
        self, kind: str, config_group: str | None = None, *, entry_points: str | None = None,
        adapt: Callable[[str, Any], T] | None = None,
    ) -> None:
        """
        Args:
            kind: what the components are, for messages ("stage").
            config_group: the config group or key they are chosen under.
            entry_points: the entry-point group installed packages register into; loading an
                entry point imports its object, which either registers itself under the entry
                point's name (a class keyword, a decorator) or is registered as it is (after ``adapt``).
            adapt: turns a loaded entry-point object into a component (e.g. a function into a Recipe).
        """
        self.kind = kind
        self.config_group = config_group
        self.entry_points = entry_points
        self._adapt = adapt
        self._items: dict[str, T] = {}
        self._loaders: list[Callable[[], object]] = []
        self._seen_entry_points: set[str] = set()
        self._scanned = False

    def add_loader(self, loader: Callable[[], object]) -> None:
        """Defer registration of built-ins until the registry is first read."""
        self._loaders.append(loader)

    def _load(self) -> None:
        while self._loaders:
            self._loaders.pop(0)()
        if not self._scanned:
            self._load_entry_points()

    def _load_entry_points(self) -> None:
        """Register the entry points of installed packages not loaded yet (a new install is seen too)."""
        self._scanned = True
        if not self.entry_points:
            return
        for ep in _installed_entry_points(self.entry_points):
            key = f"{ep.name}={ep.value}"
            if key in self._seen_entry_points:
                continue
            self._seen_entry_points.add(key)
            try:
                obj = ep.load()
            except Exception as exc:
                raise ConfigError(
                    f"Cannot load the {self.kind} '{ep.name}' from entry point {ep.value!r} "
                    f"(group {self.entry_points}): {type(exc).__name__}: {exc}"
                ) from exc
            if ep.name not in self._items:  # the import may have registered it already
                self.register(ep.name, self._adapt(ep.name, obj) if self._adapt else obj)

    def register(self, name: str, item: T) -> T:
        """Register ``item`` under ``name``.

        Raises:
            ConfigError: (a ``ValueError``) ``name`` is taken by another component.
        """
        existing = self._items.get(name)
        if existing is not None and existing is not item:
            raise ConfigError(
                f"A {self.kind} named '{name}' is already registered ({existing!r}); "
                "pick another name."
            )
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register temporary components clean up with it)."""
        self._items.pop(name, None)
        self._seen_entry_points = {k for k in self._seen_entry_points if not k.startswith(f"{name}=")}

    def get(self, name: str, *, where: str = "type") -> T:
        """Return the component registered as ``name``.

        Raises:
            ConfigError: naming ``where`` (the config key), the value and the options.
        """
        self._load()
        if name not in self._items:
            self._load_entry_points()  # installed since the first look
        try:
            return self._items[name]
        except KeyError:
            options = ", ".join(sorted(self._items)) or "(none registered)"
            raise ConfigError(
                f"Unknown {self.kind} '{name}'. Received: {where}={name!r}. "
                f"Registered {self.kind}s: {options}.{did_you_mean(name, self._items)}"
            ) from None

    def names(self) -> list[str]:
        """Sorted registered names."""
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
