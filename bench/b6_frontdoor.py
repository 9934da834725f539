"""B6 front door: a signed webhook's answer time while the server is under connection attack.

One ``contexten serve`` subprocess (a bare App on SQLite, WAL, ``synchronous=FULL``, the
front door's defaults: keep-alive 5 s, header timeout 10 s, 16 KB headers, 4,096
connections). Three runs, each sending ``--webhooks`` signed GitHub webhooks one after the
other, each on a new connection (as a platform does), timed from ``connect()`` to the last
byte of the answer:

* **quiet**: no attack (the reference);
* **attack**: ``--idle`` connections that never send a byte plus ``--slowloris`` connections
  sending a header line a second, all opened before the first webhook and held open;
* **flood**: ``--flood`` idle connections, more than ``max_connections``: the server must
  evict idle ones to let the platform in.

It then reports how long the server took to shed the attackers (every attacker connection
closed by the server), and the server's resident memory growth while 12 unsigned 24 MB
bodies arrive at once (target: ~2x the 25 MB cap).

Target (issue 8): every webhook answered within 1 s under attack.

Run: ``.venv/bin/python bench/b6_frontdoor.py [--webhooks 50] [--idle 2000] [--slowloris 500]
[--flood 5000]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from contexten.ingress.frontdoor import raise_open_files_limit

SECRET = "b6-bench-secret"
READY_TIMEOUT = 30.0
MiB = 1024 * 1024


def _signed(body: bytes) -> bytes:
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    head = (
        "POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-GitHub-Event: push\r\nX-GitHub-Delivery: {uuid.uuid4()}\r\n"
        f"X-Hub-Signature-256: {signature}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _push(n: int) -> bytes:
    return json.dumps(
        {"ref": "refs/heads/main", "after": f"{n:040x}", "repository": {"full_name": "o/r"}}
    ).encode()


class Server:
    """``contexten serve`` in a subprocess on a free port."""

    def __init__(self, directory: Path) -> None:
        self.log = directory / "serve.log"
        env = {**os.environ, "CONTEXTEN_GITHUB_WEBHOOK_SECRET": SECRET}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from contexten.cli import main; main()",
                "serve",
                "--port",
                "0",
                "--store",
                f"sqlite:///{directory / 'b6.db'}",
                "--no-dispatch",
                "--log-level",
                "info",
            ],
            cwd=directory,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.port = 0

    async def ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for line in self.log.read_text(errors="replace").splitlines():
                if "Uvicorn running on http://" in line:
                    self.port = int(line.split("http://127.0.0.1:")[1].split()[0])
                    return
            if self.process.poll() is not None:
                raise SystemExit(f"contexten serve exited:\n{self.log.read_text()}")
            await asyncio.sleep(0.05)
        raise SystemExit("contexten serve did not start")

    def rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


async def _webhook(port: int, n: int) -> tuple[float, bytes]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_signed(_push(n)))
    answer = await reader.read()
    writer.close()
    return time.perf_counter() - started, answer[:12]


async def _webhooks(port: int, count: int, first: int) -> list[float]:
    latencies = []
    for n in range(first, first + count):
        latency, status = await asyncio.wait_for(_webhook(port, n), 30)
        if status != b"HTTP/1.1 202":
            raise SystemExit(f"webhook {n} answered {status!r}")
        latencies.append(latency)
        await asyncio.sleep(0.02)
    return latencies


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _connect(port: int, count: int) -> list[Connection]:
    opened: list[Connection] = []
    for start in range(0, count, 200):
        wave = min(200, count - start)
        opened += await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", port) for _ in range(wave))
        )
    return opened


async def _trickle(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        writer.write(b"POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for i in range(60):
            await writer.drain()
            await asyncio.sleep(1.0)
            writer.write(b"X-Slow-%d: a\r\n" % i)


async def _until_closed(reader: asyncio.StreamReader) -> float:
    with contextlib.suppress(ConnectionError):
        await reader.read()
    return time.monotonic()


def _row(name: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"| {name} | {len(ordered)} | {statistics.median(ordered) * 1000:.1f} ms | "
        f"{p99 * 1000:.1f} ms | {ordered[-1] * 1000:.1f} ms |"
    )


async def _attack(server: Server, args: argparse.Namespace) -> tuple[list[float], float, float]:
    opened_at = time.monotonic()
    attackers = await _connect(server.port, args.idle + args.slowloris)
    trickles = [asyncio.create_task(_trickle(w)) for _, w in attackers[args.idle :]]
    await asyncio.sleep(0.5)
    latencies = await _webhooks(server.port, args.webhooks, 1000)
    closed = await asyncio.gather(*(_until_closed(r) for r, _ in attackers))
    for task in trickles:
        task.cancel()
    for _, writer in attackers:
        writer.close()
    idle_shed = max(closed[: args.idle]) - opened_at
    slow_shed = max(closed[args.idle :]) - opened_at
    return latencies, idle_shed, slow_shed


async def _flood(server: Server, args: argparse.Namespace) -> list[float]:
    attackers = await _connect(server.port, args.flood)
    latencies = await _webhooks(server.port, args.webhooks, 2000)
    for _, writer in attackers:
        writer.close()
    return latencies


async def _memory(server: Server) -> tuple[int, int]:
    await asyncio.sleep(0.5)
    baseline = peak = server.rss()
    body = b'{"pad": "' + b"x" * (24 * 1000 * 1000) + b'"}'
    head = (
        "POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nX-GitHub-Event: push\r\n"
        f"X-GitHub-Delivery: {uuid.uuid4()}\r\nX-Hub-Signature-256: sha256={'0' * 64}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()

    async def send() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(head)
        writer.write(body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        answer = await reader.read()
        writer.close()
        return answer[:12]

    sending = asyncio.gather(*(send() for _ in range(12)))
    while not sending.done():
        peak = max(peak, server.rss())
        await asyncio.sleep(0.005)
    answers = await sending
    if set(answers) != {b"HTTP/1.1 401"}:
        raise SystemExit(f"unsigned bodies answered {set(answers)}")
    return baseline, peak


async def main(args: argparse.Namespace) -> None:
    raise_open_files_limit()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    needed = 2 * max(args.idle + args.slowloris, args.flood) + 500
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"needs an open-files hard limit of {needed} (have {hard})")
    with tempfile.TemporaryDirectory() as directory:
        server = Server(Path(directory))
        try:
            await server.ready()
            quiet = await _webhooks(server.port, args.webhooks, 0)
            attack, idle_shed, slow_shed = await _attack(server, args)
            flood = await _flood(server, args)
            baseline, peak = await _memory(server)
        finally:
            server.stop()
    print("| run | webhooks | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    print(_row("quiet", quiet))
    print(_row(f"{args.idle:,} idle + {args.slowloris:,} slowloris connections", attack))
    print(_row(f"{args.flood:,} idle connections (over max_connections)", flood))
    print()
    print(f"attackers shed: idle after {idle_shed:.1f} s, slowloris after {slow_shed:.1f} s")
    print(
        f"12 unsigned 24 MB bodies at once: RSS {baseline / MiB:.0f} MiB -> peak "
        f"{peak / MiB:.0f} MiB (+{(peak - baseline) / MiB:.0f} MiB; the cap is 25 MiB)"
    )
    worst = max(attack + flood)
    print(f"target: every webhook under attack answered within 1 s: {worst * 1000:.0f} ms max")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--webhooks", type=int, default=50)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--slowloris", type=int, default=500)
    parser.add_argument("--flood", type=int, default=5000)
    asyncio.run(main(parser.parse_args()))
