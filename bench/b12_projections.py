"""B12 projections: catch-up and rebuild rates, /readyz at scale, and what runners and tracing
cost the hot paths.

Sections (``--only`` picks some; default all but ``rebuild``, which is long):

* ``catchup``: ``--events`` realistic events (webhooks from GitHub and Linear with work-item
  ids, our own actions, three-event workflow histories, one dead letter in twenty) written
  with raw multi-row inserts in 1,000-row transactions (SQLite ``synchronous=FULL``;
  PostgreSQL with ``--postgres``): that insert rate is the limit. Then each built-in
  projection catches up from zero: events folded per second, beside it.
  On PostgreSQL each catch-up also says how many statements (round trips) it sent per
  500-event batch, which the machine's load does not move.
* ``rebuild``: the same log, then each built-in projection rebuilt (shadow tables, swap).
* ``readyz``: an App on a store with ``--instances`` workflow instances and ``--letters``
  dead letters (read models caught up): ``GET /readyz`` through the whole ASGI stack, p50 /
  p99 over ``--runs``; and a work item's 200-entry timeline.
* ``runners``: B1 (publish -> one trivial handler, SQLite FULL) and a B2-like run of
  three-step workflows through an App, each with the four built-in projection runners on
  and off, alternating (off, on, off, on) in one process.
* ``tracing``: B1 with tracing off and on (OpenTelemetry SDK, sampled 100%, batch span
  processor into an exporter that drops the spans), alternating; with ``--tracing-before
  REF`` also on with the tracing module as it was at git ``REF``.

    .venv/bin/python bench/b12_projections.py --only catchup --events 200000 --postgres
    .venv/bin/python bench/b12_projections.py --only rebuild --events 1000000 --postgres
    .venv/bin/python bench/b12_projections.py --only readyz,runners,tracing
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from contexten import App, Event
from contexten.bus.dead_letters import DEAD_LETTER_STREAM_PREFIX, PARKED
from contexten.events.codec import encode_event
from contexten.observability.logging import configure_logging
from contexten.projections import Projections, create_read_models
from contexten.projections.read_side import builtin_projections
from contexten.store import create_store
from contexten.store.base import EventStore
from contexten.workflows.history import history_event, stream_name

sys.path.insert(0, str(Path(__file__).parent))
from b1_dispatch import PUBLISHERS, fan_out, tick

Row = tuple[str, str, bytes]  # stream, type, body (positions and versions added on insert)
POSTGRES = os.environ.get("CONTEXTEN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test")


# -- a realistic log ----------------------------------------------------------------------------


def _webhook(n: int, kind: str, source: str) -> Event:
    return Event(
        type=kind,
        source=source,
        subject=f"acme/app#{n}",
        correlation_id=f"ENG-{n}",
        delivery_id=str(uuid.UUID(int=n)),
        data={
            "action": kind.rsplit(".", 1)[-1],
            "number": n,
            "title": f"Work item {n}: make the thing better",
            "body": "A description of the change, as a person would write it. " * 12,
            "user": {"login": "octocat", "id": 583231, "type": "User"},
            "repository": {"full_name": "acme/app", "private": True, "default_branch": "main"},
            "labels": [{"name": "agent"}, {"name": "backend"}],
        },
    )


def unit(n: int) -> Iterator[Row]:
    """The events of one work item: two webhooks, a workflow, an action, sometimes a letter."""
    pr = _webhook(n, "github.pull_request.opened", "github")
    yield f"github-acme/app#{n}", pr.type, encode_event(pr)
    issue = _webhook(n, "linear.issue.updated", "linear")
    yield f"linear-ENG-{n}", issue.type, encode_event(issue)
    wf = f"review:ENG-{n}"
    started = history_event(
        "started",
        {"name": "review", "version": "1", "kind": "function", "input_is_event": True,
         "input": {"correlation_id": f"ENG-{n}", "type": pr.type}},
        wf,
    )  # fmt: skip
    step = history_event("step_completed", {"seq": 1, "name": "comment", "result": n}, wf)
    done = history_event("completed", {"result": {"ok": True}}, wf)
    for e in (started, step, done):
        yield stream_name(wf), e.type, encode_event(e)
    action = Event(
        type="contexten.action.github.comment_created",
        source="contexten",
        subject=f"acme/app#{n}",
        correlation_id=f"ENG-{n}",
        causation_id=pr.id,
        data={"platform": "github", "status": 201, "id": n},
    )
    yield f"actions-github-{n % 64}", action.type, encode_event(action)
    if n % 20 == 0:
        now = "2026-12-01T00:00:00+00:00"
        parked = Event(
            type=PARKED,
            source="contexten",
            subject="notify",
            correlation_id=f"ENG-{n}",
            causation_id=pr.id,
            data={"subscription": "notify", "event_id": pr.id, "position": 1,
                  "event_type": pr.type, "error_type": "ValueError", "error_message": "nope",
                  "attempts": 3, "first_failure_at": now, "last_failure_at": now},
        )  # fmt: skip
        yield f"{DEAD_LETTER_STREAM_PREFIX}{uuid.UUID(int=n)}", parked.type, encode_event(parked)


def rows(events: int) -> list[Row]:
    out: list[Row] = []
    n = 0
    while len(out) < events:
        out.extend(unit(n))
        n += 1
    return out[:events]


def _numbered(batch: Sequence[Row], head: int, versions: dict[str, int]) -> list[tuple[Any, ...]]:
    out = []
    for i, (stream, kind, body) in enumerate(batch, head + 1):
        versions[stream] = versions.get(stream, 0) + 1
        out.append((i, stream, versions[stream], str(uuid.uuid4()), kind, body))
    return out


def sqlite_insert(path: str, log: list[Row]) -> float:
    """Raw multi-row inserts, 1,000 rows a transaction, FULL sync: events/s (the limit)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    versions: dict[str, int] = {}
    start = time.perf_counter()
    micros = int(time.time() * 1e6)
    for at in range(0, len(log), 1000):
        numbered = _numbered(log[at : at + 1000], at, versions)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO events (position, stream, version, event_id, type, recorded_at, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(p, s, v, i, t, micros, b) for p, s, v, i, t, b in numbered],
        )
        conn.executemany(
            "INSERT INTO streams (name, version) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET version = excluded.version",
            list({s: v for _, s, v, _, _, _ in numbered}.items()),
        )
        conn.execute("COMMIT")
    seconds = time.perf_counter() - start
    conn.close()
    return len(log) / seconds


