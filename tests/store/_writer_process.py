"""A process that floods an event store with appends (for the multi-process tests).

Prints ``ready`` once the store is open, then ``<position> <event id>`` for every append
the store acknowledged, flushed at once, so the parent knows exactly what was acknowledged
before it kills this process.

    python _writer_process.py sqlite:///path.db --prefix w1 --concurrency 8 --count 100
    python _writer_process.py "postgresql://...?schema=s&pool_size=2" --prefix w1 --count 100
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from contexten.events import Event
from contexten.store import create_store


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--prefix", default="writer")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--count", type=int, default=0, help="appends per task; 0: forever")
    args = parser.parse_args()
    out = sys.stdout

    async with create_store(args.url) as store:
        out.write("ready\n")
        out.flush()

        async def work(task: int) -> None:
            done = 0
            while args.count == 0 or done < args.count:
                event = Event(type="test.appended", source=args.prefix, data={"n": done})
                result = await store.append(f"{args.prefix}-{task}", [event])
                out.write(f"{result.last_position} {event.id}\n")
                out.flush()
                done += 1

        await asyncio.gather(*(work(t) for t in range(args.concurrency)))


if __name__ == "__main__":
    asyncio.run(main())
