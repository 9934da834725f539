"""Several worker processes share one store's workflows: concurrency limits hold across
them, and a killed worker's instances and slots move to the others after its lease.

Real processes (``_shared_worker.py``) on a SQLite file and on a PostgreSQL schema, killed
with SIGKILL; a short lease (4 s, heartbeat 0.5 s) and no reaping of dead local processes, so
what frees a dead worker's instances and slots is its lease lapsing, as for a dead machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contexten.events import Event
from contexten.store import EventStore, create_store
from contexten.workflows import WorkflowStatus, list_workflows
from contexten.workflows.history import stream_name

from ._shared_worker import create_ledger

WORKER = Path(__file__).with_name("_shared_worker.py")
LEASE = 4.0
HEARTBEAT = 0.5
HANG_GUARD = 90.0


class Workers:
    """Worker processes on one store and one ledger; every one is killed at the end."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.ledger = str(tmp_path / "ledger.db")
        create_ledger(self.ledger)
        self.procs: list[asyncio.subprocess.Process] = []

    async def spawn(self, share: str = "all", *, reap: bool = False) -> asyncio.subprocess.Process:
        env = dict(
            os.environ,
            CONTEXTEN_LEASE_SECONDS=str(LEASE),
            CONTEXTEN_HEARTBEAT_SECONDS=str(HEARTBEAT),
            CONTEXTEN_REAP_LOCAL_WORKERS="1" if reap else "0",
        )
        log = os.open(self.tmp_path / f"worker-{len(self.procs)}.log", os.O_WRONLY | os.O_CREAT)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER),
                self.url,
                self.ledger,
                share,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
            )
        finally:
            os.close(log)
        self.procs.append(proc)
        assert proc.stdout is not None
        async with asyncio.timeout(HANG_GUARD):
            line = await proc.stdout.readline()
        assert line == b"ready\n", self.logs()
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in self.tmp_path.glob("worker-*.log"))

    def kill(self, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        for proc in self.procs:
            self.kill(proc)
            await proc.wait()

    async def until_row(self, sql: str) -> list[tuple[object, ...]]:
        """Poll the ledger until ``sql`` returns rows; the rows."""
        async with asyncio.timeout(HANG_GUARD):
            while True:
                found = self.rows(sql)
                if found:
                    return found
                await asyncio.sleep(0.05)

    def rows(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        db = sqlite3.connect(self.ledger, timeout=60)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


@pytest.fixture
async def workers(shared_url: str, tmp_path: Path) -> AsyncIterator[Workers]:
    pool = Workers(shared_url, tmp_path)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def store(shared_url: str) -> AsyncIterator[EventStore]:
    async with create_store(shared_url) as opened:
        yield opened


async def until_done(store: EventStore, name: str, count: int, workers: Workers) -> None:
    try:
        async with asyncio.timeout(HANG_GUARD):
            while True:
                done = await list_workflows(store, WorkflowStatus.COMPLETED, name=name)
                if len(done) >= count:
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"{name}: fewer than {count} completed\n{workers.logs()}")


async def test_concurrency_limits_hold_across_two_processes(
    workers: Workers, store: EventStore
) -> None:
    # one after the other: the PostgreSQL read models' first open races with a second process
    await workers.spawn("0")
    await workers.spawn("1")
    keys = ["k0", "k1", "k2"]  # per key at most 1, so the overall limit of 2 binds too
    jobs = [
        Event(type="load.job", source="test", data={"key": keys[i % 3], "n": i}) for i in range(12)
    ]
    for job in jobs:
        await store.append("jobs", [job])
    await until_done(store, "limited", 12, workers)
    gauge = {name: peak for name, _, peak in workers.rows("SELECT * FROM gauge")}
    assert gauge.pop("all") == 2  # the limit was reached, never passed
    assert gauge == {f"key:{k}": 1 for k in keys}
    assert workers.rows("SELECT max(now), min(now) FROM gauge") == [(0, 0)]
    pids = {pid for (pid,) in workers.rows("SELECT pid FROM steps WHERE what = 'work'")}
    assert len(pids) == 2, "both processes ran instances"
    assert workers.rows("SELECT count(*) FROM steps WHERE what = 'work'") == [(12,)]


async def test_a_killed_owners_slot_is_released_after_its_lease(
    workers: Workers, store: EventStore
) -> None:
    first = await workers.spawn()
    await store.append("solo", [Event(type="solo.job", source="test", subject="1")])
    await workers.until_row("SELECT 1 FROM steps WHERE what = 'solo'")  # it runs and hangs
    workers.kill(first)
    killed_at = time.time()
    second = await workers.spawn()
    await store.append("solo", [Event(type="solo.job", source="test", subject="2")])
    await until_done(store, "solo", 2, workers)  # the slot came free, and the orphan moved
    later = workers.rows("SELECT pid, at FROM steps WHERE what = 'solo' ORDER BY at")[1:]
    assert {pid for pid, _ in later} == {second.pid}
    # nothing ran under the limit while the dead owner's registration lived
    first_after = min(float(at) for _, at in later)  # type: ignore[arg-type]
    print(f"slot free and taken {first_after - killed_at:.2f} s after the kill (lease {LEASE})")
    assert first_after - killed_at >= LEASE / 2


@pytest.mark.parametrize("reap", [False, True], ids=["by-lease", "same-host"])
async def test_a_killed_workers_waiting_instance_is_adopted(
    workers: Workers, store: EventStore, reap: bool
) -> None:
    """By its lease lapsing (a dead machine); or, on the same host with reaping on (the
    default), as soon as the survivor's next heartbeat finds the process gone."""
    procs = [await workers.spawn(reap=reap), await workers.spawn(reap=reap)]
    await store.append("waits", [Event(type="wait.start", source="test", subject="w1")])
    rows = await workers.until_row("SELECT pid FROM steps WHERE what = 'before'")
    async with asyncio.timeout(HANG_GUARD):
        while True:  # parked in its wait
            history = await store.read_stream(stream_name("waiter:w1"))
            if any(r.event.type.endswith("wait_started") for r in history):
                break
            await asyncio.sleep(0.05)
    [(owner_pid,)] = rows
    victim = next(p for p in procs if p.pid == owner_pid)
    survivor = next(p for p in procs if p.pid != owner_pid)
    workers.kill(victim)
    killed_at = time.time()
    async with asyncio.timeout(HANG_GUARD):
        while True:
            history = await store.read_stream(stream_name("waiter:w1"))
            claims = [r for r in history if r.event.type.endswith("claimed")]
            if claims:
                break
            await asyncio.sleep(0.05)
    adopted_after = claims[0].recorded_at.timestamp() - killed_at
    print(f"adopted {adopted_after:.2f} s after the kill (lease {LEASE}, heartbeat {HEARTBEAT})")
    if reap:
        assert adopted_after < LEASE / 2  # before the lease could lapse
    else:
        assert adopted_after >= LEASE / 2  # by the lease lapsing
    assert f"/{survivor.pid}/" in str(claims[0].event.data["owner"])
    await store.append(
        "waits", [Event(type="wait.go", source="test", correlation_id="w1", data={"ok": 1})]
    )
    await until_done(store, "waiter", 1, workers)
    assert workers.rows("SELECT pid FROM steps WHERE what = 'after'") == [(survivor.pid,)]
