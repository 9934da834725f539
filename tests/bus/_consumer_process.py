"""A worker process that handles events from a SQLite store, for the kill -9 test.

Prints ``ready`` once dispatching, then ``<n>`` after each handler run completes (flushed at
once), so the parent knows which events were handled before it kills this process.

    python _consumer_process.py sqlite:///path.db
"""

from __future__ import annotations

import asyncio
import sys

import structlog

from contexten import App, Event, HandlerContext


async def main() -> None:
    structlog.configure(processors=[], logger_factory=structlog.ReturnLoggerFactory())
    app = App(sys.argv[1], checkpoint_interval=0.005)

    @app.on("test.ticked", name="killed", concurrency=4)
    async def handler(event: Event, ctx: HandlerContext) -> None:
        await asyncio.sleep(0.002)
        sys.stdout.write(f"{event.data['n']}\n")
        sys.stdout.flush()

    async with app:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
