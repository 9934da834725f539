"""One DBOS process of B8's peer row: a DBOS queue whose workflows wait ``pause`` s in a step.

Process 0 enqueues ``events`` workflows (100 concurrent enqueues at a time) and prints
``<seconds> <completed>`` once every one has finished (timed from the first enqueue); every
process (0 too) dequeues and runs them with ``worker_concurrency`` = ``concurrency``. Prints
``ready`` once DBOS is launched.

    python bench/_b8_dbos.py <postgres url> <schema> <index> <events> <pause> <concurrency>
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from dbos import DBOS, DBOSConfig

POLL = 0.05  # seconds between queue polls (DBOS's default is 1 s; see bench/README.md)


async def amain() -> None:
    url, schema, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
    events, pause, concurrency = int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
    logging.getLogger("dbos").setLevel(logging.WARNING)
    config: DBOSConfig = {
        "name": "b8-dbos",
        "system_database_url": url,
        "dbos_system_schema": schema,
        "log_level": "WARNING",
        "sys_db_pool_size": 20,
    }
    DBOS(config=config)

    @DBOS.step()
    async def wait_on_io(n: int) -> int:
        await asyncio.sleep(pause)
        return n

    @DBOS.workflow()
    async def handle(n: int) -> int:
        return await wait_on_io(n)

    DBOS.launch()
    queue = await DBOS.register_queue_async(
        "b8", worker_concurrency=concurrency, polling_interval_sec=POLL
    )
    try:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if index != 0 or line != "go\n":
            await asyncio.sleep(3600)  # dequeue until the parent ends this process
            return
        t0 = time.perf_counter()
        handles = []
        for start in range(0, events, 100):  # 100 enqueues at a time, as B8 commits 100 events
            handles.extend(
                await asyncio.gather(
                    *(
                        queue.enqueue_async(handle, n)
                        for n in range(start, min(start + 100, events))
                    )
                )
            )
        done = 0
        for h in handles:
            await h.get_result()
            done += 1
        sys.stdout.write(f"{time.perf_counter() - t0} {done}\n")
        sys.stdout.flush()
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    asyncio.run(amain())
