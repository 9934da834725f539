"""A process that relays a SQLite store's events to NATS, for the kill -9 test.

Prints ``ready`` once dispatching, then ``status <published> <duplicates> <lag> <failures>`` every
100 ms (flushed at once), so the parent can follow it and kill it mid-flow.

    python _relay_process.py sqlite:///path.db nats://127.0.0.1:PORT STREAM CHECKPOINT_SECONDS
"""

from __future__ import annotations

import asyncio
import sys

import structlog

from contexten import App


async def main() -> None:
    structlog.configure(processors=[], logger_factory=structlog.ReturnLoggerFactory())
    store, url, stream, interval = sys.argv[1:5]
    app = App(store, checkpoint_interval=float(interval))
    relay = app.relay_to_nats(url, stream=stream, publish_timeout=1.0, connect_timeout=1.0)
    async with app:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        while True:
            report = (await app.health()).relays.get(relay.name, {})
            sys.stdout.write(
                f"status {relay.published} {relay.duplicates} {report.get('lag', -1)} "
                f"{relay.failures}\n"
            )
            sys.stdout.flush()
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main())
