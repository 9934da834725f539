"""The cache port: a key-value map with time-to-live, never the source of truth.

Contexten caches what is expensive to fetch again (platform API reads, projections) at up
to three levels: an in-process LRU (:class:`~contexten.cache.memory.MemoryCache`), a shared
Redis (:class:`~contexten.cache.redis.RedisCache`), and the loader that reads the source
(the store, a platform API). :class:`~contexten.cache.multilevel.MultiLevelCache` stacks
them. Every level implements :class:`Cache`.

The contract:

* keys are strings; values are what msgspec can encode (``None``, bools, numbers, strings,
  bytes, lists, dicts with string keys, msgspec Structs...). ``None`` is not storable: it is
  what :meth:`Cache.get` answers for a miss. A level that serialises (Redis) hands back
  plain JSON-like types (a tuple comes back as a list), so callers should cache plain data;
* a value read from an in-process level is the very object stored: do not mutate it;
* ``ttl`` is in seconds (or a :class:`~datetime.timedelta`); ``None`` means the cache's
  default, which may be "no expiry"; an entry is gone once its ttl has passed;
* a backend that cannot be reached raises :class:`~contexten.exceptions.CacheUnavailable`,
  never its driver's exception.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypeAlias

__all__ = ["Cache", "Ttl", "check_value", "ttl_seconds"]

Ttl: TypeAlias = float | timedelta
"""A time-to-live: seconds as a number, or a :class:`~datetime.timedelta`."""


def ttl_seconds(ttl: Ttl | None, default: float | None = None) -> float | None:
    """Normalise ``ttl`` to seconds (``None``: ``default``, which may be no expiry).

    Raises:
        ValueError: the ttl is zero, negative, or not finite.
    """
    if ttl is None:
        return default
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"a cache ttl must be positive and finite, not {ttl!r}")
    return seconds


class Cache(ABC):
    """A key-value cache with per-entry time-to-live; one implementation per level.

    Use it as an async context manager (or call :meth:`aclose`) so backends holding
    connections release them.
    """

    @abstractmethod
    async def get(self, key: str) -> Any | None:
        """The value stored under ``key``, or ``None`` when absent or expired."""

    @abstractmethod
    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of those of ``keys`` that are present; absent keys are left out."""

    @abstractmethod
    async def get_many_with_ttl(self, keys: Iterable[str]) -> dict[str, tuple[Any, float | None]]:
        """Like :meth:`get_many`, each value paired with the seconds it has left to live.

        The time left is ``None`` for an entry that does not expire. A level may answer
        less than the entry's true time left (a multi-level cache answers for its L1 copy),
        never more: an upper level copying an entry uses it so that the copy never outlives
        the original.
        """

    @abstractmethod
    async def set(self, key: str, value: Any, *, ttl: Ttl | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` (default: the cache's default ttl).

        Raises:
            ValueError: ``value`` is ``None`` or the ttl is not positive.
        """

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was present (and not expired)."""

    @abstractmethod
    async def clear(self, prefix: str = "") -> int:
        """Remove every key of this cache starting with ``prefix``; return how many.

        With the default empty prefix the whole cache (its namespace, for a shared
        backend) is emptied. The count is exact for in-process levels and best-effort
        for shared ones (entries may expire meanwhile).
        """

    async def ping(self) -> None:  # noqa: B027 - optional hook: in-process levels cannot fail
        """Check the cache can be used (health checks); raise CacheUnavailable if not."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook: most levels hold nothing
        """Release connections. Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def check_value(value: Any) -> None:
    """Refuse ``None``, which :meth:`Cache.get` uses to answer a miss."""
    if value is None:
        raise ValueError("None cannot be cached: get() answers None for a miss")
