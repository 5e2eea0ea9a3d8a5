"""``LRUCache``: the one bounded cache the core uses for programs and compiled code."""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """A dict bounded to ``maxsize`` entries that evicts the least recently used.

    Both reading and writing an entry make it the most recent.

    Examples:
        >>> cache = LRUCache[str, int](maxsize=2)
        >>> cache.put("a", 1); cache.put("b", 2); cache.get("a")
        1
        >>> cache.put("c", 3)  # evicts "b", used least recently
        >>> cache.get("b") is None, len(cache)
        (True, 2)
    """

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}.")
        self.maxsize = maxsize
        self._entries: collections.OrderedDict[K, V] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[K]:
        """The keys, least recently used first."""
        return list(self._entries)

    def get(self, key: K) -> V | None:
        """The entry for ``key`` (now the most recent), or ``None``."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Stores ``value`` under ``key``, evicting the oldest entry when full."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
