"""A schedule fires once per tick with three worker processes on one store, one of them
killed with SIGKILL mid-way, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sqlite3
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from contexten.store import create_store
from contexten.workflows import list_workflows
from contexten.workflows.schedules import fold_schedule

WORKER = Path(__file__).with_name("_schedule_worker.py")


async def _spawn(url: str, ledger: str, seconds: float) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        url,
        ledger,
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if line != b"ready\n":
        assert proc.stderr is not None
        raise AssertionError(line + await proc.stderr.read())
    return proc


async def _three_workers_and_a_kill(url: str, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger.db")
    with sqlite3.connect(ledger, isolation_level=None) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE effects (key TEXT PRIMARY KEY, runs INTEGER NOT NULL)")
    workers = [await _spawn(url, ledger, 12.0) for _ in range(3)]
    await asyncio.sleep(2.5)  # (each lives 12 s from its start: still running)
    workers[0].send_signal(signal.SIGKILL)
    for proc in workers:
        await asyncio.wait_for(proc.wait(), 60)
    assert workers[0].returncode == -signal.SIGKILL
    assert [p.returncode for p in workers[1:]] == [0, 0]
    # A survivor finishes whatever the killed worker left open.
    last = await _spawn(url, ledger, 3.0)
    await asyncio.wait_for(last.wait(), 60)

    store = create_store(url)
    await store.open()
    try:
        state = fold_schedule(await store.read_stream("$schedule-tick"))
        infos = await list_workflows(store, name="tick")
    finally:
        await store.close()
    ticks = sorted(datetime.fromisoformat(i.workflow_id.removeprefix("sched:tick:")) for i in infos)
    assert len(ticks) >= 5
    gaps = {b - a for a, b in itertools.pairwise(ticks)}
    assert gaps == {timedelta(seconds=1)}, "every tick ran, none twice (ids are per tick)"
    assert state.ticked == len(ticks)
    assert state.missed == 0
    assert state.skipped == 0
    assert all(str(i.status) == "completed" for i in infos), [i.status for i in infos]
    with sqlite3.connect(ledger) as db:
        effects = dict(db.execute("SELECT key, runs FROM effects").fetchall())
    assert set(effects) == {i.workflow_id for i in infos}
    assert max(effects.values()) <= 2  # a kill between effect and record may repeat it once
    assert sum(effects.values()) <= len(effects) + 1


@pytest.mark.slow
async def test_three_sqlite_workers_and_a_kill_fire_each_tick_once(tmp_path: Path) -> None:
    await _three_workers_and_a_kill(f"sqlite:///{tmp_path / 'events.db'}?busy_timeout=60", tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
async def test_three_postgres_workers_and_a_kill_fire_each_tick_once(
    postgres_url: str, tmp_path: Path
) -> None:
    import asyncpg

    schema = f"ctx_test_sched_{uuid.uuid4().hex[:10]}"
    separator = "&" if "?" in postgres_url else "?"
    try:
        await _three_workers_and_a_kill(f"{postgres_url}{separator}schema={schema}", tmp_path)
    finally:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
