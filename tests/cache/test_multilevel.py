"""The multi-level cache: read-through, single-flight, invalidation, L2 degradation, TTLs."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from contexten.cache import MemoryCache, MultiLevelCache, Ttl
from contexten.cache.redis import RedisCache
from contexten.exceptions import CacheUnavailable
from contexten.testing import VirtualClock

_T = TypeVar("_T")
_HANG_GUARD = 30.0  # seconds; only stops a hung test, never measures anything


class CountingCache(MemoryCache):
    """An in-process level that counts reads and can be switched off like a lost server."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(1000, clock=clock)
        self.reads = 0
        self.down = False
        self.read_done = asyncio.Event()
        self.read_gate = asyncio.Event()  # closed by a test to hold reads after they read
        self.read_gate.set()

    def _check(self) -> None:
        if self.down:
            raise CacheUnavailable("switched off by the test")

    async def get(self, key: str) -> Any | None:
        self._check()
        self.reads += 1
        return await super().get(key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        self._check()
        self.reads += 1
        return await super().get_many(keys)

    async def get_many_with_ttl(self, keys: Iterable[str]) -> dict[str, tuple[Any, float | None]]:
        self._check()
        self.reads += 1
        found = await super().get_many_with_ttl(keys)
        self.read_done.set()
        await self.read_gate.wait()
        return found

    async def set(self, key: str, value: Any, *, ttl: Ttl | None = None) -> None:
        self._check()
        await super().set(key, value, ttl=ttl)

    async def delete(self, key: str) -> bool:
        self._check()
        return await super().delete(key)


class Loader:
    """A loader that counts its calls and, when gated, waits for the test to open the gate."""

    def __init__(self, value: Any = "loaded", *, gated: bool = False) -> None:
        self.value = value
        self.calls = 0
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.started = asyncio.Event()

    async def __call__(self) -> Any:
        self.calls += 1
        self.started.set()
        await self.gate.wait()
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
async def l2(clock: VirtualClock) -> CountingCache:
    return CountingCache(clock)


@pytest.fixture
async def cache(clock: VirtualClock, l2: CountingCache) -> AsyncIterator[MultiLevelCache]:
    async with MultiLevelCache(MemoryCache(100, clock=clock), l2, l1_ttl=10, clock=clock) as c:
        yield c


# -- read-through ----------------------------------------------------------------------------


async def test_read_through_fills_each_level_on_the_way_back(
    cache: MultiLevelCache, l2: CountingCache
) -> None:
    load = Loader({"id": 1})
    assert await cache.get_or_load("k", load, ttl=60) == {"id": 1}
    assert await l2.get("k") == {"id": 1}  # written through to L2
    assert await cache.get_or_load("k", load) == {"id": 1}  # from L1
    await cache.l1.delete("k")
    assert await cache.get_or_load("k", load) == {"id": 1}  # from L2, L1 filled again
    assert await cache.get("k") == {"id": 1}
    assert load.calls == 1
    s = cache.stats
    assert (s.loads, s.misses, s.l2_hits, s.l1_hits) == (1, 1, 1, 2)


async def test_get_many_reads_l2_once_for_the_l1_misses(
    cache: MultiLevelCache, l2: CountingCache
) -> None:
    await cache.set("a", 1)
    await l2.set("b", 2)
    reads = l2.reads
    assert await cache.get_many(["a", "b", "c"]) == {"a": 1, "b": 2}
    assert l2.reads == reads + 1
    assert await cache.l1.get("b") == 2


async def test_a_none_from_the_loader_is_returned_not_cached(cache: MultiLevelCache) -> None:
    load = Loader(None)
    assert await cache.get_or_load("k", load) is None
    assert await cache.get_or_load("k", load) is None
    assert load.calls == 2


async def test_a_loader_error_reaches_every_waiter_and_nothing_is_cached(
    cache: MultiLevelCache,
) -> None:
    load = Loader(LookupError("source says no"), gated=True)
    waiters = [asyncio.create_task(cache.get_or_load("k", load)) for _ in range(5)]
    await load.started.wait()
    load.gate.set()
    async with asyncio.timeout(_HANG_GUARD):
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(o, LookupError) for o in outcomes)
    assert (load.calls, cache.stats.load_errors) == (1, 1)
    assert await cache.get_or_load("k", Loader("second try")) == "second try"


# -- single-flight ---------------------------------------------------------------------------


async def test_100_concurrent_misses_call_the_loader_once(
    cache: MultiLevelCache, l2: CountingCache
) -> None:
    load = Loader("expensive", gated=True)
    callers = [asyncio.create_task(cache.get_or_load("hot", load, ttl=60)) for _ in range(100)]
    await load.started.wait()
    await asyncio.sleep(0)
    load.gate.set()
    async with asyncio.timeout(_HANG_GUARD):
        results = await asyncio.gather(*callers)
    assert results == ["expensive"] * 100
    assert load.calls == 1
    assert l2.reads == 1  # the L2 read is part of the single flight too
    assert cache.stats.coalesced == 99


