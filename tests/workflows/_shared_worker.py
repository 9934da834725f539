"""A worker process for the shared-engine tests: an App on a shared store (SQLite file or
PostgreSQL schema) running three event-triggered workflows until it is killed.

    python _shared_worker.py STORE_URL LEDGER [SHARE]

* ``limited`` (``load.job``): ``max_concurrent=2``, ``max_per_key=1`` by ``data["key"]``; its
  step counts the steps running at once, overall and per key, in the ledger (a SQLite file
  whose write lock makes the counts exact across processes) and keeps the peaks. With
  ``SHARE`` ``0`` or ``1`` this process starts only the jobs whose ``data["n"]`` has that
  parity (the other process starts the rest), so both run instances at once whichever
  tail is faster.
* ``solo`` (``solo.job``): ``max_concurrent=1``; the first run of its step anywhere blocks
  forever (the test kills that process), later runs return at once.
* ``waiter`` (``wait.start``): records a step, waits for ``wait.go`` with its subject as the
  correlation id, records another step.

Every step records ``(what, workflow id, pid, time)`` in the ledger's ``steps`` table. Prints
``ready`` once the app runs. Lease, heartbeat and local reaping come from the environment.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from typing import Any

from contexten import App, Event, Workflow
from contexten.workflows import current_step

STEP_SECONDS = 0.25


def ledger(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=60)
    db.execute("PRAGMA busy_timeout = 60000")
    return db


def create_ledger(path: str) -> None:
    """Create the ledger's tables (the test does, before the workers start)."""
    db = ledger(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS gauge (name TEXT PRIMARY KEY, now INT, peak INT)")
        db.execute("CREATE TABLE IF NOT EXISTS steps (what TEXT, wid TEXT, pid INT, at REAL)")
    finally:
        db.close()


def _move(db: sqlite3.Connection, names: list[str], delta: int) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        for name in names:
            db.execute(
                "INSERT INTO gauge (name, now, peak) VALUES (?, 0, 0) ON CONFLICT DO NOTHING",
                (name,),
            )
            db.execute(
                "UPDATE gauge SET now = now + ?, peak = max(peak, now + ?) WHERE name = ?",
                (delta, delta, name),
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def build(store_url: str, ledger_path: str, share: str = "all") -> App:
    app = App(store_url)
    db = ledger(ledger_path)

    def record(what: str) -> None:
        wid = current_step().workflow_id
        db.execute("INSERT INTO steps VALUES (?, ?, ?, ?)", (what, wid, os.getpid(), time.time()))

    async def work(key: str) -> None:
        names = ["all", f"key:{key}"]
        _move(db, names, +1)
        record("work")
        try:
            await asyncio.sleep(STEP_SECONDS)
        finally:
            _move(db, names, -1)

    async def solo_step() -> None:
        record("solo")
        if db.execute("SELECT count(*) FROM steps WHERE what = 'solo'").fetchone()[0] == 1:
            await asyncio.Event().wait()  # the first run anywhere hangs: its process is killed

    async def note(what: str) -> None:
        record(what)

    @app.workflow(
        "limited",
        on="load.job",
        where=lambda e: share == "all" or e.data["n"] % 2 == int(share),
        max_concurrent=2,
        max_per_key=1,
        concurrency_key=lambda e: e.data["key"],
    )
    async def limited(wf: Workflow, event: Event) -> None:
        await wf.step(work, event.data["key"])

    @app.workflow("solo", on="solo.job", max_concurrent=1)
    async def solo(wf: Workflow, event: Event) -> None:
        await wf.step(solo_step)

    @app.workflow("waiter", on="wait.start", key=lambda e: e.subject)
    async def waiter(wf: Workflow, event: Event) -> Any:
        await wf.step(note, "before")
        go = await wf.wait_for("wait.go", correlation_id=event.subject)
        await wf.step(note, "after")
        return go.data

    return app


async def main() -> None:
    app = build(*sys.argv[1:4])
    async with app:
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
