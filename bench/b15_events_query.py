"""B15 events query: filtered, position-paginated event listings on a large log.

Fills a fresh store (SQLite file, or a throwaway PostgreSQL schema) with ``--events`` events
through the store's own commit path: 40 types over 4 platforms, 20,000 work items
(correlation ids), 100,000 subjects, one event in 100 caused by an earlier one. Then:

* folds the ``events`` read model (the index the filters read) and reports its catch-up
  rate beside the raw insert rate of the same events (the limit: what writing them cost);
* times the first page (50 events, newest first) of each filter, p50/p99 over ``--runs``,
  through :func:`contexten.projections.event_search.search_events` with the index, and once
  without it (the log scanned entry by entry within the 5,000-entry budget, which is what
  the events API and the dashboard did before: for a rare filter that answer is incomplete);
* the floor: the newest 50 events unfiltered, straight from the store (one ``read_all_backwards``).

    .venv/bin/python bench/b15_events_query.py --events 1000000
    .venv/bin/python bench/b15_events_query.py --events 1000000 --postgres postgresql://127.0.0.1/test
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from contexten.events.envelope import Event
from contexten.projections import Projections, create_read_models
from contexten.projections.event_search import EventQuery, EventSlice, search_events
from contexten.projections.events import EventsProjection
from contexten.store import Append, create_store
from contexten.store.base import EventStore

PLATFORMS = ("github", "linear", "slack", "codegen")
RESOURCES = ("pull_request", "issue", "comment", "push", "agent_run")
ACTIONS = ("opened", "closed")


def _events(n: int, seed: int = 11) -> list[tuple[str, Event]]:
    rng = random.Random(seed)
    out: list[tuple[str, Event]] = []
    ids: list[str] = []
    for i in range(n):
        platform = PLATFORMS[i % 4]
        kind = f"{platform}.{rng.choice(RESOURCES)}.{rng.choice(ACTIONS)}"
        cause = ids[rng.randrange(len(ids))] if ids and i % 100 == 0 else None
        event = Event(
            type=kind,
            source=platform,
            subject=f"s-{rng.randrange(100_000)}",
            correlation_id=f"ENG-{rng.randrange(20_000)}",
            causation_id=cause,
            data={"i": i},
        )
        if i % 997 == 0:
            ids.append(event.id)
        out.append((f"{platform}-{i % 500}", event))
    return out


async def _fill(store: EventStore, events: list[tuple[str, Event]]) -> float:
    started = time.perf_counter()
    batch = 1000
    for at in range(0, len(events), batch * 8):
        commits = []
        for start in range(at, min(at + batch * 8, len(events)), batch):
            chunk = events[start : start + batch]
            by_stream: dict[str, list[Event]] = {}
            for stream, event in chunk:
                by_stream.setdefault(stream, []).append(event)
            commits.append(store.commit([Append(s, e) for s, e in by_stream.items()]))
        await asyncio.gather(*commits)
    return len(events) / (time.perf_counter() - started)


async def _timed(
    fn: Callable[[], Awaitable[EventSlice | object]], runs: int
) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


async def run(url: str, n: int, runs: int) -> None:
    print(f"store: {url.split('?')[0]}  events: {n:,}")
    events = _events(n)
    async with create_store(url) as store:
        rate = await _fill(store, events)
        print(f"raw insert rate: {rate:,.0f} events/s")
        projections = Projections(store, create_read_models(store), batch_size=2000)
        projections.add(EventsProjection())
        await projections.open()
        try:
            t = time.perf_counter()
            await projections.catch_up("events")
            fold = n / (time.perf_counter() - t)
            print(f"events read model catch-up: {fold:,.0f} events/s ({fold / rate:.0%} of insert)")
            if url.startswith("postgres"):
                # Planner statistics, as autovacuum (or a rebuild's swap) leaves them in a
                # running system; a table queried before any ANALYZE gets bitmap scans.
                conn = await asyncpg.connect(url.split("?")[0])
                try:
                    schema = url.split("schema=")[1]
                    await conn.execute(f'ANALYZE "{schema}".rm_event_index')
                finally:
                    await conn.close()
            middle = (await store.read_all(after=n // 2, limit=1))[0]
            cause = next(e for _, e in events if e.causation_id is not None).causation_id
            queries = {
                "no filter": EventQuery(),
                "type exact (1 of 40)": EventQuery(type="linear.issue.closed"),
                "type pattern github.pull_request.*": EventQuery(type="github.pull_request.*"),
                "type pattern *.*.opened (20 types)": EventQuery(type="*.*.opened"),
                "correlation_id (1 of 20,000)": EventQuery(correlation_id="ENG-4242"),
                "subject (1 of 100,000)": EventQuery(subject="s-777"),
                "source + type pattern": EventQuery(source="slack", type="slack.comment.*"),
                "causation_id": EventQuery(causation_id=cause),
                "as_of the middle, type exact": EventQuery(
                    as_of=middle.recorded_at, type="codegen.agent_run.opened"
                ),
            }
            print("| filter | with the index p50 / p99 (found) | log scan, 5,000 budget (found) |")
            print("|---|---|---|")
            floor = await _timed(lambda: store.read_all_backwards(limit=50), runs)
            for name, query in queries.items():
                page = await search_events(store, query, projections=projections, limit=50)

                def indexed(q: EventQuery = query) -> Awaitable[EventSlice]:
                    return search_events(store, q, projections=projections, limit=50)

                p50, p99 = await _timed(indexed, runs)
                t = time.perf_counter()
                scan = await search_events(store, query, limit=50)
                scan_ms = (time.perf_counter() - t) * 1000
                print(
                    f"| {name} | {p50:.1f} / {p99:.1f} ms ({len(page.events)}) "
                    f"| {scan_ms:.1f} ms ({len(scan.events)}) |"
                )
            print(f"| floor: newest 50, store only | {floor[0]:.1f} / {floor[1]:.1f} ms | |")
        finally:
            await projections.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL URL (default: SQLite)")
    args = parser.parse_args()
    if args.postgres:
        schema = f"bench_events_{uuid.uuid4().hex[:8]}"
        try:
            await run(f"{args.postgres}?schema={schema}", args.events, args.runs)
        finally:
            conn = await asyncpg.connect(args.postgres)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            await run(f"sqlite:///{Path(tmp) / 'events.db'}", args.events, args.runs)


if __name__ == "__main__":
    asyncio.run(main())