async def postgres_insert(url: str, schema: str, log: list[Row]) -> float:
    """Raw multi-row inserts (unnest), 1,000 rows a transaction: events/s (the limit)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    versions: dict[str, int] = {}
    now = datetime.now(UTC)
    start = time.perf_counter()
    s = f'"{schema}"'
    try:
        for at in range(0, len(log), 1000):
            numbered = _numbered(log[at : at + 1000], at, versions)
            cols = list(zip(*numbered, strict=True))
            last = {st: v for _, st, v, _, _, _ in numbered}
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO {s}.events (position, stream, version, event_id, type, "
                    "recorded_at, body) SELECT p, st, v, i, t, $6, b FROM unnest($1::bigint[], "
                    "$2::text[], $3::bigint[], $4::text[], $5::text[], $7::bytea[]) "
                    "AS u(p, st, v, i, t, b)",
                    *cols[:5],
                    now,
                    cols[5],
                )
                await conn.execute(
                    f"INSERT INTO {s}.streams (name, version) SELECT * FROM "
                    "unnest($1::text[], $2::bigint[]) ON CONFLICT (name) DO UPDATE "
                    "SET version = excluded.version",
                    list(last),
                    list(last.values()),
                )
                await conn.execute(
                    f"UPDATE {s}.log_head SET position = $1, recorded_at = $2",
                    at + len(numbered),
                    now,
                )
        return len(log) / (time.perf_counter() - start)
    finally:
        await conn.close()


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def seeded(backend: str, events: int, tmp: Path) -> tuple[str, float, Callable[[], Any]]:
    """A store URL holding ``events`` realistic events, the raw insert rate, and a cleanup."""
    log = rows(events)
    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'b12.db'}"
        async with create_store(url):
            pass  # creates the schema
        rate = await asyncio.to_thread(sqlite_insert, str(tmp / "b12.db"), log)
        return url, rate, lambda: None
    schema = f"b12_{uuid.uuid4().hex[:8]}"
    url = f"{POSTGRES}?schema={schema}"
    async with create_store(url):
        pass
    rate = await postgres_insert(POSTGRES, schema, log)
    return url, rate, lambda: drop_schema(POSTGRES, schema)


_STATEMENTS = [0]
"""Statements sent to PostgreSQL (each a round trip; an ``executemany`` counts once)."""


def count_statements() -> None:
    """Count every statement asyncpg sends (idempotent): a load-independent measure of the
    round trips a fold makes, beside its rate (which a loaded machine moves a lot)."""
    import asyncpg.connection

    conn = asyncpg.connection.Connection
    if getattr(conn, "_b12_counted", False):
        return
    for attr in ("_do_execute", "_executemany"):
        original = getattr(conn, attr)

        def counted(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            _STATEMENTS[0] += 1
            return _original(self, *args, **kwargs)

        setattr(conn, attr, counted)
    execute = conn.execute

    async def simple(self: Any, query: str, *args: Any, timeout: float | None = None) -> str:
        if not args:  # BEGIN, COMMIT and DDL go as simple queries
            _STATEMENTS[0] += 1
        return await execute(self, query, *args, timeout=timeout)

    conn.execute = simple  # type: ignore[method-assign]
    conn._b12_counted = True  # type: ignore[attr-defined]


def _registry(store: EventStore) -> Projections:
    registry = Projections(store, create_read_models(store))
    for projection in builtin_projections():
        registry.add(projection)
    return registry


async def catchup(backend: str, events: int, tmp: Path, rebuild: bool) -> None:
    if backend == "postgres":
        count_statements()
    url, limit, cleanup = await seeded(backend, events, tmp)
    try:
        print(f"\n{backend}: {events:,} events inserted raw at {limit:,.0f} events/s (the limit)")
        async with create_store(url) as store:
            registry = _registry(store)
            await registry.open()
            try:
                batches = events / 500  # the runner's default batch size
                for name in registry.names:
                    _STATEMENTS[0] = 0
                    started = time.perf_counter()
                    await registry.catch_up(name)
                    seconds = time.perf_counter() - started
                    sent = (f"  {_STATEMENTS[0] / batches:6.1f} statements a batch"
                            if backend == "postgres" else "")  # fmt: skip
                    print(f"  catch-up {name:16} {events / seconds:>9,.0f} events/s  "
                          f"{seconds:7.1f} s  ({events / seconds / limit:.1%} of the limit)"
                          f"{sent}", flush=True)  # fmt: skip
                if rebuild:
                    for name in registry.names:
                        started = time.perf_counter()
                        await registry.rebuild(name)
                        seconds = time.perf_counter() - started
                        print(f"  rebuild  {name:16} {seconds:7.1f} s  "
                              f"({events / seconds:,.0f} events/s)", flush=True)  # fmt: skip
            finally:
                await registry.close()
    finally:
        done = cleanup()
        if done is not None:
            await done


# -- /readyz and the timeline at scale ------------------------------------------------------------


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def readyz(instances: int, letters: int, runs: int, tmp: Path) -> None:
    from contexten.ingress import IngressConfig
    from contexten.ingress.server import create_server

    log: list[Row] = []
    for i in range(instances):
        wf = f"bench:{i:07d}"
        for kind, data in (("started", {"name": "bench", "version": "1", "kind": "function"}),
                           ("completed", {"result": i})):  # fmt: skip
            e = history_event(kind, data, wf)
            log.append((stream_name(wf), e.type, encode_event(e)))
    for i in range(letters):
        for _, kind, body in unit(i * 20):  # n % 20 == 0: every unit has its letter
            if kind == PARKED:
                log.append((f"{DEAD_LETTER_STREAM_PREFIX}{i:07d}", kind, body))
    for _ in range(200):
        e = Event(type="linear.issue.updated", source="linear", correlation_id="ENG-TIMELINE")
        log.append(("linear-ENG-TIMELINE", e.type, encode_event(e)))
    path = tmp / "readyz.db"
    async with create_store(f"sqlite:///{path}"):
        pass
    await asyncio.to_thread(sqlite_insert, str(path), log)
    app = App(f"sqlite:///{path}")
    server = create_server(app, IngressConfig())
    async with app:
        started = time.perf_counter()
        await app.projections.catch_up()
        print(f"\n/readyz: {instances:,} workflow instances, {letters:,} dead letters "
              f"({len(log):,} events; read models caught up in "
              f"{time.perf_counter() - started:.1f} s)")  # fmt: skip
        counts = await app.read.dead_letter_counts()
        assert sum(c.get("parked", 0) for c in counts.values()) == letters
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(server), base_url="http://127.0.0.1"
        ) as client:
            samples = []
            for _ in range(runs):
                t0 = time.perf_counter()
                answer = await client.get("/readyz")
                samples.append(time.perf_counter() - t0)
                assert answer.status_code == 200, answer.text
        print(f"  GET /readyz           p50 {_pct(samples, 0.5):6.2f} ms  "
              f"p99 {_pct(samples, 0.99):6.2f} ms  (target p99 < 20 ms)")  # fmt: skip
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            page = await app.read.timeline("ENG-TIMELINE", limit=200)
            samples.append(time.perf_counter() - t0)
        assert len(page.items) == 200
        print(f"  timeline, 200 entries p50 {_pct(samples, 0.5):6.2f} ms  "
              f"p99 {_pct(samples, 0.99):6.2f} ms  (target < 50 ms)")  # fmt: skip


# -- what the runners and tracing cost ------------------------------------------------------------


COMMITS: list[int] = []
"""Read-model commits of the last run (counted by :func:`counting`)."""


def counting(app: App) -> None:
    """Count the read-model transactions ``app``'s runners commit (into :data:`COMMITS`)."""
    models = app.projections.models
    commit = models.commit
    COMMITS.clear()
    COMMITS.append(0)

    async def counted(*args: Any, **kwargs: Any) -> None:
        COMMITS[0] += 1
        await commit(*args, **kwargs)

    models.commit = counted  # type: ignore[method-assign]