async def test_a_cancelled_caller_does_not_cancel_the_load_of_the_others(
    cache: MultiLevelCache,
) -> None:
    load = Loader("value", gated=True)
    first = asyncio.create_task(cache.get_or_load("k", load))
    await load.started.wait()
    second = asyncio.create_task(cache.get_or_load("k", load))
    await asyncio.sleep(0)
    first.cancel()
    load.gate.set()
    async with asyncio.timeout(_HANG_GUARD):
        assert await second == "value"
    assert first.cancelled()
    assert load.calls == 1
    assert await cache.get("k") == "value"


async def test_an_invalidation_during_a_load_is_not_undone_by_it(
    cache: MultiLevelCache, l2: CountingCache
) -> None:
    load = Loader("stale", gated=True)
    caller = asyncio.create_task(cache.get_or_load("k", load))
    await load.started.wait()
    await cache.delete("k")
    load.gate.set()
    async with asyncio.timeout(_HANG_GUARD):
        assert await caller == "stale"  # its caller asked before the invalidation
    assert await cache.get("k") is None
    assert await l2.get("k") is None
    # and a load after the invalidation is a new flight
    assert await cache.get_or_load("k", Loader("fresh")) == "fresh"


async def test_an_invalidation_during_an_l2_read_is_not_undone_by_it(
    cache: MultiLevelCache, l2: CountingCache
) -> None:
    await l2.set("k", "old")
    l2.read_gate.clear()
    reader = asyncio.create_task(cache.get("k"))
    await l2.read_done.wait()  # the reader holds "old", not yet copied to L1
    await cache.delete("k")
    l2.read_gate.set()
    async with asyncio.timeout(_HANG_GUARD):
        assert await reader == "old"
    assert await cache.l1.get("k") is None
    assert await cache.get("k") is None


async def test_an_l1_copy_keeps_the_remaining_ttl_of_its_l2_original(
    cache: MultiLevelCache, clock: VirtualClock, l2: CountingCache
) -> None:
    await l2.set("k", "v", ttl=3)
    await clock.advance(1)
    assert await cache.get("k") == "v"
    await clock.advance(2.5)
    assert await cache.get("k") is None


async def test_a_write_during_a_load_wins(cache: MultiLevelCache) -> None:
    load = Loader("loaded", gated=True)
    caller = asyncio.create_task(cache.get_or_load("k", load))
    await load.started.wait()
    await cache.set("k", "written")
    load.gate.set()
    async with asyncio.timeout(_HANG_GUARD):
        await caller
    assert await cache.get("k") == "written"


async def test_close_cancels_loads_in_flight(clock: VirtualClock) -> None:
    cache = MultiLevelCache(clock=clock)
    load = Loader("never", gated=True)
    caller = asyncio.create_task(cache.get_or_load("k", load))
    await load.started.wait()
    await cache.aclose()
    with pytest.raises(asyncio.CancelledError):
        await caller


# -- time ------------------------------------------------------------------------------------


async def test_a_loaded_value_expires_after_its_ttl(
    cache: MultiLevelCache, clock: VirtualClock
) -> None:
    load = Loader("v")
    await cache.get_or_load("k", load, ttl=60)
    await clock.advance(59)
    await cache.get_or_load("k", load, ttl=60)
    assert load.calls == 1
    await clock.advance(2)
    await cache.get_or_load("k", load, ttl=60)
    assert load.calls == 2


async def test_l1_copies_live_at_most_l1_ttl(
    cache: MultiLevelCache, clock: VirtualClock, l2: CountingCache
) -> None:
    await cache.set("k", "v1", ttl=3600)
    await l2.set("k", "v2 (another process)", ttl=3600)
    await clock.advance(9)
    assert await cache.get("k") == "v1"
    await clock.advance(2)
    assert await cache.get("k") == "v2 (another process)"


# -- L2 degradation --------------------------------------------------------------------------


