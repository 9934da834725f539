"""B4 waiting: 10,000 workflows parked on ``wf.wait_for`` at once, on SQLite.

Measures, in one process:

* resident memory per waiting workflow: RSS after all instances are parked minus RSS before
  they were started, divided by their number (everything the engine keeps per instance: its
  task, coroutine frames, context, folded state, the parked wait);
* recovery after a restart: the engine is stopped and the store closed, as if the process
  died; a new store and engine start, and the clock runs until every instance is parked on its
  wait again (read from the store, replayed, wait re-registered);
* completion: one matching event per instance is appended, and the clock runs until every
  instance has completed.

Run: ``.venv/bin/python bench/b4_waiting.py [--workflows 10000]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from contexten.events import Event
from contexten.store.sqlite import SqliteEventStore
from contexten.workflows import WorkflowEngine


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


async def waiter(wf: Any, key: str) -> str:
    event = await wf.wait_for("b4.go", correlation_id=key)
    return str(event.data["n"])


def engine_on(store: SqliteEventStore) -> WorkflowEngine:
    engine = WorkflowEngine(store)
    engine.register(waiter, name="waiter")
    return engine


async def until_parked(engine: WorkflowEngine, n: int) -> None:
    """Poll until ``n`` waits are parked in the engine's wait index."""
    for _ in range(100_000):
        if engine.waits.waiting >= n:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"only {engine.waits.waiting} of {n} workflows parked")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workflows", type=int, default=10_000)
    args = parser.parse_args()
    n = args.workflows
    with tempfile.TemporaryDirectory(prefix="b4-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'events.db'}"
        store = SqliteEventStore(url)
        await store.open()
        engine = engine_on(store)
        await engine.start()
        gc.collect()
        before = rss_bytes()
        t0 = time.perf_counter()
        for start in range(0, n, 500):
            await asyncio.gather(
                *(
                    engine.start_workflow("waiter", f"k{i}", f"w{i}")
                    for i in range(start, min(start + 500, n))
                )
            )
        await until_parked(engine, n)
        started = time.perf_counter() - t0
        gc.collect()
        after = rss_bytes()
        await engine.stop()
        await store.close()

        store = SqliteEventStore(url)
        await store.open()
        engine = engine_on(store)
        t1 = time.perf_counter()
        await engine.start()
        await until_parked(engine, n)
        resumed = time.perf_counter() - t1

        t2 = time.perf_counter()
        for start in range(0, n, 500):
            await asyncio.gather(
                *(
                    store.append("b4", [Event(type="b4.go", correlation_id=f"k{i}", data={"n": i})])
                    for i in range(start, min(start + 500, n))
                )
            )
        handles = [engine.get_handle(f"w{i}") for i in range(n)]
        results = await asyncio.gather(*(h.result() for h in handles))
        completed = time.perf_counter() - t2
        assert results == [str(i) for i in range(n)]
        await engine.stop()
        await store.close()

    per = (after - before) / n
    print(f"B4: {n} workflows waiting on wait_for, SQLite store\n")
    print(f"{'measure':52} {'value':>12} {'target':>10}")
    print("-" * 76)
    print(f"{'RSS per waiting workflow':52} {per / 1024:9.1f} KB {'< 10 KB':>10}")
    print(f"{'start all and park them (s)':52} {started:12.2f}")
    print(f"{'restart: resume all until parked again (s)':52} {resumed:12.2f} {'< 5 s':>10}")
    print(f"{'then: deliver one event each, until all completed (s)':52} {completed:12.2f}")


if __name__ == "__main__":
    asyncio.run(main())
