"""Levels stacked: an in-process L1 over a shared L2, over the loader that reads the source.

:class:`MultiLevelCache` is itself a :class:`~contexten.cache.base.Cache`. Its main entry is
:meth:`MultiLevelCache.get_or_load`, a read-through lookup:

1. L1 (in-process) answers if it can;
2. else L2 (Redis) answers, and L1 is filled;
3. else the loader runs (the L3: the store, a platform API), and both levels are filled.

Steps 2 and 3 are *single-flight*: concurrent misses for one key share one L2 read and one
loader call, so a popular key that expires does not send a stampede to the source.

Writes go through every level (:meth:`set`, :meth:`delete`, :meth:`clear`), and stop a
load in flight for the same keys (or an L2 read) from filling the levels afterwards, so an
invalidation in this process is never undone by a read that started before it. An entry
copied from L2 into L1 keeps the remaining ttl it had in L2.

The L2 is optional and may fail: when it raises a :class:`~contexten.exceptions.CacheError`
the failure is counted in :attr:`MultiLevelCache.stats`, logged once, and the L2 is left out
for ``l2_retry_after`` seconds. Reads (:meth:`get`, :meth:`get_many`, :meth:`get_or_load`)
then carry on with L1 and the loader and never raise it; writes apply to L1 and then raise
:class:`~contexten.exceptions.CacheUnavailable`, because an invalidation that did not reach
the shared level is the caller's to know about.

Staleness across processes is bounded, not eliminated: another process's write reaches this
process's L1 when the L1 entry expires, so L1 entries live at most ``l1_ttl`` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from contexten.cache.base import Cache, Ttl, check_value, ttl_seconds
from contexten.cache.memory import MemoryCache
from contexten.clock import Clock, WallClock
from contexten.exceptions import CacheError, CacheUnavailable
from contexten.observability.logging import get_logger

__all__ = ["CacheStats", "MultiLevelCache"]

_V = TypeVar("_V")


@dataclass
class CacheStats:
    """Counters of a :class:`MultiLevelCache` (plain ints: read them, export them, reset them).

    Attributes:
        l1_hits: lookups answered by L1.
        l2_hits: lookups answered by L2 (L1 then filled).
        misses: lookups neither level answered.
        loads: loader calls made by :meth:`MultiLevelCache.get_or_load`.
        load_errors: loader calls that raised (the error went to every waiting caller).
        coalesced: :meth:`~MultiLevelCache.get_or_load` calls that joined a load in flight
            instead of starting their own.
        l2_errors: L2 operations that failed.
        l2_skipped: L2 operations not attempted because L2 failed less than
            ``l2_retry_after`` seconds before.
    """

    l1_hits: int = 0
    l2_hits: int = 0
    misses: int = 0
    loads: int = 0
    load_errors: int = 0
    coalesced: int = 0
    l2_errors: int = 0
    l2_skipped: int = 0


class _Flight:
    """One key's miss being resolved; ``valid`` turns False when a write invalidates it."""

    __slots__ = ("task", "valid")

    def __init__(self) -> None:
        self.valid = True
        self.task: asyncio.Task[Any] | None = None


def _consume_outcome(task: asyncio.Task[Any]) -> None:
    # every waiter may have been cancelled; the outcome was delivered or is not wanted
    if not task.cancelled():
        task.exception()


