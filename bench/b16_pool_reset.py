"""B16 pool reset: what asyncpg's per-release session reset costs the PostgreSQL store's pool.

Side by side in one run, on the same server, N rounds of acquire / ``SELECT 1`` / release,
sequential and from ``--tasks`` concurrent tasks:

* ``asyncpg default``: the pool's default release (``Connection.reset()``: ``SELECT
  pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``, a round trip per release);
* ``store (keep session)``: the reset the store's pool uses
  (``contexten.store.postgres._keep_session``: only the rollback of an open transaction
  asyncpg always does);
* the limit: the same statements on one connection held throughout (no pool at all).

Reports wall time and this process's CPU time per round (client CPU is what a worker pays;
the server's is saved too). Rounds alternate between the variants (``--repeat`` times) so a
loaded machine's drift hits them alike; the best of each is shown.

Run: ``.venv/bin/python bench/b16_pool_reset.py [--rounds 10000] [--tasks 10] [--repeat 3]
[--postgres postgresql://postgres@127.0.0.1:5432/test]``
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from contexten.store.postgres import _keep_session

Variant = Callable[[int, int], Awaitable[tuple[float, float]]]


async def _pool_rounds(url: str, reset: Any, rounds: int, tasks: int) -> tuple[float, float]:
    options: dict[str, Any] = {} if reset is None else {"reset": reset}
    pool = await asyncpg.create_pool(url, min_size=tasks, max_size=tasks, **options)
    try:
        per_task = rounds // tasks

        async def run() -> None:
            for _ in range(per_task):
                async with pool.acquire() as conn:
                    await conn.execute("SELECT 1")

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(run() for _ in range(tasks)))
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await pool.close()


async def _held(url: str, rounds: int, tasks: int) -> tuple[float, float]:
    conns = [await asyncpg.connect(url) for _ in range(tasks)]
    try:
        per_task = rounds // tasks

        async def run(conn: asyncpg.Connection) -> None:
            for _ in range(per_task):
                await conn.execute("SELECT 1")

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(run(c) for c in conns))
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        for c in conns:
            await c.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    url = args.postgres
    variants: dict[str, Variant] = {
        "asyncpg default": lambda n, t: _pool_rounds(url, None, n, t),
        "store (keep session)": lambda n, t: _pool_rounds(url, _keep_session, n, t),
        "limit: connection held": lambda n, t: _held(url, n, t),
    }
    print(f"{args.rounds:,} rounds of acquire / SELECT 1 / release, best of {args.repeat}")
    print(f"{'variant':<24} {'tasks':>5} {'rounds/s':>10} {'µs CPU/round':>13} {'vs default':>10}")
    for tasks in (1, args.tasks):
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeat):
            for name, run in variants.items():
                wall, cpu = await run(args.rounds, tasks)
                old = best.get(name)
                best[name] = (min(wall, old[0]), min(cpu, old[1])) if old else (wall, cpu)
        base = args.rounds / best["asyncpg default"][0]
        for name, (wall, cpu) in best.items():
            rate = args.rounds / wall
            print(
                f"{name:<24} {tasks:>5} {rate:>10,.0f} {cpu / args.rounds * 1e6:>13.1f} "
                f"{rate / base:>9.0%}"
            )


if __name__ == "__main__":
    asyncio.run(main())
