"""Cache: operations per second of each level, beside the raw engine under it, in one run.

Measured (a ~300-byte JSON-like value, keys cycling over ``--keys``):

* ``dict``: a plain dict get/set, the floor for an in-process level;
* ``MemoryCache``: the L1 (LRU + TTL on the clock), awaited;
* ``redis-py``: bare ``redis.asyncio`` GET/SET of the pre-encoded value, the floor for L2;
* ``RedisCache``: the L2 (namespace prefix, msgpack encoding, error translation);
* ``MultiLevel``: ``get_or_load`` answered by L1; by L2 (the L1 copy was just evicted);
  and a full miss (loader, then written to L2 and L1).

Redis rows run sequentially (one command in flight: round-trip bound) and with
``--concurrency`` callers at once (throughput bound). Redis: ``--redis-url`` (default
``redis://127.0.0.1:6379/15``); keys live under a unique prefix that is deleted afterwards.

Run: ``.venv/bin/python bench/cache.py [--ops 20000] [--concurrency 50]``
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from contexten.cache import MemoryCache, MultiLevelCache
from contexten.cache.redis import RedisCache

VALUE: dict[str, Any] = {
    "login": "octocat",
    "id": 583231,
    "type": "User",
    "site_admin": False,
    "url": "https://api.github.com/users/octocat",
    "name": "The Octocat",
    "company": "@github",
    "public_repos": 8,
    "followers": 9001,
    "labels": [{"id": 208045946, "name": "bug", "color": "f29513"}],
}

Row = tuple[str, str, int, float]  # (level, operation, ops, seconds)


def timed_sync(ops: int, body: Callable[[int], object]) -> float:
    start = time.perf_counter()
    for i in range(ops):
        body(i)
    return time.perf_counter() - start


async def timed(ops: int, body: Callable[[int], Awaitable[object]], concurrency: int = 1) -> float:
    """Seconds to run ``body(i)`` for i < ops, with ``concurrency`` callers at once."""

    async def worker(start: int) -> None:
        for i in range(start, ops, concurrency):
            await body(i)

    begin = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return time.perf_counter() - begin


async def in_process(ops: int, keys: int) -> list[Row]:
    names = [f"k{i}" for i in range(keys)]
    plain: dict[str, Any] = {}
    memory = MemoryCache(keys * 2)
    for name in names:
        plain[name] = VALUE
        await memory.set(name, VALUE)
    return [
        ("dict", "set", ops, timed_sync(ops, lambda i: plain.__setitem__(names[i % keys], VALUE))),
        ("dict", "get", ops, timed_sync(ops, lambda i: plain.get(names[i % keys]))),
        ("MemoryCache", "set", ops, await timed(ops, lambda i: memory.set(names[i % keys], VALUE))),
        ("MemoryCache", "get", ops, await timed(ops, lambda i: memory.get(names[i % keys]))),
    ]


async def shared(url: str, ops: int, keys: int, concurrency: int) -> list[Row]:
    prefix = f"bench-{uuid.uuid4().hex}"
    raw = aioredis.Redis.from_url(url, max_connections=concurrency + 10)
    l2 = RedisCache(url, namespace=prefix, max_connections=concurrency + 10)
    rows: list[Row] = []
    try:
        encoded = msgspec.msgpack.encode(VALUE)
        raw_names = [f"{prefix}:raw:{i}" for i in range(keys)]
        names = [f"l2:{i}" for i in range(keys)]
        for c, label in ((1, "sequential"), (concurrency, f"{concurrency} concurrent")):
            rows += [
                (
                    "redis-py",
                    f"SET, {label}",
                    ops,
                    await timed(ops, lambda i: raw.set(raw_names[i % keys], encoded), c),
                ),
                (
                    "redis-py",
                    f"GET, {label}",
                    ops,
                    await timed(ops, lambda i: raw.get(raw_names[i % keys]), c),
                ),
                (
                    "RedisCache",
                    f"set, {label}",
                    ops,
                    await timed(ops, lambda i: l2.set(names[i % keys], VALUE, ttl=300), c),
                ),
                (
                    "RedisCache",
                    f"get, {label}",
                    ops,
                    await timed(ops, lambda i: l2.get(names[i % keys]), c),
                ),
            ]
        rows += await multilevel(url, prefix, ops, keys, concurrency)
    finally:
        await l2.clear()
        await l2.aclose()
        await raw.aclose()
    return rows


async def multilevel(url: str, prefix: str, ops: int, keys: int, concurrency: int) -> list[Row]:
    async def load() -> dict[str, Any]:
        return VALUE

    l2 = RedisCache(url, namespace=f"{prefix}-ml", max_connections=concurrency + 10)
    hot = MultiLevelCache(MemoryCache(keys * 2), l2)
    cold = MultiLevelCache(MemoryCache(1), l2)  # every L1 copy is evicted by the next key
    names = [f"ml:{i}" for i in range(keys)]
    try:
        for name in names:
            await hot.get_or_load(name, load, ttl=300)
        miss_ops = max(ops // 4, 1)
        fresh = [f"miss:{i}" for i in range(miss_ops)]
        rows: list[Row] = [
            (
                "MultiLevel",
                "get_or_load, L1 hit",
                ops,
                await timed(ops, lambda i: hot.get_or_load(names[i % keys], load)),
            ),
            (
                "MultiLevel",
                "get_or_load, L2 hit",
                ops,
                await timed(ops, lambda i: cold.get_or_load(names[i % keys], load)),
            ),
            (
                "MultiLevel",
                "get_or_load, miss",
                miss_ops,
                await timed(miss_ops, lambda i: hot.get_or_load(fresh[i], load, ttl=300)),
            ),
            (
                "MultiLevel",
                f"get_or_load, L2 hit, {concurrency} concurrent",
                ops,
                await timed(ops, lambda i: cold.get_or_load(names[i % keys], load), concurrency),
            ),
        ]
        assert hot.stats.l2_errors == cold.stats.l2_errors == 0
        return rows
    finally:
        await l2.clear()
        await hot.aclose()  # closes the shared L2 too
        await cold.l1.aclose()


def table(rows: list[Row]) -> str:
    lines = [
        f"| {'level':<12} | {'operation':<38} | {'ops':>7} | {'ops/s':>11} | {'µs/op':>8} |",
        f"|{'-' * 14}|{'-' * 40}|{'-' * 9}|{'-' * 13}|{'-' * 10}|",
    ]
    for level, operation, ops, seconds in rows:
        lines.append(
            f"| {level:<12} | {operation:<38} | {ops:>7,} | {ops / seconds:>11,.0f} "
            f"| {seconds / ops * 1e6:>8.1f} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    rows = await in_process(args.ops * 10, args.keys)
    rows += await shared(args.redis_url, args.ops, args.keys, args.concurrency)
    print(table(rows))


if __name__ == "__main__":
    asyncio.run(main())
