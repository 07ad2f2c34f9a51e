"""Name -> factory registries. Every name written to disk goes through one of these."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mole.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named plug-ins; an unknown name raises and lists the valid ones.

    Args:
        kind: what the registry holds ("task", "architecture", ...); used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str, field: str | None = None) -> T:
        if name not in self._items:
            valid = ", ".join(sorted(self._items))
            raise ConfigError(field or self.kind, f"unknown {self.kind} {name!r}; valid: {valid}")
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
