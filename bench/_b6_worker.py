"""One worker process of B6: handles ``bench.work`` events (each waits ``pause`` s, as on I/O).

Appends ``<n> <ns> <pid>`` per handled event to the ledger file, prints ``ready`` once started.

    python bench/_b6_worker.py <store url> <ledger> <pause seconds> [concurrency]
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from contexten import App, Event, HandlerContext
from contexten.observability.logging import configure_logging


def main() -> None:
    configure_logging(level=logging.WARNING)
    url, ledger, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
    concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    app = App(url, shutdown_grace=5.0)
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()

    @app.on("bench.work", name="b6", concurrency=concurrency, key=lambda e: e.subject)
    async def handler(event: Event, ctx: HandlerContext) -> None:
        await asyncio.sleep(pause)
        os.write(fd, f"{event.data['n']} {time.time_ns()} {pid}\n".encode())

    @app.on_startup
    async def ready() -> None:
        sys.stdout.write("ready\n")
        sys.stdout.flush()

    app.run()


if __name__ == "__main__":
    main()
