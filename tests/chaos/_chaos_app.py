"""The App the chaos test's ``contexten worker`` processes run.

Two handlers and one workflow, all writing to ledger tables in the same PostgreSQL database as
the event store (the private cluster the test restarts):

* ``chaos.audit`` and ``chaos.count`` handle every ``chaos.work`` event (ordering key: the
  event's subject) and insert one ``chaos_handled`` row per run: handler, event number, key, pid,
  attempt. The row id (a sequence) orders the runs of one key, which run one after another.
* ``chaos_flow`` starts for every 50th event (instance ``chaos_flow:{n}``) and runs three
  steps; each step records its run in ``chaos_step_runs`` and its effect in
  ``chaos_effects`` under the step's idempotency key (``ON CONFLICT DO NOTHING``: the
  outside system's dedup), so the checker can see both how often a step ran and that its
  key never changed.

Handlers and steps retry without limit: while PostgreSQL restarts, their inserts fail and
are tried again. ``CHAOS_DSN`` names the ledger database.

    contexten worker --app tests/chaos/_chaos_app.py:app --store <postgresql url>
"""

from __future__ import annotations

import asyncio
import os
import random

import asyncpg

from contexten import App, Event, HandlerContext, RetryPolicy, Workflow

PID = os.getpid()
PATIENT = RetryPolicy(initial_interval=0.1, maximum_interval=1.0, maximum_attempts=0)

app = App(checkpoint_interval=0.05, shutdown_grace=5.0)
_pool: asyncpg.Pool | None = None


async def _ledger() -> asyncpg.Pool:
    global _pool
    if _pool is None:
        _pool = await asyncpg.create_pool(os.environ["CHAOS_DSN"], min_size=1, max_size=8)
    return _pool


@app.on_startup
async def _open_ledger() -> None:
    await _ledger()


async def _record(handler: str, event: Event, ctx: HandlerContext) -> None:
    await asyncio.sleep(random.random() * 0.004)  # the handler "waits on I/O"
    pool = await _ledger()
    await pool.execute(
        "INSERT INTO chaos_handled (handler, n, key, pid, attempt) VALUES ($1, $2, $3, $4, $5)",
        handler,
        event.data["n"],
        event.subject,
        PID,
        ctx.attempt,
    )


@app.on("chaos.work", name="chaos.audit", key=lambda e: e.subject, retry=PATIENT, concurrency=32)
async def audit(event: Event, ctx: HandlerContext) -> None:
    """Handler one: a ledger row per run."""
    await _record("audit", event, ctx)


@app.on("chaos.work", name="chaos.count", key=lambda e: e.subject, retry=PATIENT, concurrency=32)
async def count(event: Event, ctx: HandlerContext) -> None:
    """Handler two: the same, so order and duplicates are checked per handler."""
    await _record("count", event, ctx)


async def effect(workflow_id: str, step: int, idempotency_key: str | None = None) -> int:
    """One step's outside effect, deduplicated by its idempotency key as a platform would."""
    assert idempotency_key is not None
    pool = await _ledger()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO chaos_step_runs (wf, step, idem, pid) VALUES ($1, $2, $3, $4)",
            workflow_id,
            step,
            idempotency_key,
            PID,
        )
        await conn.execute(
            "INSERT INTO chaos_effects (idem, wf, step, pid) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (idem) DO NOTHING",
            idempotency_key,
            workflow_id,
            step,
            PID,
        )
    await asyncio.sleep(random.random() * 0.02)
    return step


@app.workflow(
    "chaos_flow", on="chaos.work", where=lambda e: e.data["n"] % 50 == 0, key=lambda e: e.data["n"]
)
async def chaos_flow(wf: Workflow, event: Event) -> list[int]:
    """Three steps in a row, each with one effect."""
    done = []
    for step in (1, 2, 3):
        done.append(
            await wf.step(effect, wf.workflow_id, step, name=f"effect{step}", retry=PATIENT)
        )
    return done
