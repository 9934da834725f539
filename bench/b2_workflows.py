"""B2 workflows: 1,000 three-step durable workflows, 100 at a time, on SQLite (synchronous=FULL).

Side by side in one run:

* the limit: raw SQLite inserts, one per step (three per workflow), group-committed at
  ``synchronous=FULL`` by one writer thread: what the disk allows for this much durability;
* Contexten: the workflow engine on the SQLite event store (WAL, ``synchronous=FULL``, group
  commit). Each workflow appends ``started``, one ``step_completed`` per step and
  ``completed`` (plus its public ``contexten.workflow.completed`` event in the same commit);
* the peer: DBOS Transact (``pip install dbos``) on SQLite, the same workflow as
  ``@DBOS.workflow`` with three ``@DBOS.step`` calls. Skipped, saying so, if not installed.

Every workflow is started and awaited by one of 100 concurrent clients; latency is start to
result. ``--profile`` prints where Contexten's time goes (cProfile, top functions). The
``cpu us/wf`` column is the process's CPU time (all threads) per workflow: on a loaded
machine it is steadier than workflows/s, which depend on the CPU and the fsyncs the run got.

Run: ``.venv/bin/python bench/b2_workflows.py [--workflows 1000] [--concurrency 100]``

Every row runs on the event loop and with the collector settings a Contexten process uses
(``contexten.event_loop``: uvloop when installed, ``serving_gc``);
``CONTEXTEN_EVENT_LOOP=asyncio`` in front runs them all on the standard loop instead (the
loop an App embedded in a script's own ``asyncio.run`` gets).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import pstats
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _group_commit import GroupCommitWriter
from b1_dispatch import loop_name

from contexten import event_loop
from contexten.store.sqlite import SqliteEventStore
from contexten.workflows import WorkflowEngine


@dataclass
class Result:
    name: str
    workflows: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float = float("nan")

    @property
    def rate(self) -> float:
        return self.workflows / self.seconds

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000


async def drive(n: int, concurrency: int, run_one: Callable[[int], Awaitable[None]]) -> Result:
    """Run ``n`` workflows from ``concurrency`` clients; time each and all."""
    counter = iter(range(n))
    latencies: list[float] = []

    async def client() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await run_one(i)
            latencies.append(time.perf_counter() - t0)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return Result("", n, time.perf_counter() - start, latencies, time.process_time() - cpu)


# --- the limit ---------------------------------------------------------------------------------


async def raw_limit(n: int, concurrency: int, tmp: Path) -> Result:
    writer = GroupCommitWriter(tmp / "raw.db", "steps")

    async def one(i: int) -> None:
        for step in range(3):
            await writer.insert(b'{"workflow":%d,"step":%d,"result":%d}' % (i, step, i + step))

    result = await drive(n, concurrency, one)
    writer.close()
    result.name = "raw SQLite inserts, 1 per step, group commit FULL (limit)"
    return result


# --- Contexten -------------------------------------------------------------------------------


async def add_one(x: int) -> int:
    return x + 1


async def three_steps(wf: Any, x: int) -> int:
    a = await wf.step(add_one, x)
    b = await wf.step(add_one, a)
    return int(await wf.step(add_one, b))


async def contexten(n: int, concurrency: int, tmp: Path, profile: bool) -> Result:
    async with SqliteEventStore(f"sqlite:///{tmp / 'contexten.db'}") as store:
        engine = WorkflowEngine(store)
        engine.register(three_steps, name="three")
        async with engine:
            await (await engine.start_workflow("three", 0)).result()  # warm up

            async def one(i: int) -> None:
                handle = await engine.start_workflow("three", i, f"wf-{i}")
                assert await handle.result() == i + 3

            profiler = cProfile.Profile() if profile else None
            if profiler is not None:
                profiler.enable()
            result = await drive(n, concurrency, one)
            if profiler is not None:
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
                print(out.getvalue())
    result.name = "Contexten engine on SQLite (FULL)"
    return result


# --- DBOS --------------------------------------------------------------------------------------


async def dbos(n: int, concurrency: int, tmp: Path) -> Result | None:
    try:
        from dbos import DBOS, DBOSConfig
    except ImportError:
        return None
    logging.getLogger("dbos").setLevel(logging.WARNING)

    @DBOS.step()
    async def dbos_add_one(x: int) -> int:
        return x + 1

    @DBOS.workflow()
    async def dbos_three(x: int) -> int:
        a = await dbos_add_one(x)
        b = await dbos_add_one(a)
        return await dbos_add_one(b)

    config: DBOSConfig = {
        "name": "b2-bench",
        "system_database_url": f"sqlite:///{tmp / 'dbos.sqlite'}",
    }
    DBOS(config=config)
    DBOS.launch()
    try:

        async def one(i: int) -> None:
            handle = await DBOS.start_workflow_async(dbos_three, i)
            assert await handle.get_result() == i + 3

        result = await drive(n, concurrency, one)
    finally:
        DBOS.destroy(destroy_registry=True)
    result.name = "DBOS Transact on SQLite (peer)"
    return result


def table(results: list[Result], limit: Result) -> str:
    lines = [
        f"{'run':58} {'wf/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'% limit':>8} {'cpu us/wf':>10}",
        "-" * 105,
    ]
    for r in results:
        share = 100 * r.rate / limit.rate
        lines.append(
            f"{r.name:58} {r.rate:8.0f} {r.pct(0.5):8.1f} {r.pct(0.99):8.1f} {share:7.0f}%"
            f" {r.cpu_seconds / r.workflows * 1e6:10.0f}"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="cProfile the Contexten run")
    args = parser.parse_args()
    n, c = args.workflows, args.concurrency
    with tempfile.TemporaryDirectory(prefix="b2-") as tmp_dir:
        tmp = Path(tmp_dir)
        limit = await raw_limit(n, c, tmp)
        ours = await contexten(n, c, tmp, args.profile)
        peer = await dbos(n, c, tmp)
    results = [limit, ours] + ([peer] if peer is not None else [])
    print(
        f"B2: {n} three-step workflows, {c} at a time, SQLite synchronous=FULL, "
        f"{loop_name()} loop\n"
    )
    print(table(results, limit))
    if peer is None:
        print("\nDBOS Transact is not installed (pip install dbos): peer column skipped.")
    else:
        print(f"\nContexten / DBOS: {ours.rate / peer.rate:.1f}x")


if __name__ == "__main__":
    with event_loop.serving_gc():
        event_loop.run(main())
