"""A dispatching App process for the projection-ownership tests.

Usage: ``_owner_worker.py STORE_URL STATS_FILE``. It prints ``ready`` once started, then
every 50 ms writes what each of its projection runners did in this process (events folded,
commits, whether it runs the projection now) to STATS_FILE as JSON, until SIGTERM. Its
handler of ``test.poison.*`` always fails, so those events park as dead letters.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from contexten import App, Event, RetryPolicy


async def main(url: str, stats: Path) -> None:
    app = App(url)
    stop = asyncio.Event()

    @app.on(
        "test.poison.*",
        name="poison-handler",
        retry=RetryPolicy(maximum_attempts=2, initial_interval=0.01, jitter=0.0),
    )
    async def poison(event: Event, ctx: object) -> None:
        raise RuntimeError("poisoned")  # so that the dead-letter read model has rows

    def write() -> None:
        runners = {n: app.projections.runner(n) for n in app.projections.names}
        data = {
            "pid": os.getpid(),
            "reads": app.projections.fanout.reads if app.projections.fanout else 0,
            "projections": {
                n: {"folded": r.folded, "commits": r.commits, "running": r.running}
                for n, r in runners.items()
            },
        }
        tmp = stats.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(stats)

    async def report() -> None:
        while not stop.is_set():
            write()
            await asyncio.sleep(0.05)

    async def serve() -> None:
        await app.serve(stop)

    task = asyncio.create_task(serve())
    while not app.running:  # noqa: ASYNC110 - the app sets no event when it has started
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    reporter = asyncio.create_task(report())
    await task
    stop.set()
    await reporter
    write()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
