"""One owner per projection across processes, one log read per batch within a process.

The multi-process tests run real dispatching App processes (``_owner_worker.py``) on one
store (a SQLite file, or a throwaway PostgreSQL schema). Each reports what its projection
runners folded and committed; the test checks that every projection is folded by one of
them, that the other takes a killed owner's projections over, and that every read model
then holds exactly the rows a fresh rebuild from the log gives (nothing applied twice or
skipped).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from contexten import App, Event
from contexten.projections import Projection, ProjectionBatch, Query, Table
from contexten.projections.memory import MemoryReadModels
from contexten.projections.read_side import builtin_projections
from contexten.projections.runner import ProjectionRunner
from contexten.store import RecordedEvent, create_store

WORKER = Path(__file__).with_name("_owner_worker.py")
HANG_GUARD = 60.0
NAMES = [p.name for p in builtin_projections()]
LEASE_ENV = {
    # Short enough for a quick takeover, long enough that a worker starved for a few
    # seconds on a loaded machine keeps its leases (a lapse is a legitimate handover, but
    # it would make "folded by one worker" untestable).
    "CONTEXTEN_HEARTBEAT_SECONDS": "1.0",
    "CONTEXTEN_LEASE_SECONDS": "4.0",
    # Wait for the lease to lapse even for a dead process of this host: the path a worker
    # on another machine takes.
    "CONTEXTEN_REAP_LOCAL_WORKERS": "0",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store several processes can share: a SQLite file or a fresh PostgreSQL schema, dropped
    afterwards (the processes create it, and the read models' tables, together)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.db'}"
        async with create_store(url):  # create the file before the workers race to
            pass
        return url
    server: str = request.getfixturevalue("postgres_url")
    schema = request.getfixturevalue("pg_schemas")("ctx_test_owners")
    return f"{server}{'&' if '?' in server else '?'}schema={schema}"


class Worker:
    """One App process and the stats file it keeps."""

    def __init__(self, proc: asyncio.subprocess.Process, stats: Path) -> None:
        self.proc = proc
        self.stats = stats

    @classmethod
    async def start(cls, url: str, stats: Path) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            url,
            str(stats),
            env={**os.environ, **LEASE_ENV},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        async with asyncio.timeout(HANG_GUARD):
            assert await proc.stdout.readline() == b"ready\n"
        return cls(proc, stats)

    def read(self) -> dict[str, dict[str, Any]]:
        if not self.stats.exists():
            return {}
        projections: dict[str, dict[str, Any]] = json.loads(self.stats.read_text())["projections"]
        return projections

    def running(self) -> set[str]:
        return {n for n, s in self.read().items() if s["running"]}


async def until(predicate: Any, what: str) -> None:
    """Poll ``predicate()`` until true (a hang guard, not a timing assertion)."""
    try:
        async with asyncio.timeout(HANG_GUARD):
            while not await predicate():  # noqa: ASYNC110 - polling other processes
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting until {what}") from None


async def publish(app: App, first: int, count: int) -> None:
    for n in range(first, first + count):
        kind = "test.poison.pill" if n % 10 == 0 else "test.item.touched"
        await app.publish(
            Event(type=kind, subject=f"s{n}", data={"n": n}, correlation_id=f"ENG-{n % 7}")
        )


async def caught_up(reader: App) -> bool:
    head = await reader.store.head()
    return all(s.lag == 0 and s.position == head for s in await reader.projections.status())


async def assert_rows_equal_a_fresh_rebuild(reader: App) -> None:
    """Every read model's rows are exactly those of a fresh fold of the whole log."""
    head = await reader.store.head()
    fresh = MemoryReadModels()
    await fresh.open()
    for projection in builtin_projections():
        runner = ProjectionRunner(reader.store, fresh, projection)
        assert await runner.catch_up(until=head) == head
        for table in projection.tables:
            live = await reader.projections.query(table.name, Query(limit=10_000))
            rebuilt = await fresh.query(table, Query(limit=10_000))
            assert live == rebuilt, f"{projection.name}: {table.name} differs from a rebuild"
    await fresh.close()


