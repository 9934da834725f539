"""Serving an App for the server tests: in process on a free loopback port, or as a
``contexten serve`` subprocess (for signals and kill -9)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from contexten.app import App
from contexten.ingress import IngressConfig
from contexten.ingress.server import IngressServer

from ._support import HANG_GUARD

READY_MARK = "Uvicorn running on http://"


@contextlib.asynccontextmanager
async def serving(
    app: App, config: IngressConfig, **options: object
) -> AsyncIterator[tuple[IngressServer, str]]:
    """Serve ``app`` with uvicorn in this event loop on a free port; stop it cleanly after."""
    server = IngressServer(app, port=0, config=config, **options)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(HANG_GUARD):
            while not server.started:
                if task.done():
                    task.result()
                    raise AssertionError("the server returned before it started")
                await asyncio.sleep(0.01)
        yield server, f"http://127.0.0.1:{server.port}"
    finally:
        server.request_stop()
        async with asyncio.timeout(HANG_GUARD):
            await asyncio.gather(task, return_exceptions=True)
    task.result()


class ServeProcess:
    """``contexten serve`` in a subprocess, its log in a file, its port read from the log."""

    def __init__(
        self, cwd: Path, args: list[str], env: Mapping[str, str], *, separate_stdout: bool = False
    ) -> None:
        stamp = time.monotonic_ns()
        self.log_path = cwd / f"serve-{stamp}.log"
        self._log = self.log_path.open("wb")
        # separate_stdout: the log file holds stderr alone (the log); stdout goes to its own.
        self.stdout_path = cwd / f"serve-{stamp}.out" if separate_stdout else None
        self._out = self.stdout_path.open("wb") if self.stdout_path else None
        command = [sys.executable, "-c", "from contexten.cli import main; main()", "serve"]
        self.process = subprocess.Popen(
            [*command, "--port", "0", *args],
            cwd=cwd,
            env={**os.environ, **env},
            stdout=self._out or self._log,
            stderr=self._log if self._out else subprocess.STDOUT,
        )
        self.url = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[str]:
        """The ``event`` field of every JSON log line."""
        events = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                events.append(str(json.loads(line).get("event")))
        return events

    async def wait_ready(self) -> str:
        """Wait until uvicorn says where it listens; return the base URL."""
        async with asyncio.timeout(HANG_GUARD):
            while True:
                for event in self.log_events():
                    if event.startswith(READY_MARK):
                        address = event[len("Uvicorn running on ") :].split()[0]
                        self.url = address
                        return address
                if self.process.poll() is not None:
                    raise AssertionError(f"contexten serve exited early:\n{self.log()}")
                await asyncio.sleep(0.05)

    async def wait_exit(self) -> int:
        await asyncio.to_thread(self.process.wait, HANG_GUARD)
        self._close_files()
        return self.process.returncode

    def _close_files(self) -> None:
        self._log.close()
        if self._out is not None:
            self._out.close()

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.process.kill()

    def close(self) -> None:
        """Kill the process if it still runs (a failed test) and close the log."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(HANG_GUARD)
        self._close_files()
