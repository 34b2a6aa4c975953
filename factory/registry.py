"""Name → implementation registries (readers, mappers, trace formats, stages): the name a recipe
uses is the key, and the error for an unknown name lists the known ones."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, name_attr: str | None = None):
        self.what = what
        self.name_attr = name_attr   # set on registered classes, e.g. Reader.format
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.what} '{name}' is registered twice")
            if self.name_attr:
                setattr(item, self.name_attr, name)
            self._items[name] = item
            return item

        return deco

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.what} '{name}' (known: {', '.join(sorted(self._items))})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self):
        return self._items.items()
