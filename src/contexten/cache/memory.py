"""The in-process cache level (L1): least-recently-used eviction, per-entry time-to-live.

Fast because it keeps the values themselves (no encoding) in an ordered dict, and bounded by
entry count so it cannot grow without limit. Expiry reads the :class:`~contexten.clock.Clock`
port, so tests skip time with :class:`~contexten.testing.VirtualClock` instead of sleeping.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from contexten.cache.base import Cache, Ttl, check_value, ttl_seconds
from contexten.clock import Clock, WallClock

__all__ = ["MemoryCache"]

_NEVER = float("inf")


class MemoryCache(Cache):
    """An in-process LRU cache with time-to-live, bounded by entry count.

    Reads and writes both count as a use. When a write would pass ``max_entries`` the
    least recently used entry is evicted. Expired entries are dropped when read or when
    they reach the least-recently-used end, so every operation stays O(1).

    Args:
        max_entries: the most entries kept (at least 1).
        default_ttl: seconds an entry lives when :meth:`set` gives no ttl (None: forever).
        clock: where time is read (default: the wall clock).
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        *,
        default_ttl: Ttl | None = None,
        clock: Clock | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self.default_ttl = ttl_seconds(default_ttl)
        self._clock = clock or WallClock()
        # key -> (value, expiry on the clock's monotonic scale); least recently used first
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self.evictions = 0
        """How many live entries were evicted to make room (expired ones are not counted)."""

    def __len__(self) -> int:
        """Entries held, including expired ones not yet reclaimed."""
        return len(self._entries)

    def _lookup(self, key: str, now: float) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[0]

    async def get(self, key: str) -> Any | None:
        return self._lookup(key, self._clock.monotonic())

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        now = self._clock.monotonic()
        found: dict[str, Any] = {}
        for key in keys:
            value = self._lookup(key, now)
            if value is not None:
                found[key] = value
        return found

    async def get_many_with_ttl(self, keys: Iterable[str]) -> dict[str, tuple[Any, float | None]]:
        now = self._clock.monotonic()
        found: dict[str, tuple[Any, float | None]] = {}
        for key in keys:
            value = self._lookup(key, now)
            if value is not None:
                expires = self._entries[key][1]
                found[key] = (value, None if expires == _NEVER else expires - now)
        return found

    async def set(self, key: str, value: Any, *, ttl: Ttl | None = None) -> None:
        check_value(value)
        seconds = ttl_seconds(ttl, self.default_ttl)
        now = self._clock.monotonic()
        expires = _NEVER if seconds is None else now + seconds
        entries = self._entries
        entries[key] = (value, expires)
        entries.move_to_end(key)
        if len(entries) > self.max_entries:
            self._make_room(now)

    def _make_room(self, now: float) -> None:
        # O(1): drop the least recently used entry; expired ones elsewhere wait their turn
        _, (_, expires) = self._entries.popitem(last=False)
        if expires > now:
            self.evictions += 1

    async def delete(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        return entry is not None and entry[1] > self._clock.monotonic()

    async def clear(self, prefix: str = "") -> int:
        now = self._clock.monotonic()
        if not prefix:
            live = sum(1 for _, expires in self._entries.values() if expires > now)
            self._entries.clear()
            return live
        doomed = [k for k in self._entries if k.startswith(prefix)]
        live = 0
        for key in doomed:
            live += self._entries.pop(key)[1] > now
        return live
