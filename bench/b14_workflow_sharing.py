"""B14: workflow engines sharing one store — adoption after kill -9, and what limits cost.

1. Adoption: two worker processes (an App each, default lease 10 s and heartbeat 2 s, local
   reaping off so the lease is what frees the dead one, as for a dead machine) run a
   workflow parked on ``wf.wait_for``; the process that owns it is killed with SIGKILL and
   the time until the other one's ``claimed`` event is measured (median and max of
   ``--rounds``), on SQLite and on PostgreSQL. Target: <= 15 s.
2. Limits: ``--workflows`` one-step workflows (a 10 ms step) started at once in one process
   on SQLite, without limits (the limit) and with ``max_concurrent`` (slots in the store,
   taken and given back per instance) set to 50 and to the number of workflows (a limit that
   never binds: the pure cost of the store round trips).

    .venv/bin/python bench/b14_workflow_sharing.py [--rounds 3] [--workflows 500] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from contexten import App, Event, Workflow
from contexten.store import create_store
from contexten.workflows.history import stream_name

POSTGRES = os.environ.get(
    "CONTEXTEN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def worker_app(url: str) -> App:
    app = App(url)

    @app.workflow("parked", on="bench.park", key=lambda e: e.subject)
    async def parked(wf: Workflow, event: Event) -> Any:
        await wf.step(_noop)
        return (await wf.wait_for("bench.go", correlation_id=event.subject)).data

    return app


async def _noop() -> None:
    return None


async def run_worker(url: str) -> None:
    async with worker_app(url):
        print("ready", flush=True)
        await asyncio.Event().wait()


async def adoption_once(url: str, n: int) -> float:
    env = dict(os.environ, CONTEXTEN_REAP_LOCAL_WORKERS="0")
    procs = []
    for _ in range(2):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--worker",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
        )
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"ready\n"
        procs.append(proc)
    try:
        async with create_store(url) as store:
            wid = f"parked:r{n}"
            await store.append("bench", [Event(type="bench.park", source="bench", subject=f"r{n}")])
            while True:
                history = await store.read_stream(stream_name(wid))
                if any(r.event.type.endswith("wait_started") for r in history):
                    break
                await asyncio.sleep(0.05)
            owner = str(history[0].event.data["owner"])
            victim = next(p for p in procs if f"/{p.pid}/" in owner)
            os.kill(victim.pid, signal.SIGKILL)
            killed = time.time()
            while True:
                history = await store.read_stream(stream_name(wid))
                claims = [r for r in history if r.event.type.endswith("claimed")]
                if claims:
                    return claims[0].recorded_at.timestamp() - killed
                await asyncio.sleep(0.05)
    finally:
        for proc in procs:
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


async def adoption(url: str, rounds: int) -> list[float]:
    async with create_store(url):
        pass
    return [await adoption_once(url, n) for n in range(rounds)]


async def limited_run(url: str, workflows: int, limit: int | None) -> float:
    app = App(url)

    async def step() -> None:
        await asyncio.sleep(0.01)

    @app.workflow("job", max_concurrent=limit)
    async def job(wf: Workflow, n: int) -> None:
        await wf.step(step)

    async with app:
        started = time.perf_counter()
        handles = [await app.start_workflow("job", n) for n in range(workflows)]
        await asyncio.gather(*(h.result() for h in handles))
        return workflows / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workflows", type=int, default=500)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stores = [("sqlite", f"sqlite:///{Path(tmp) / 'adopt.db'}?busy_timeout=60")]
        schema = f"ctx_bench_b12_{uuid.uuid4().hex[:8]}"
        if not args.no_postgres:
            stores.append(("postgres", f"{POSTGRES}?schema={schema}"))
        print("| store | adoption after kill -9, median / max (s) | rounds |")
        print("|---|---|---|")
        for kind, url in stores if args.rounds else []:
            times = await adoption(url, args.rounds)
            print(f"| {kind} | {statistics.median(times):.1f} / {max(times):.1f} | {len(times)} |")
        if not args.no_postgres:
            import asyncpg

            conn = await asyncpg.connect(POSTGRES)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
        print()
        print("| limit | workflows/s | % of unlimited |")
        print("|---|---|---|")
        rows = [("none (the limit)", None), ("max_concurrent=50", 50)]
        rows.append((f"max_concurrent={args.workflows} (never binds)", args.workflows))
        base = None
        for n, (label, limit) in enumerate(rows):
            url = f"sqlite:///{Path(tmp) / f'limits{n}.db'}"
            rate = await limited_run(url, args.workflows, limit)
            base = base or rate
            print(f"| {label} | {rate:,.0f} | {100 * rate / base:.0f}% |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        asyncio.run(run_worker(sys.argv[2]))
    else:
        asyncio.run(main())