def commit_every_batch(app: App) -> None:
    """The runners as they were before batching: no linger, a commit per batch read."""
    counting(app)
    for name in app.projections.names:
        runner = app.projections.runner(name)
        runner.linger = 0.0
        runner.checkpoint_interval = 0.0


def lingering(app: App) -> None:
    """The runners batched, and waiting up to 50 ms to fill each batch."""
    counting(app)
    for name in app.projections.names:
        app.projections.runner(name).linger = 0.05


def without_projections(app: App) -> None:
    """Take the built-in projection runners out of ``app`` (the 'off' rows)."""
    app.projections = Projections(app.store, create_read_models(app.store))
    app.workflows.unfinished_index = None  # a fresh store: nothing to resume


async def b1(url: str, n: int, configure: Callable[[App], None] | None) -> float:
    app = App(store=url)
    if configure is not None:
        configure(app)
    seen = 0
    done = asyncio.Event()

    @app.on("bench.tick", name="bench")
    async def handler(event: Event, ctx: object) -> None:
        nonlocal seen
        seen += 1
        if seen == n:
            done.set()

    async with app:
        start = time.perf_counter()

        async def publish(i: int) -> None:
            await app.publish(tick(i))

        await fan_out(n, publish)
        await done.wait()
        return n / (time.perf_counter() - start)


