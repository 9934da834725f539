"""B13 retention: the store's size before and after ``contexten store prune``.

Fills a store through its own commit path, the way the ingress does (each webhook one
commit with its delivery's dedup key): ``--items`` work items of B12's realistic mix (a
GitHub and a Linear webhook of ~1.2 KB each, a three-event workflow history, one action,
a dead letter in twenty, its event left open). Then, with the clock moved 91 days on, prunes
with the default policy plus ``github.**`` and ``linear.**`` after 90 days, and measures the
size (SQLite: the file and its WAL; PostgreSQL: ``pg_total_relation_size`` of the store's
tables) before, after pruning, and after ``--vacuum`` (SQLite ``VACUUM``, PostgreSQL
``VACUUM FULL``), with how long each step took.

    .venv/bin/python bench/b13_retention.py --items 20000 --postgres
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from contexten.events.codec import decode_event
from contexten.observability.logging import configure_logging
from contexten.store import Append, create_store
from contexten.store.base import EventStore
from contexten.store.retention import Protected, PrunableStore, RetentionPolicy, prune

sys.path.insert(0, str(Path(__file__).parent))
from b12_projections import POSTGRES, drop_schema, unit

POLICY = RetentionPolicy.build({"github.**": "90d", "linear.**": "90d"})


async def fill(store: EventStore, items: int) -> int:
    async def one(n: int) -> None:
        for stream, _kind, body in unit(n):
            event = decode_event(body)
            key = f"{event.source}:{event.delivery_id}" if event.delivery_id else None
            await store.commit([Append(stream, [event])], dedup_key=key)

    for at in range(0, items, 200):
        await asyncio.gather(*(one(n) for n in range(at, min(items, at + 200))))
    return await store.head()


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1_048_576:8.1f} MiB"


async def run(url: str, label: str, items: int) -> None:
    async with create_store(url) as store:
        assert isinstance(store, PrunableStore)
        started = time.perf_counter()
        events = await fill(store, items)
        print(f"\n{label}: {events:,} events, {items * 2:,} dedup keys, filled in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        later = datetime.now(UTC) + timedelta(days=91)
        open_letters = frozenset(f"github-acme/app#{n}" for n in range(0, items, 20))

        async def protected() -> Protected:
            return Protected(streams=open_letters)

        started = time.perf_counter()
        report = await prune(store, POLICY, protected=protected, dry_run=False, now=later)
        pruned = time.perf_counter() - started
        print(f"  prune: {report.dedup_keys:,} dedup keys, data of {report.pruned_events:,} "
              f"events ({report.data_bytes / 1_048_576:.1f} MiB), {report.protected:,} kept "
              f"for open dead letters, in {pruned:.1f} s")  # fmt: skip
        started = time.perf_counter()
        await store.reclaim_space()
        vacuumed = time.perf_counter() - started
        final = await store.storage_bytes()
        print(f"  size before          {_mib(report.size_before)}")
        print(f"  after pruning        {_mib(report.size_after)}  (freed space reused inside)")
        print(f"  after vacuum         {_mib(final)}  ({vacuumed:.1f} s)")
        if report.size_before:
            print(f"  kept                 {final / report.size_before:8.1%} of the size")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    print(f"B13 on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="b13-") as d:
        await run(f"sqlite:///{Path(d) / 'b13.db'}", "SQLite", args.items)
    if args.postgres:
        schema = f"b13_{uuid.uuid4().hex[:8]}"
        try:
            await run(f"{POSTGRES}?schema={schema}", "PostgreSQL", args.items)
        finally:
            await drop_schema(POSTGRES, schema)


if __name__ == "__main__":
    configure_logging(level="WARNING")
    asyncio.run(main())
