"""A worker process for the schedule crash test: fires one every-second schedule on a shared
store (SQLite or PostgreSQL) until told to stop or killed.

    python _schedule_worker.py STORE_URL LEDGER SECONDS

Each run's one step records its effect in the ledger (a SQLite file) by the run's id.
Prints ``ready`` once the engine runs; exits 0 after SECONDS.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from datetime import timedelta
from typing import Any

from contexten.store import create_store
from contexten.workflows import WorkflowEngine, current_step
from contexten.workflows.schedules import Schedule


async def main(url: str, ledger_path: str, seconds: float) -> None:
    ledger = sqlite3.connect(ledger_path, isolation_level=None, timeout=30)
    store = create_store(url)
    await store.open()
    engine = WorkflowEngine(store, lease=1.0, heartbeat=0.3, adopt_interval=1.0)

    def effect() -> str:
        wid = current_step().workflow_id
        ledger.execute(
            "INSERT INTO effects (key, runs) VALUES (?, 1) "
            "ON CONFLICT (key) DO UPDATE SET runs = runs + 1",
            (wid,),
        )
        return wid

    @engine.workflow("tick")
    async def tick(wf: Any, _: Any) -> str:
        return str(await wf.step(effect, name="effect"))

    engine.schedule(
        Schedule(
            "tick",
            every=timedelta(seconds=1),
            workflow="tick",
            overlap="allow_all",
            catch_up="all",
            catch_up_window=timedelta(minutes=5),
            max_catch_up=100,
        )
    )
    engine.schedules.poll = 0.2
    await engine.start()
    print("ready", flush=True)
    await asyncio.sleep(seconds)
    await engine.stop()
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
