"""The cache conformance suite: the contract of :class:`~contexten.cache.Cache`.

Every cache level's tests subclass :class:`CacheConformance`, say how to make a cache and
how to let time pass for it::

    class TestMemoryCache(CacheConformance):
        def make_cache(self) -> Cache:
            self.clock = VirtualClock()
            return MemoryCache(100, clock=self.clock)

        async def pass_time(self, seconds: float) -> None:
            await self.clock.advance(seconds)

A backend that needs a fixture (a server URL) overrides the ``cache`` fixture instead of
:meth:`~CacheConformance.make_cache`. The suite needs pytest and pytest-asyncio (auto mode).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, ClassVar

import pytest

from contexten.cache.base import Cache

__all__ = ["CacheConformance"]

_HANG_GUARD = 30.0  # seconds; only stops a hung test, never measures anything
_LONG = 3600.0  # a ttl no test outlives

VALUES: list[Any] = [
    "text",
    "",
    "ünïcødé ✓",
    0,
    -17,
    2**62,
    1.5,
    False,
    True,
    b"\x00\xffbytes",
    [],
    [1, "two", [3.0, None]],
    {},
    {"nested": {"list": [1, 2], "flag": True, "none": None}},
]
"""Values every backend must give back equal (falsy ones included: they are not misses)."""


class CacheConformance:
    """The cache contract as tests; subclass it once per cache level.

    Override :meth:`make_cache` (or the ``cache`` fixture) and :meth:`pass_time`.
    """

    short_ttl: ClassVar[float] = 1.0
    """A ttl the expiry tests let pass; keep it small for backends that really wait."""

    exact_ttl: ClassVar[bool] = True
    """Whether :meth:`~Cache.get_many_with_ttl` reports ``None`` for an entry stored without
    expiry; False for a cache that may answer for a shorter-lived copy (multi-level)."""

    def make_cache(self) -> Cache:
        """Return a new, empty cache (closed by the suite after each test)."""
        raise NotImplementedError

    async def pass_time(self, seconds: float) -> None:
        """Let ``seconds`` pass for the cache (advance a virtual clock, or really wait)."""
        raise NotImplementedError

    @pytest.fixture
    async def cache(self) -> AsyncIterator[Cache]:
        """A fresh cache, closed after the test."""
        async with self.make_cache() as cache:
            yield cache

    # -- reads and writes ---------------------------------------------------------------

    async def test_a_missing_key_reads_none(self, cache: Cache) -> None:
        assert await cache.get("absent") is None
        assert await cache.get_many(["absent", "also-absent"]) == {}

    @pytest.mark.parametrize("value", VALUES, ids=repr)
    async def test_values_round_trip(self, cache: Cache, value: Any) -> None:
        await cache.set("key", value)
        got = await cache.get("key")
        assert got == value
        assert type(got) is type(value)

    async def test_keys_are_arbitrary_strings(self, cache: Cache) -> None:
        keys = ["a:b:c", "with space", "ключ", "*", "[x]", "back\\slash", "k" * 500, ""]
        for i, key in enumerate(keys):
            await cache.set(key, i)
        assert await cache.get_many(keys) == {k: i for i, k in enumerate(keys)}

    async def test_set_replaces_the_value(self, cache: Cache) -> None:
        await cache.set("key", "old")
        await cache.set("key", {"new": 1})
        assert await cache.get("key") == {"new": 1}

    async def test_none_and_bad_ttls_are_refused(self, cache: Cache) -> None:
        with pytest.raises(ValueError, match="None"):
            await cache.set("key", None)
        for bad in (0, -1, math.nan, math.inf, timedelta(0)):
            with pytest.raises(ValueError, match="ttl"):
                await cache.set("key", 1, ttl=bad)
        assert await cache.get("key") is None

    async def test_get_many_answers_the_present_keys_only(self, cache: Cache) -> None:
        await cache.set("a", 1)
        await cache.set("c", 3)
        assert await cache.get_many(["a", "b", "c", "a"]) == {"a": 1, "c": 3}
        assert await cache.get_many([]) == {}
        assert await cache.get_many(iter(["c"])) == {"c": 3}

    async def test_get_many_with_ttl_tells_the_time_left(self, cache: Cache) -> None:
        await cache.set("long", 1, ttl=_LONG)
        await cache.set("forever", 2)
        entries = await cache.get_many_with_ttl(["long", "forever", "absent"])
        assert set(entries) == {"long", "forever"}
        value, remaining = entries["long"]
        assert value == 1
        assert remaining is not None
        assert 0 < remaining <= _LONG
        if self.exact_ttl:
            assert entries["forever"] == (2, None)
        else:
            assert entries["forever"][0] == 2
        assert await cache.get_many_with_ttl([]) == {}

    async def test_delete_says_whether_the_key_was_there(self, cache: Cache) -> None:
        await cache.set("key", 1)
        assert await cache.delete("key") is True
        assert await cache.get("key") is None
        assert await cache.delete("key") is False

    # -- time to live -----------------------------------------------------------------------

    async def test_an_entry_expires_after_its_ttl(self, cache: Cache) -> None:
        await cache.set("short", 1, ttl=self.short_ttl)
        await cache.set("delta", 2, ttl=timedelta(seconds=self.short_ttl))
        await cache.set("long", 3, ttl=_LONG)
        await cache.set("forever", 4)
        assert await cache.get("long") == 3
        await self.pass_time(self.short_ttl * 3)
        assert await cache.get("short") is None
        assert await cache.get_many(["short", "delta", "long", "forever"]) == {
            "long": 3,
            "forever": 4,
        }
        assert await cache.delete("delta") is False
        assert set(await cache.get_many_with_ttl(["short", "long"])) == {"long"}

    async def test_set_again_restarts_the_ttl(self, cache: Cache) -> None:
        await cache.set("key", "first", ttl=self.short_ttl)
        await cache.set("key", "second", ttl=_LONG)
        await self.pass_time(self.short_ttl * 3)
        assert await cache.get("key") == "second"

    # -- clearing ---------------------------------------------------------------------------

    async def test_clear_removes_a_prefix(self, cache: Cache) -> None:
        for key in ("user:1", "user:2", "user:3", "users", "repo:1"):
            await cache.set(key, key)
        assert await cache.clear("user:") == 3
        assert await cache.get_many(["user:1", "user:2", "user:3", "users", "repo:1"]) == {
            "users": "users",
            "repo:1": "repo:1",
        }
        assert await cache.clear("nothing-here") == 0

    async def test_clear_takes_the_prefix_literally(self, cache: Cache) -> None:
        for key in ("a*b:1", "a*b:2", "axb:1", "[x]1", "x1", "a?c", "abc", "q\\1", "q1"):
            await cache.set(key, 1)
        assert await cache.clear("a*b") == 2
        assert await cache.clear("[x]") == 1
        assert await cache.clear("a?") == 1
        assert await cache.clear("q\\") == 1
        assert set(await cache.get_many(["axb:1", "x1", "abc", "q1"])) == {
            "axb:1",
            "x1",
            "abc",
            "q1",
        }

    async def test_clear_without_prefix_empties_the_cache(self, cache: Cache) -> None:
        for i in range(25):
            await cache.set(f"k{i}", i)
        assert await cache.clear() == 25
        assert await cache.get_many([f"k{i}" for i in range(25)]) == {}
        await cache.set("after", 1)
        assert await cache.get("after") == 1

    # -- concurrency and lifecycle ----------------------------------------------------------

    async def test_concurrent_writers_and_readers(self, cache: Cache) -> None:
        async def work(i: int) -> Any:
            await cache.set(f"k{i % 20}", i)
            return await cache.get(f"k{i % 20}")

        async with asyncio.timeout(_HANG_GUARD):
            results = await asyncio.gather(*(work(i) for i in range(200)))
        assert all(r is not None and r % 20 == i % 20 for i, r in enumerate(results))
        final = await cache.get_many([f"k{j}" for j in range(20)])
        assert sorted(final) == sorted(f"k{j}" for j in range(20))

    async def test_ping_and_close_twice(self, cache: Cache) -> None:
        await cache.ping()
        await cache.aclose()
        await cache.aclose()