async def add_one(x: int) -> int:
    return x + 1


async def b2(url: str, n: int, configure: Callable[[App], None] | None) -> float:
    app = App(store=url)
    if configure is not None:
        configure(app)

    @app.workflow("three")
    async def three(wf: Any, x: int) -> int:
        a = await wf.step(add_one, x)
        b = await wf.step(add_one, a)
        return int(await wf.step(add_one, b))

    async with app:
        counter = iter(range(n))

        async def client() -> None:
            for i in counter:
                handle = await app.start_workflow("three", i, workflow_id=f"wf-{i}")
                assert await handle.result() == i + 3

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(100)))
        return n / (time.perf_counter() - start)


async def alternate(
    label: str,
    run: Callable[[str, Callable[[App], None] | None], Awaitable[float]],
    modes: dict[str, Callable[[App], None] | None],
    rounds: int,
    tmp: Path,
    before: Callable[[str], None] = lambda mode: None,
) -> None:
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    commits: dict[str, list[int]] = {mode: [] for mode in modes}
    for r in range(rounds):
        for mode, configure in modes.items():
            before(mode)
            COMMITS[:] = [0]
            rates[mode].append(await run(f"sqlite:///{tmp / f'{label}-{mode}-{r}.db'}", configure))
            commits[mode].append(COMMITS[0])
    base = statistics.median(rates[next(iter(modes))])
    for mode, values in rates.items():
        med = statistics.median(values)
        runs = ", ".join(f"{v:,.0f}" for v in values)
        counted = f"  read-model commits {commits[mode]}" if any(commits[mode]) else ""
        print(f"  {label} {mode:34} median {med:>8,.0f}/s  ({med / base:.0%})  runs: {runs}"
              f"{counted}")  # fmt: skip


