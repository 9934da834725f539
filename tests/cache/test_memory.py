"""The in-process LRU/TTL cache: the conformance suite, eviction, and a model-based test."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from contexten.cache import Cache, MemoryCache, MultiLevelCache, create_cache
from contexten.exceptions import ConfigurationError
from contexten.testing import VirtualClock
from contexten.testing.conformance.cache import CacheConformance

_T = TypeVar("_T")


class TestMemoryCache(CacheConformance):
    def make_cache(self) -> Cache:
        self.clock = VirtualClock()
        return MemoryCache(1000, clock=self.clock)

    async def pass_time(self, seconds: float) -> None:
        await self.clock.advance(seconds)


class TestMultiLevelOverMemory(CacheConformance):
    """Two in-process levels (a tiny L1 that keeps evicting) behave as one cache."""

    exact_ttl = False

    def make_cache(self) -> Cache:
        self.clock = VirtualClock()
        return MultiLevelCache(
            MemoryCache(4, clock=self.clock),
            MemoryCache(1000, clock=self.clock),
            l1_ttl=10,
            clock=self.clock,
        )

    async def pass_time(self, seconds: float) -> None:
        await self.clock.advance(seconds)


async def test_the_least_recently_used_entry_is_evicted() -> None:
    cache = MemoryCache(3, clock=VirtualClock())
    for key in "abc":
        await cache.set(key, key)
    assert await cache.get("a") == "a"  # a is now the most recently used
    await cache.set("d", "d")
    assert await cache.get_many("abcd") == {"a": "a", "c": "c", "d": "d"}
    assert cache.evictions == 1
    assert len(cache) == 3


async def test_writes_count_as_use() -> None:
    cache = MemoryCache(2, clock=VirtualClock())
    await cache.set("a", 1)
    await cache.set("b", 2)
    await cache.set("a", 3)
    await cache.set("c", 4)
    assert await cache.get_many("abc") == {"a": 3, "c": 4}


async def test_an_expired_entry_is_reclaimed_without_counting_as_an_eviction() -> None:
    clock = VirtualClock()
    cache = MemoryCache(2, clock=clock)
    await cache.set("old", 1, ttl=5)
    await cache.set("live", 2)
    await clock.advance(10)
    await cache.set("new", 3)
    assert cache.evictions == 0
    assert await cache.get_many(["old", "live", "new"]) == {"live": 2, "new": 3}


async def test_default_ttl_applies_when_set_gives_none() -> None:
    clock = VirtualClock()
    cache = MemoryCache(default_ttl=60, clock=clock)
    await cache.set("default", 1)
    await cache.set("longer", 2, ttl=120)
    await clock.advance(61)
    assert await cache.get_many(["default", "longer"]) == {"longer": 2}


async def test_the_wall_clock_is_the_default() -> None:
    async with MemoryCache(10) as cache:
        await cache.set("k", "v", ttl=3600)
        assert await cache.get("k") == "v"


def test_bad_sizes_and_ttls_are_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryCache(0)
    with pytest.raises(ValueError, match="ttl"):
        MemoryCache(default_ttl=-1)


def test_memory_urls() -> None:
    cache = create_cache("memory://?max_entries=5&ttl=2.5")
    assert isinstance(cache, MemoryCache)
    assert (cache.max_entries, cache.default_ttl) == (5, 2.5)
    assert isinstance(create_cache("memory://"), MemoryCache)
    for bad in ("memory://?max_entries=zero", "memory://?ttl=-1", "memory://?colour=red"):
        with pytest.raises(ConfigurationError):
            create_cache(bad)
    with pytest.raises(ConfigurationError, match="unknown cache URL scheme"):
        create_cache("memcached://localhost")


# -- the LRU against a model ----------------------------------------------------------------

_KEYS = st.sampled_from(["a", "b", "c", "d", "ab", "abc"])
_TTLS = st.sampled_from([None, 1.0, 2.5])
_SIZE = 3


class LruModel:
    """A reference LRU with lazy expiry: recency order, expired entries reclaimed on touch."""

    def __init__(self) -> None:
        self.now = 0.0
        self.entries: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.evictions = 0

    def get(self, key: str) -> int | None:
        if key not in self.entries:
            return None
        value, expires = self.entries[key]
        if expires <= self.now:
            del self.entries[key]
            return None
        self.entries.move_to_end(key)
        return value

    def set(self, key: str, value: int, ttl: float | None) -> None:
        self.entries[key] = (value, self.now + ttl if ttl is not None else float("inf"))
        self.entries.move_to_end(key)
        if len(self.entries) > _SIZE:
            _, (_, expires) = self.entries.popitem(last=False)
            self.evictions += expires > self.now

    def delete(self, key: str) -> bool:
        entry = self.entries.pop(key, None)
        return entry is not None and entry[1] > self.now

    def clear(self, prefix: str) -> int:
        doomed = [k for k in self.entries if k.startswith(prefix)]
        return sum(self.entries.pop(k)[1] > self.now for k in doomed)


class LruMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = VirtualClock()
        self.cache = MemoryCache(_SIZE, clock=self.clock)
        self.model = LruModel()
        self.counter = 0

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(coro)

    @rule(key=_KEYS, ttl=_TTLS)
    def set(self, key: str, ttl: float | None) -> None:
        self.counter += 1
        self.run(self.cache.set(key, self.counter, ttl=ttl))
        self.model.set(key, self.counter, ttl)

    @rule(key=_KEYS)
    def get(self, key: str) -> None:
        assert self.run(self.cache.get(key)) == self.model.get(key)

    @rule(keys=st.lists(_KEYS, max_size=4))
    def get_many(self, keys: list[str]) -> None:
        expected = {k: v for k in keys if (v := self.model.get(k)) is not None}
        assert self.run(self.cache.get_many(keys)) == expected

    @rule(key=_KEYS)
    def delete(self, key: str) -> None:
        assert self.run(self.cache.delete(key)) == self.model.delete(key)

    @rule(prefix=st.sampled_from(["", "a", "ab", "z"]))
    def clear(self, prefix: str) -> None:
        assert self.run(self.cache.clear(prefix)) == self.model.clear(prefix)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0]))
    def advance(self, seconds: float) -> None:
        self.run(self.clock.advance(seconds))
        self.model.now += seconds

    @invariant()
    def same_size_and_evictions(self) -> None:
        assert len(self.cache) == len(self.model.entries)
        assert self.cache.evictions == self.model.evictions

    def teardown(self) -> None:
        self.loop.close()


def test_lru_against_a_model() -> None:
    run_state_machine_as_test(
        LruMachine,
        settings=settings(
            max_examples=150,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