async def test_each_projection_has_one_owner_and_is_taken_over_on_kill_and_on_drain(
    shared_url: str, tmp_path: Path
) -> None:
    workers = [
        await Worker.start(shared_url, tmp_path / "a.json"),
        await Worker.start(shared_url, tmp_path / "b.json"),
    ]
    reader = App(shared_url, dispatch=False)
    try:
        await reader.start()

        async def shared_fairly() -> bool:
            a, b = (w.running() for w in workers)
            return not a & b and a | b == set(NAMES) and abs(len(a) - len(b)) <= 1

        await until(shared_fairly, "the two workers share the projections")
        before = [w.read() for w in workers]
        owners = [w.running() for w in workers]
        await publish(reader, 0, 200)
        await until(lambda: caught_up(reader), "every projection caught up")
        after = [w.read() for w in workers]
        assert [w.running() for w in workers] == owners, "a lease lapsed under load"
        for name in NAMES:
            folders = [
                i
                for i in range(2)
                if after[i][name]["commits"] > before[i][name]["commits"]
                or after[i][name]["folded"] > before[i][name]["folded"]
            ]
            assert len(folders) == 1, f"{name} was folded by {folders}"
        assert await reader.read.open_dead_letters() == 20
        await assert_rows_equal_a_fresh_rebuild(reader)

        # kill -9 the worker holding "work_items" (it holds a share of everything), then
        # go on publishing: the other worker takes its projections over when the lease
        # lapses and folds everything exactly once.
        victim = next(w for w in workers if "work_items" in w.running())
        survivor = next(w for w in workers if w is not victim)
        victim.proc.kill()
        await victim.proc.wait()
        await publish(reader, 200, 100)
        await until(
            lambda: asyncio.sleep(0, result=survivor.running() == set(NAMES)),
            "the survivor runs every projection",
        )
        await until(lambda: caught_up(reader), "every projection caught up after the kill")
        assert await reader.read.open_dead_letters() == 30
        await assert_rows_equal_a_fresh_rebuild(reader)

        # A new worker takes its share; then SIGTERM the survivor: it releases its leases on
        # the way out, and the newcomer takes them over at its next heartbeat.
        newcomer = await Worker.start(shared_url, tmp_path / "c.json")
        workers.append(newcomer)

        async def shared_again() -> bool:
            a, c = survivor.running(), newcomer.running()
            return not a & c and a | c == set(NAMES) and abs(len(a) - len(c)) <= 1

        await until(shared_again, "the newcomer takes its share")
        survivor.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(HANG_GUARD):
            assert await survivor.proc.wait() == 0
        await publish(reader, 300, 50)
        await until(
            lambda: asyncio.sleep(0, result=newcomer.running() == set(NAMES)),
            "the newcomer runs every projection",
        )
        await until(lambda: caught_up(reader), "every projection caught up after the drain")
        await assert_rows_equal_a_fresh_rebuild(reader)

        # Any process reports the lag (from the store); one that does not dispatch folds
        # nothing itself.
        health = await reader.health()
        assert {p.name: p.lag for p in health.projections} == dict.fromkeys(NAMES, 0)
        assert reader.projections.fanout is None
        assert all(reader.projections.runner(n).folded == 0 for n in NAMES)

        newcomer.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(HANG_GUARD):
            assert await newcomer.proc.wait() == 0
        parts = await reader.store.partitions()
        assert [p.owner for p in parts if p.group.startswith("projection:")] == [None] * len(NAMES)
    finally:
        for w in workers:
            if w.proc.returncode is None:
                w.proc.kill()
                await w.proc.wait()
        await reader.stop()


async def test_one_process_reads_the_log_once_for_all_its_projections(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 'events.db'}")
    async with app:
        await publish(app, 0, 300)
        await until(lambda: caught_up(app), "every projection caught up")
        fanout = app.projections.fanout
        assert fanout is not None
        assert sorted(fanout.names) == sorted(NAMES)
        head = await app.store.head()
        for name in NAMES:
            assert app.projections.runner(name).folded >= head
        # N runners reading on their own would have read N times the log.
        assert fanout.records_read < 2 * head


class _Flaky(Projection):
    """Counts events; fails while ``broken`` is set."""

    name = "flaky"
    tables = (Table("flaky_counts", {"id": "text", "n": "int"}, key=("id",)),)
    broken = True

    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        if self.broken:
            raise RuntimeError("broken projection")
        row = await batch.get("flaky_counts", "all") or {"id": "all", "n": 0}
        batch.put("flaky_counts", {"id": "all", "n": row["n"] + 1})


async def test_a_failing_projection_does_not_hold_up_the_others(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 'events.db'}")
    flaky = app.add_projection(_Flaky())
    assert isinstance(flaky, _Flaky)
    async with app:
        await publish(app, 0, 50)
        head = await app.store.head()

        async def others_caught_up() -> bool:
            status = {s.name: s for s in await app.projections.status()}
            return all(status[n].position == head for n in NAMES)

        await until(others_caught_up, "the healthy projections caught up")
        status = {s.name: s for s in await app.projections.status()}
        assert status["flaky"].position == 0
        assert status["flaky"].state == "failing"
        assert "broken projection" in (status["flaky"].last_error or "")
        flaky.broken = False  # fixed: it goes on from its checkpoint after its backoff

        async def flaky_caught_up() -> bool:
            return (await app.projections.runner("flaky").status()).position == head

        await until(flaky_caught_up, "the fixed projection caught up")
        assert await app.projections.get("flaky_counts", "all") == {"id": "all", "n": head}
        assert (await app.projections.runner("flaky").status()).state == "running"