class MultiLevelCache(Cache):
    """An L1 cache over an optional L2 cache, with read-through, single-flight loads.

    Args:
        l1: the in-process level (default: a :class:`MemoryCache` of 10,000 entries on
            ``clock``).
        l2: the shared level (usually a :class:`~contexten.cache.redis.RedisCache`), or None.
        l1_ttl: the longest an entry stays in L1 (None: as long as its own ttl), which
            bounds how stale this process can be after another process writes L2.
        l2_retry_after: seconds L2 is left out after it fails.
        clock: where time is read for the L2 back-off.
    """

    def __init__(
        self,
        l1: Cache | None = None,
        l2: Cache | None = None,
        *,
        l1_ttl: Ttl | None = 30.0,
        l2_retry_after: Ttl = 5.0,
        clock: Clock | None = None,
    ) -> None:
        self._clock = clock or WallClock()
        self.l1 = l1 if l1 is not None else MemoryCache(clock=self._clock)
        self.l2 = l2
        self.l1_ttl = ttl_seconds(l1_ttl)
        self.l2_retry_after = cast(float, ttl_seconds(l2_retry_after))
        self.stats = CacheStats()
        self.last_l2_error: CacheError | None = None
        """The most recent L2 failure (None until one happens)."""
        self._l2_down_until: float | None = None
        self._flights: dict[str, _Flight] = {}
        self._write_epoch = 0  # bumped by every write, so L2 reads know one raced them
        self._log = get_logger("contexten.cache")

    # -- L2 health -----------------------------------------------------------------------

    @property
    def l2_degraded(self) -> bool:
        """Whether L2 failed recently and is being left out."""
        return self._l2_down_until is not None

    def _l2_usable(self) -> Cache | None:
        if self.l2 is None:
            return None
        if self._l2_down_until is not None and self._clock.monotonic() < self._l2_down_until:
            self.stats.l2_skipped += 1
            return None
        return self.l2

    def _l2_failed(self, error: CacheError) -> None:
        self.stats.l2_errors += 1
        self.last_l2_error = error
        if self._l2_down_until is None:
            self._log.warning(
                "cache L2 failed; serving from L1 and loaders",
                error=str(error),
                retry_after=self.l2_retry_after,
            )
        self._l2_down_until = self._clock.monotonic() + self.l2_retry_after

    def _l2_succeeded(self) -> None:
        if self._l2_down_until is not None:
            self._l2_down_until = None
            self._log.info("cache L2 recovered")

    def _l2_unusable_error(self) -> CacheUnavailable:
        return CacheUnavailable(f"cache L2 left out after a failure: {self.last_l2_error}")

    def _l1_ttl(self, seconds: float | None) -> float | None:
        if self.l1_ttl is None:
            return seconds
        return self.l1_ttl if seconds is None else min(seconds, self.l1_ttl)

    # -- reads ---------------------------------------------------------------------------

    async def _l2_entries(self, keys: list[str]) -> dict[str, tuple[Any, float | None]]:
        l2 = self._l2_usable() if keys else None
        if l2 is None:
            return {}
        epoch = self._write_epoch
        try:
            entries = await l2.get_many_with_ttl(keys)
        except CacheError as e:
            self._l2_failed(e)
            return {}
        self._l2_succeeded()
        self.stats.l2_hits += len(entries)
        if epoch != self._write_epoch:  # a write raced the read: the copy could undo it
            return entries
        for key, (value, remaining) in entries.items():  # a copy never outlives its original
            await self.l1.set(key, value, ttl=self._l1_ttl(remaining))
        return entries

    async def get(self, key: str) -> Any | None:
        value = await self.l1.get(key)
        if value is not None:
            self.stats.l1_hits += 1
            return value
        entry = (await self._l2_entries([key])).get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        return entry[0]

    async def get_many_with_ttl(self, keys: Iterable[str]) -> dict[str, tuple[Any, float | None]]:
        wanted = list(dict.fromkeys(keys))
        found = await self.l1.get_many_with_ttl(wanted)
        self.stats.l1_hits += len(found)
        found.update(await self._l2_entries([k for k in wanted if k not in found]))
        self.stats.misses += len(wanted) - len(found)
        return found

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return {k: value for k, (value, _) in (await self.get_many_with_ttl(keys)).items()}

    async def get_or_load(
        self, key: str, loader: Callable[[], Awaitable[_V]], *, ttl: Ttl | None = None
    ) -> _V:
        """The value under ``key``, from L1, else L2, else ``loader()`` (then cached).

        Concurrent calls that miss on the same key share one L2 read and one loader call
        (the first caller's loader and ttl). A loader that returns ``None`` (nothing to
        cache) has its answer returned but not stored. Failures of L2 are counted, never
        raised; the loader's own exceptions reach every caller waiting on it, and nothing
        is cached. Cancelling a caller does not cancel the load the others wait for.

        Args:
            key: the cache key.
            loader: reads the value from the source when no level has it.
            ttl: how long the loaded value lives in L2 (L1: at most ``l1_ttl``).
        """
        seconds = ttl_seconds(ttl)
        value = await self.l1.get(key)
        if value is not None:
            self.stats.l1_hits += 1
            return cast(_V, value)
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight()
            self._flights[key] = flight
            task = asyncio.create_task(self._fill(key, loader, seconds, flight))
            task.add_done_callback(_consume_outcome)
            flight.task = task
        else:
            self.stats.coalesced += 1
        assert flight.task is not None
        return cast(_V, await asyncio.shield(flight.task))

    async def _fill(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        seconds: float | None,
        flight: _Flight,
    ) -> Any:
        try:
            entry = (await self._l2_entries([key])).get(key)
            if entry is not None:
                return entry[0]
            self.stats.misses += 1
            self.stats.loads += 1
            try:
                value = await loader()
            except Exception:
                self.stats.load_errors += 1
                raise
            if value is None:
                return None
            await self._l2_store_quietly(key, value, seconds, flight)
            if flight.valid:
                await self.l1.set(key, value, ttl=self._l1_ttl(seconds))
            return value
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]

    async def _l2_store_quietly(
        self, key: str, value: Any, seconds: float | None, flight: _Flight
    ) -> None:
        l2 = self._l2_usable() if flight.valid else None
        if l2 is None:
            return
        try:
            await l2.set(key, value, ttl=seconds)
            if not flight.valid:  # invalidated while our write was on the wire: undo it
                await l2.delete(key)
        except CacheError as e:
            self._l2_failed(e)
        else:
            self._l2_succeeded()

    # -- writes --------------------------------------------------------------------------

    def _invalidate_flights(self, prefix: str | None = None, key: str | None = None) -> None:
        self._write_epoch += 1
        if key is not None:
            doomed = [key] if key in self._flights else []
        else:
            doomed = [k for k in self._flights if k.startswith(prefix or "")]
        for name in doomed:
            self._flights.pop(name).valid = False

    async def _l2_write(self, write: Callable[[Cache], Awaitable[_V]]) -> _V | None:
        """Run a write on L2 (None without L2); raise CacheUnavailable if L2 is out."""
        if self.l2 is None:
            return None
        l2 = self._l2_usable()
        if l2 is None:
            raise self._l2_unusable_error()
        try:
            result = await write(l2)
        except CacheError as e:
            self._l2_failed(e)
            raise
        finally:
            self._write_epoch += 1  # reads of L2 that overlapped the write must not copy
        self._l2_succeeded()
        return result

    async def set(self, key: str, value: Any, *, ttl: Ttl | None = None) -> None:
        """Store ``value`` in every level (L1 for at most ``l1_ttl``).

        Raises:
            CacheUnavailable: L2 failed, or is left out after a recent failure; L1 holds
                the new value regardless.
        """
        check_value(value)
        seconds = ttl_seconds(ttl)
        self._invalidate_flights(key=key)
        await self.l1.set(key, value, ttl=self._l1_ttl(seconds))
        await self._l2_write(lambda l2: l2.set(key, value, ttl=seconds))

    async def delete(self, key: str) -> bool:
        """Remove ``key`` from every level; return whether any level held it.

        Raises:
            CacheUnavailable: L2 failed, or is left out after a recent failure; L1 no
                longer holds the key regardless.
        """
        self._invalidate_flights(key=key)
        in_l1 = await self.l1.delete(key)
        in_l2 = await self._l2_write(lambda l2: l2.delete(key))
        return in_l1 or bool(in_l2)

    async def clear(self, prefix: str = "") -> int:
        """Remove the keys starting with ``prefix`` from every level.

        Returns the larger of the levels' counts (a key is usually in both).

        Raises:
            CacheUnavailable: L2 failed, or is left out after a recent failure; L1 is
                cleared regardless.
        """
        self._invalidate_flights(prefix=prefix)
        in_l1 = await self.l1.clear(prefix)
        in_l2 = await self._l2_write(lambda l2: l2.clear(prefix))
        return max(in_l1, in_l2 or 0)

    # -- lifecycle -----------------------------------------------------------------------

    async def ping(self) -> None:
        """Check L2 (raises CacheUnavailable if it is down; L1 cannot fail)."""
        if self.l2 is not None:
            await self.l2.ping()

    async def aclose(self) -> None:
        """Cancel loads in flight and close both levels. Idempotent."""
        tasks = [f.task for f in self._flights.values() if f.task is not None]
        self._invalidate_flights(prefix="")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.l1.aclose()
        if self.l2 is not None:
            await self.l2.aclose()
