"""A worker process for the multi-worker tests: handles ``test.ledger`` events into a ledger.

Each handler run appends one line ``<n> <key> <ns> <pid>`` (flushed at once) to the ledger
file given, so the parent can check that every event was handled, how often, by whom and in
which order per key. Lease and heartbeat times come from the environment
(``CONTEXTEN_LEASE_SECONDS``...).

    python _ledger_worker.py <store url> <ledger file> [handler sleep seconds]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import structlog

from contexten import App, Event, HandlerContext


def main() -> None:
    structlog.configure(processors=[], logger_factory=structlog.ReturnLoggerFactory())
    url, ledger_path = sys.argv[1], sys.argv[2]
    pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.001
    app = App(url, checkpoint_interval=0.05, shutdown_grace=5.0)
    fd = os.open(ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()

    @app.on("test.ledger", name="ledger", concurrency=32, key=lambda e: e.subject)
    async def handler(event: Event, ctx: HandlerContext) -> None:
        await asyncio.sleep(pause)  # the handler "waits on I/O"
        os.write(fd, f"{event.data['n']} {event.subject} {time.time_ns()} {pid}\n".encode())

    @app.on_startup
    async def ready() -> None:
        sys.stdout.write("ready\n")
        sys.stdout.flush()

    app.run()  # until SIGTERM: drains (finishes in-flight work, releases its partitions)


if __name__ == "__main__":
    main()