async def runners(events: int, workflows: int, rounds: int, tmp: Path) -> None:
    print(f"\nprojection runners on/off (SQLite FULL, {PUBLISHERS} publishers; {rounds} rounds):")
    modes = {
        "four runners on (batched)": counting,
        "four runners, a commit per batch": commit_every_batch,
        "four runners, batched + 50 ms linger": lingering,
        "projection runners off": without_projections,
    }
    await alternate("B1", lambda url, c: b1(url, events, c), modes, rounds, tmp)
    await alternate("B2", lambda url, c: b2(url, workflows, c), modes, rounds, tmp)


CHUNK = 500
"""Spans timed between flushes: the batch processor's queue (2,048) never fills and drops."""


def hook_cpu(flush: Callable[[], object], n: int = 20_000) -> tuple[float, float]:
    """CPU µs of B1's two span hooks alone, as the tracing module in the hooks now makes them:
    ``app.publish``'s (PRODUCER span + inject) and a delivery's (CONSUMER span + link)."""
    from contexten.observability import tracing

    parent = Event(type="bench.tick", source="b1")
    with tracing.publish_span(parent):
        parent = tracing.inject(parent)
    publishing = processing = 0.0
    for _ in range(n // CHUNK):
        fresh = [Event(type="bench.tick", source="b1") for _ in range(CHUNK)]
        started = time.process_time()
        for event in fresh:
            with tracing.publish_span(event):
                tracing.inject(event)
        published = time.process_time()
        for _ in range(CHUNK):
            with tracing.process_span("bench", parent, 1):
                pass
        processing += time.process_time() - published
        publishing += published - started
        flush()
    return publishing / n * 1e6, processing / n * 1e6


def bare_span_cpu(n: int = 20_000) -> float:
    """CPU µs of the SDK alone: start and end a CONSUMER span with five attributes."""
    import _tracing_before
    from opentelemetry.trace import SpanKind

    provider = _tracing_before.provider()
    tracer = provider.get_tracer("bench")
    attributes = {"a": "bench", "b": "process", "c": "bench", "d": "bench.tick", "e": 1}
    spent = 0.0
    for _ in range(n // CHUNK):
        started = time.process_time()
        for _ in range(CHUNK):
            tracer.start_span("process bench", kind=SpanKind.CONSUMER, attributes=attributes).end()
        spent += time.process_time() - started
        provider.force_flush()
    provider.shutdown()
    return spent / n * 1e6


async def traced(events: int, rounds: int, tmp: Path, before: str | None) -> None:
    import _tracing_before

    from contexten.observability import tracing

    previous = _tracing_before.load(before) if before else None
    print(f"\ntracing off/on on B1 (SQLite FULL, {events:,} events; {rounds} rounds):")
    modes: dict[str, Callable[[App], None] | None] = {"off": None}
    if before:
        modes[f"on at {before} (100% sampled, dropped)"] = None
    modes["on (100% sampled, spans dropped)"] = None

    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    collecting: dict[str, list[float]] = {mode: [] for mode in modes}
    current = [""]
    gc_time = [0.0, 0.0]  # total, start of the collection under way

    def timed_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_time[1] = time.process_time()
        else:
            gc_time[0] += time.process_time() - gc_time[1]

    def switch(mode: str) -> None:
        which = "off" if mode == "off" else "before" if mode.startswith("on at") else "on"
        _tracing_before.switch(which, previous)
        current[0] = mode

    async def run(url: str, configure: Callable[[App], None] | None) -> float:
        # CPU time of the whole process per event: less swayed by other load than events/s.
        started, gc_time[0] = time.process_time(), 0.0
        rate = await b1(url, events, configure)
        cpu[current[0]].append((time.process_time() - started) / events * 1e6)
        collecting[current[0]].append(gc_time[0] / events * 1e6)
        return rate

    gc.callbacks.append(timed_gc)
    try:
        await alternate("B1", run, modes, rounds, tmp, before=switch)
    finally:
        gc.callbacks.remove(timed_gc)
        _tracing_before.switch("off", previous)
    base = statistics.median(cpu["off"])
    for mode, values in cpu.items():
        med, gc_med = statistics.median(values), statistics.median(collecting[mode])
        print(f"  B1 {mode:34} CPU {med:6.0f} µs/event  (+{med - base:4.0f} µs), "
              f"of which garbage collection {gc_med:4.0f} µs")  # fmt: skip
    print("  the span hooks alone, CPU µs (median of 5 alternating rounds):")
    timings: dict[str, list[tuple[float, float, float]]] = {"on": []}
    if previous is not None:
        timings = {"before": [], "on": []}
    for _ in range(5):
        for which in timings:
            _tracing_before.switch(which, previous)
            owner = previous if which == "before" and previous is not None else tracing
            publish, process = hook_cpu(owner._provider.force_flush)
            timings[which].append((publish, process, bare_span_cpu()))
    _tracing_before.switch("off", previous)
    for which, rows in timings.items():
        label = f"at {before}" if which == "before" else "now"
        publish, process, bare = (statistics.median(r[i] for r in rows) for i in range(3))
        print(f"    {label:14} publish span + inject {publish:5.1f}, process span + link "
              f"{process:5.1f}; the SDK alone, a span {bare:5.1f}")  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="catchup,readyz,runners,tracing")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--letters", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--b1-events", type=int, default=20_000)
    parser.add_argument("--b2-workflows", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--tracing-before",
        metavar="REF",
        help="tracing: also run B1 with the tracing module of git REF (before/after)",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    load = os.getloadavg()[0]
    print(f"B12 on {os.cpu_count()} cores, load average {load:.1f} at start")
    backends = ["sqlite", "postgres"] if args.postgres else ["sqlite"]
    with tempfile.TemporaryDirectory(prefix="b12-") as d:
        tmp = Path(d)
        if "catchup" in only or "rebuild" in only:
            for backend in backends:
                await catchup(backend, args.events, tmp, "rebuild" in only)
        if "readyz" in only:
            await readyz(args.instances, args.letters, args.runs, tmp)
        if "runners" in only:
            await runners(args.b1_events, args.b2_workflows, args.rounds, tmp)
        if "tracing" in only:
            await traced(args.b1_events, args.rounds, tmp, args.tracing_before)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    configure_logging(level="WARNING")
    asyncio.run(main())
