"""Name -> factory tables, so variants are config values rather than subclasses (STYLE.md, habit 4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from vaekit.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A table of named factories; `get` fails with the list of valid names."""

    def __init__(self, kind: str, entries: dict[str, T] | None = None) -> None:
        """`entries`: the table written out in one place (no registration by importing a module for its effect)."""
        self.kind = kind
        self._entries: dict[str, T] = dict(entries or {})

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise ConfigError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)