async def test_redis_down_serves_from_l1_and_the_loader_and_counts_failures() -> None:
    clock = VirtualClock()
    l2 = RedisCache(f"redis://127.0.0.1:{closed_port()}/0")
    async with MultiLevelCache(MemoryCache(clock=clock), l2, clock=clock) as cache:
        load = Loader("from the source")
        assert await cache.get_or_load("a", load) == "from the source"
        assert cache.l2_degraded
        assert cache.stats.l2_errors == 1
        assert isinstance(cache.last_l2_error, CacheUnavailable)
        # while degraded, L2 is left out: no more connection attempts
        assert await cache.get_or_load("a", load) == "from the source"  # L1 still serves
        assert await cache.get_or_load("b", load) == "from the source"
        assert await cache.get("c") is None
        assert await cache.get_many(["a", "c"]) == {"a": "from the source"}
        assert cache.stats.l2_errors == 1
        assert cache.stats.l2_skipped >= 3
        assert load.calls == 2
        # writes apply to L1, then tell the caller the shared level missed them
        with pytest.raises(CacheUnavailable):
            await cache.set("d", 1)
        assert await cache.l1.get("d") == 1
        with pytest.raises(CacheUnavailable):
            await cache.delete("a")
        assert await cache.l1.get("a") is None
        with pytest.raises(CacheUnavailable):
            await cache.ping()
        # after the back-off, L2 is tried again (and still fails, quietly)
        await clock.advance(cache.l2_retry_after)
        assert await cache.get_or_load("e", load) == "from the source"
        assert cache.stats.l2_errors == 2


async def test_l2_recovers_after_the_back_off(
    cache: MultiLevelCache, clock: VirtualClock, l2: CountingCache
) -> None:
    l2.down = True
    assert await cache.get_or_load("k", Loader("v")) == "v"
    assert cache.l2_degraded
    l2.down = False
    await clock.advance(cache.l2_retry_after)
    assert await cache.get_or_load("other", Loader("w")) == "w"
    assert not cache.l2_degraded
    assert await l2.get("other") == "w"


async def test_without_l2_it_is_a_read_through_l1(clock: VirtualClock) -> None:
    async with MultiLevelCache(clock=clock) as cache:
        load = Loader("v")
        assert await cache.get_or_load("k", load) == "v"
        assert await cache.get_or_load("k", load) == "v"
        await cache.set("x", 1)
        assert await cache.delete("x")
        assert await cache.clear() == 1
        await cache.ping()
        assert load.calls == 1


# -- the levels together against a model -----------------------------------------------------

_KEYS = st.sampled_from(["a", "b", "c", "ab"])
_TTLS = st.sampled_from([None, 1.0, 3.0])


class MultiLevelMachine(RuleBasedStateMachine):
    """A tiny L1 (2 entries) over an L2 must behave as one TTL map, loads included.

    ``l1_ttl`` is shorter than the smallest time step, so L1 copies of L2 hits never
    outlive what they copied (the staleness ``l1_ttl`` allows is tested separately).
    """

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = VirtualClock()
        self.cache = MultiLevelCache(
            MemoryCache(2, clock=self.clock),
            MemoryCache(100, clock=self.clock),
            l1_ttl=0.25,
            clock=self.clock,
        )
        self.now = 0.0
        self.model: dict[str, tuple[int, float]] = {}
        self.counter = 0

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(coro)

    def live(self, key: str) -> int | None:
        entry = self.model.get(key)
        return entry[0] if entry and entry[1] > self.now else None

    def store(self, key: str, ttl: float | None) -> int:
        self.counter += 1
        self.model[key] = (self.counter, self.now + ttl if ttl else float("inf"))
        return self.counter

    @rule(key=_KEYS, ttl=_TTLS)
    def set(self, key: str, ttl: float | None) -> None:
        self.run(self.cache.set(key, self.store(key, ttl), ttl=ttl))

    @rule(key=_KEYS, ttl=_TTLS)
    def get_or_load(self, key: str, ttl: float | None) -> None:
        expected = self.live(key)
        fresh = self.counter + 1

        async def load() -> int:
            return fresh

        got = self.run(self.cache.get_or_load(key, load, ttl=ttl))
        if expected is None:
            assert got == self.store(key, ttl)
        else:
            assert got == expected

    @rule(keys=st.lists(_KEYS, max_size=3))
    def get_many(self, keys: list[str]) -> None:
        expected = {k: v for k in keys if (v := self.live(k)) is not None}
        assert self.run(self.cache.get_many(keys)) == expected

    @rule(key=_KEYS)
    def delete(self, key: str) -> None:
        assert self.run(self.cache.delete(key)) == (self.live(key) is not None)
        self.model.pop(key, None)

    @rule(prefix=st.sampled_from(["", "a"]))
    def clear(self, prefix: str) -> None:
        doomed = [k for k in self.model if k.startswith(prefix)]
        expected = sum(self.live(k) is not None for k in doomed)
        assert self.run(self.cache.clear(prefix)) == expected
        for key in doomed:
            del self.model[key]

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0]))
    def advance(self, seconds: float) -> None:
        self.run(self.clock.advance(seconds))
        self.now += seconds

    def teardown(self) -> None:
        self.run(self.cache.aclose())
        self.loop.close()


def test_multilevel_against_a_model() -> None:
    run_state_machine_as_test(
        MultiLevelMachine,
        settings=settings(
            max_examples=100,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
