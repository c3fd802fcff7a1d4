"""Named extension points (datasets, evaluators, loss terms, encoder families): register once by name,
look up by name.

One small class so every extension point refuses a duplicate and explains an unknown name the same way.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from hjepa_mlx.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """name -> item, in registration order (the order names are listed and, for evaluators, run)."""

    def __init__(self, kind: str):
        self.kind = kind          # 'dataset', 'evaluator': how error messages name the items
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> None:
        # A second registration under one name is a programming mistake (two plug-ins colliding), not a
        # user's: silently replacing the first would change what an existing config means.
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item

    def remove(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UserError(f"unknown {self.kind} {name!r}; known: {', '.join(self._items)}")
        return self._items[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def items(self) -> tuple[T, ...]:
        return tuple(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items
