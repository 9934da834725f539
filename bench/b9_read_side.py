"""B9 read side: listing from read models instead of folding streams.

Fills a fresh SQLite store with workflow instances (started + step + completed/failed),
dead letters and one work item with 200 timeline entries, all through the store's own commit
path; then measures:

* the projections' catch-up rate (events folded per second) beside the raw insert rate of
  the same events (the limit: what writing them cost);
* ``workflows list`` first page filtered by status, from the read model (p50/p99), and the
  old way (folding every stream) once, for comparison;
* the dead-letter count health and metrics read (p50/p99), exact, and the old fold once;
* a 200-entry work-item timeline (p50/p99).

    .venv/bin/python bench/b9_read_side.py --instances 100000 --letters 10000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from contexten.bus.dead_letters import DEAD_LETTER_STREAM_PREFIX, PARKED, DeadLetterQueue
from contexten.events.envelope import Event
from contexten.projections import Projections, create_read_models
from contexten.projections.read_side import ReadSide, builtin_projections
from contexten.store import Append, create_store
from contexten.store.base import EventStore, StreamState
from contexten.workflows.admin import list_workflows as fold_workflows
from contexten.workflows.history import history_event, stream_name


def _instance(i: int) -> Append:
    wf = f"bench:{i:07d}"
    events = [
        history_event("started", {"name": "bench", "version": "1", "kind": "function"}, wf),
        history_event("step_completed", {"seq": 1, "name": "work", "result": i}, wf),
    ]
    if i % 10 == 0:
        error = {"type": "ValueError", "message": "bad", "non_retryable": False}
        events.append(history_event("failed", {"error": error}, wf))
    else:
        events.append(history_event("completed", {"result": i}, wf))
    return Append(stream_name(wf), events, StreamState.NO_STREAM)


def _letter(i: int) -> Append:
    now = "2026-12-01T00:00:00+00:00"
    data = {
        "subscription": f"sub-{i % 7}",
        "event_id": f"e{i}",
        "position": i + 1,
        "event_type": "github.push",
        "error_type": "ValueError",
        "error_message": "nope",
        "attempts": 3,
        "first_failure_at": now,
        "last_failure_at": now,
    }
    parked = Event(type=PARKED, source="contexten", data=data)
    return Append(f"{DEAD_LETTER_STREAM_PREFIX}{i:07d}", [parked], StreamState.NO_STREAM)


async def _fill(store: EventStore, instances: int, letters: int) -> tuple[int, float]:
    started = time.perf_counter()
    appends = [_instance(i) for i in range(instances)] + [_letter(i) for i in range(letters)]
    appends.append(
        Append(
            "work-item",
            [
                Event(type="linear.issue.updated", source="linear", correlation_id="ENG-123")
                for _ in range(200)
            ],
        )
    )
    batch = 200
    await asyncio.gather(
        *(store.commit(appends[i : i + batch]) for i in range(0, len(appends), batch))
    )
    return await store.head(), time.perf_counter() - started


def _stats(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):.2f} ms / p99 {p99:.2f} ms"


async def _timed(fn: object, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return samples


async def main(instances: int, letters: int, runs: int, fold_sample: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'b7.db'}"
        async with create_store(url) as store:
            events, fill_seconds = await _fill(store, instances, letters)
            print(f"stored {events:,} events in {fill_seconds:.1f} s "
                  f"({events / fill_seconds:,.0f} events/s: the limit)")  # fmt: skip
            projections = Projections(store, create_read_models(store))
            for projection in builtin_projections():
                projections.add(projection)
            await projections.open()
            try:
                for name in projections.names:
                    started = time.perf_counter()
                    await projections.catch_up(name)
                    seconds = time.perf_counter() - started
                    print(f"catch-up {name:16} {events / seconds:>10,.0f} events/s "
                          f"({seconds:.1f} s)")  # fmt: skip
                read = ReadSide(projections)
                page = await _timed(lambda: read.workflows(status="failed", limit=50), runs)
                print(f"workflows list --status failed (first page of 50): {_stats(page)}")
                count = await _timed(read.open_dead_letters, runs)
                print(f"dead-letter count (exact: {await read.open_dead_letters():,}): "
                      f"{_stats(count)}")  # fmt: skip
                timeline = await _timed(lambda: read.timeline("ENG-123", limit=200), runs)
                entries = len((await read.timeline("ENG-123", limit=200)).items)
                print(f"work-item timeline ({entries} entries): {_stats(timeline)}")
                started = time.perf_counter()
                folded = await fold_workflows(store, "failed", limit=None)
                print(f"old way, fold every workflow stream: {time.perf_counter() - started:.2f} s "
                      f"({len(folded):,} failed)")  # fmt: skip
                started = time.perf_counter()
                parked = len(await DeadLetterQueue(store).list(limit=fold_sample))
                print(f"old way, fold {parked:,} dead letters (capped at {fold_sample:,}): "
                      f"{time.perf_counter() - started:.2f} s")  # fmt: skip
                rebuilt = time.perf_counter()
                await projections.rebuild("workflows")
                print(f"rebuild workflows from {events:,} events: "
                      f"{time.perf_counter() - rebuilt:.1f} s")  # fmt: skip
            finally:
                await projections.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--letters", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--fold-sample", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(main(args.instances, args.letters, args.runs, args.fold_sample))
