"""A small name -> factory registry (as timm's ``@register_model``)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Callable, TypeVar

from mmedge.errors import RegistryError

T = TypeVar("T")


class Registry(Mapping[str, T]):
    """Maps names to factories; a duplicate name or an unknown lookup is an error.

    A read-only ``Mapping`` (``reg[name]``, ``list(reg)``, ``name in reg``); ``register`` adds.

    Args:
        kind: What the registry holds ("fusion head", "encoder"...), used in messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.kind} {name!r} is already registered; pick another name.")
            self._items[name] = obj
            return obj

        return deco

    def unregister(self, name: str) -> T:
        """Removes and returns the entry registered under ``name`` (plug-in unloading, test teardown)."""
        self.get(name)  # an unknown name lists the valid ones
        return self._items.pop(name)

    def get(self, name: str) -> T:
        """Returns the factory registered under ``name``."""
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
