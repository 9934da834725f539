"""A worker process for the crash tests: runs workflows on a SQLite store until killed.

Every step records its effect in a ledger (a separate SQLite file) keyed by the step's
idempotency key, the way a platform keeps one effect per key; ``runs`` counts how often the
platform was asked, so the tests can tell a deduplicated retry from a lost or double effect.

    python _worker.py STORE_URL LEDGER MODE [--count N]

Modes: ``five`` (N five-step workflows), ``die-after-effect`` (one workflow whose second
step kills the process after its effect, once), ``saga`` (a saga whose fourth step fails; the
compensation of step 2 kills the process after its effect, once), ``starts`` (50 concurrent
starts of one id). Prints ``ready`` once the engine runs, ``done`` when its work completed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from contexten.exceptions import NonRetryableError, WorkflowFailedError
from contexten.resilience.retry import RetryPolicy
from contexten.store.sqlite import SqliteEventStore
from contexten.workflows import WorkflowEngine, current_step

FAST = RetryPolicy(initial_interval=0.01, maximum_attempts=5)


class Ledger:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, runs INTEGER NOT NULL)"
        )

    def effect(self, key: str) -> None:
        self.db.execute(
            "INSERT INTO effects (key, runs) VALUES (?, 1) "
            "ON CONFLICT (key) DO UPDATE SET runs = runs + 1",
            (key,),
        )

    def die_once(self, marker: str) -> None:
        """Kill this process the first time ``marker`` is reached (a file remembers)."""
        flag = Path(self.path).with_suffix(f".{marker}")
        if not flag.exists():
            flag.write_text("died here\n")
            os.kill(os.getpid(), signal.SIGKILL)


def register(engine: WorkflowEngine, ledger: Ledger) -> None:
    async def effect() -> str:
        key = current_step().idempotency_key
        ledger.effect(key)
        await asyncio.sleep(0)
        return key

    async def effect_then_die() -> str:
        key = current_step().idempotency_key
        ledger.effect(key)
        ledger.die_once("after-effect")
        return key

    async def do(i: int) -> int:
        if i == 4:
            raise NonRetryableError("step 4 cannot be done")
        ledger.effect(current_step().idempotency_key)
        return i

    async def undo(i: int) -> None:
        ledger.effect(current_step().idempotency_key)
        if i == 2:
            ledger.die_once("in-compensation")

    @engine.workflow("five")
    async def five(wf: Any, _: Any) -> int:
        for i in range(1, 6):
            await wf.step(effect, name=f"s{i}", retry=FAST)
        return 5

    @engine.workflow("die-after-effect")
    async def die_after_effect(wf: Any, _: Any) -> list[str]:
        first = await wf.step(effect, name="first")
        second = await wf.step(effect_then_die, name="second")
        return [first, second]

    @engine.workflow("saga")
    async def saga(wf: Any, _: Any) -> None:
        for i in range(1, 6):
            await wf.step(do, i, name=f"s{i}", compensate=undo, retry=FAST)

    @engine.workflow("once")
    async def once(wf: Any, _: Any) -> str:
        return str(await wf.step(effect, name="only"))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("ledger")
    parser.add_argument("mode")
    parser.add_argument("--count", type=int, default=1)
    args = parser.parse_args()
    ledger = Ledger(args.ledger)
    async with SqliteEventStore(args.url) as store:
        engine = WorkflowEngine(store)
        register(engine, ledger)
        async with engine:
            print("ready", flush=True)
            if args.mode == "five":
                handles = await asyncio.gather(
                    *(engine.start_workflow("five", None, f"wf-{i}") for i in range(args.count))
                )
                await asyncio.gather(*(h.result() for h in handles))
            elif args.mode == "starts":
                handles = await asyncio.gather(
                    *(engine.start_workflow("once", None, "the-one") for _ in range(50))
                )
                results = await asyncio.gather(*(h.result() for h in handles))
                assert len(set(results)) == 1, results
            else:
                handle = await engine.start_workflow(args.mode, None, args.mode)
                try:
                    await handle.result()
                except WorkflowFailedError as e:
                    print(f"ended {e.status}", flush=True)
            print("done", flush=True)
    ledger.db.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
