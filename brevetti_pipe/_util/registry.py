"""Name -> component registries behind every ``type:`` key in the config tree."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from brevetti_pipe.errors import ConfigError, did_you_mean

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of components of one kind (stages, callbacks, recipes, ...).

    Registering a name twice is an error, never a silent overwrite; looking up an
    unknown name raises a ``ConfigError`` that lists the known names.

    Example:
        >>> stages = Registry("stage", config_group="pipeline")
        >>> stages.register("identity", lambda x: x)  # doctest: +ELLIPSIS
        <function ...>
    """

    def __init__(self, kind: str, config_group: str | None = None) -> None:
        self.kind = kind
        self.config_group = config_group
        self._items: dict[str, T] = {}
        self._loaders: list[Callable[[], None]] = []

    def add_loader(self, loader: Callable[[], None]) -> None:
        """Defer registration of built-ins until the registry is first read."""
        self._loaders.append(loader)

    def _load(self) -> None:
        while self._loaders:
            self._loaders.pop(0)()

    def register(self, name: str, item: T) -> T:
        """Register ``item`` under ``name``; raises ``ValueError`` on a collision."""
        existing = self._items.get(name)
        if existing is not None and existing is not item:
            raise ValueError(
                f"A {self.kind} named '{name}' is already registered ({existing!r}); "
                "pick another name."
            )
        self._items[name] = item
        return item

    def get(self, name: str, *, where: str = "type") -> T:
        """Return the component registered as ``name``.

        Raises:
            ConfigError: naming ``where`` (the config key), the value and the options.
        """
        self._load()
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
