"""Small name -> object registries with decorator registration and helpful unknown-name errors."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from diet.errors import DietConfigError

T = TypeVar("T")


def unknown_name_message(kind: str, name: object, allowed: list[str]) -> str:
    """'unknown model 'gema3': did you mean 'gemma3_270m'? Available: ...'"""
    close = difflib.get_close_matches(str(name), allowed, n=1, cutoff=0.5)
    hint = f" did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}:{hint} available: {', '.join(sorted(allowed))}"


class Registry(Generic[T]):
    """Maps names to objects; `@registry.register("name")` adds one."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._items:
            raise DietConfigError(unknown_name_message(self.kind, name, self.names()))
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
