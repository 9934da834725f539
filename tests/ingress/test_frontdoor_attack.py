"""``contexten serve`` under a connection attack: 2,000 idle connections and a slowloris of
500 do not stop a signed webhook from being answered, and the server sheds the attackers.

The 1 s answer target is measured by ``bench/b6_frontdoor.py``; here the bound only catches
a hang."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contexten.cli.simulate import github_request, send
from contexten.ingress.frontdoor import raise_open_files_limit

from ._serving import ServeProcess
from ._support import GITHUB_SECRET, HANG_GUARD, pull_request_payload

IDLE = 2000
SLOWLORIS = 500
ENV = {"CONTEXTEN_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}


@contextlib.contextmanager
def _soft_open_files_limit(limit: int) -> Iterator[None]:
    """Lower this process's soft limit (inherited by a child started meanwhile), then undo."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, soft), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _open_files_limits(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no open-files line in /proc/<pid>/limits")


async def _open(port: int, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for start in range(0, count, 200):  # in waves, within the listen backlog
        opened += await asyncio.gather(
            *(
                asyncio.open_connection("127.0.0.1", port)
                for _ in range(start, min(count, start + 200))
            )
        )
    return opened


async def _trickle(writer: asyncio.StreamWriter) -> None:
    """Slowloris: a request head that grows by one header line a second and never ends."""
    with contextlib.suppress(ConnectionError):
        writer.write(b"POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for i in range(int(HANG_GUARD)):
            await writer.drain()
            await asyncio.sleep(1.0)
            writer.write(b"X-Slow-%d: a\r\n" % i)


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read()
    except ConnectionError:
        return b""


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="needs Linux's /proc")
async def test_idle_and_slowloris_connections_do_not_stop_a_signed_webhook(
    tmp_path: Path,
) -> None:
    raise_open_files_limit()
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2 * (IDLE + SLOWLORIS) + 200:
        pytest.skip("the open-files hard limit is too low for 2,500 loopback connections")
    # Timeouts long enough that the attack is still on when the webhooks arrive, even on a
    # loaded machine where opening 2,500 connections takes seconds.
    args = [
        *("--store", f"sqlite:///{tmp_path / 'served.db'}"),
        *("--keep-alive-timeout", "10", "--header-timeout", "12"),
    ]
    with _soft_open_files_limit(1024):  # the usual default: serve must raise it itself
        serve = ServeProcess(tmp_path, args, ENV)
    attackers: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    trickles: list[asyncio.Task[None]] = []
    try:
        url = await serve.wait_ready()
        soft, hard = _open_files_limits(serve.process.pid)
        assert soft == hard, (soft, hard)
        port = int(url.rsplit(":", 1)[1])
        attackers = await _open(port, IDLE + SLOWLORIS)
        trickles = [asyncio.create_task(_trickle(w)) for _, w in attackers[IDLE:]]
        await asyncio.sleep(0.5)  # the slowloris heads are on their way

        async with httpx.AsyncClient(timeout=HANG_GUARD) as client:
            latencies = []
            for number in range(5):
                request = github_request(
                    "pull_request.opened", pull_request_payload(number), secret=GITHUB_SECRET
                )
                started = time.monotonic()
                response = await send(client, url, request)
                latencies.append(time.monotonic() - started)
                assert response.status_code == 202, response.text
        # Answered while the attack was on: most attackers were still connected.
        still_open = sum(not reader.at_eof() for reader, _ in attackers)
        assert still_open > (IDLE + SLOWLORIS) // 2, still_open
        print(f"webhook latencies under attack: {[round(x, 3) for x in latencies]}")

        # The server sheds the attackers: every connection closed by it, the slow ones 408.
        async with asyncio.timeout(HANG_GUARD):
            answers = await asyncio.gather(*(_closed_by_server(r) for r, _ in attackers))
        assert all(a == b"" for a in answers[:IDLE])
        slow = answers[IDLE:]
        # A 408 may be lost to the reset that follows when the trickle writes after the
        # server closed; what matters is that the server closed every one of them.
        assert any(a.startswith(b"HTTP/1.1 408 ") for a in slow)
        assert all(a == b"" or a.startswith(b"HTTP/1.1 408 ") for a in slow)
        serve.terminate()
        assert await serve.wait_exit() == 0, serve.log()[-2000:]
    finally:
        for task in trickles:
            task.cancel()
        await asyncio.gather(*trickles, return_exceptions=True)
        for _, writer in attackers:
            writer.close()
        serve.close()
        os.environ.pop("CONTEXTEN_STORE_URL", None)
