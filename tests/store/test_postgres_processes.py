"""The PostgreSQL store shared by real processes, one of them killed with SIGKILL mid-flood."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from contexten.store.postgres import PostgresEventStore

WRITER = Path(__file__).with_name("_writer_process.py")
HANG_GUARD = 120.0

pytestmark = pytest.mark.postgres


@pytest.fixture
async def schema(postgres_url: str) -> AsyncIterator[str]:
    name = f"ctx_test_{uuid.uuid4().hex[:16]}"
    try:
        yield name
    finally:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()


async def _spawn(url: str, schema: str, *args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WRITER),
        f"{url}{'&' if '?' in url else '?'}schema={schema}&pool_size=2",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    line = await proc.stdout.readline()
    assert line == b"ready\n", line + await proc.stderr.read()
    return proc


async def _finish(proc: asyncio.subprocess.Process) -> tuple[list[bytes], int]:
    assert proc.stdout is not None
    assert proc.stderr is not None
    lines = []
    while line := await proc.stdout.readline():
        lines.append(line)
    err = await proc.stderr.read()
    code = await proc.wait()
    assert code in (0, -signal.SIGKILL), err.decode()
    return lines, code


def _acks(lines: list[bytes]) -> dict[str, int]:
    acks = {}
    for line in lines:
        if line.endswith(b"\n"):  # a line cut short by the kill was never acknowledged
            position, event_id = line.decode().split()
            acks[event_id] = int(position)
    return acks


async def test_processes_and_a_kill_9_lose_no_acknowledged_append(
    postgres_url: str, schema: str
) -> None:
    """Two processes write one store while this one tails it; one is killed mid-flood.

    The killed process held the log lock or had commits in flight: the server rolls them
    back, the survivor goes on, every acknowledged append is stored at the position it was
    acknowledged with, and the tail sees the log gapless, each event once.
    """
    async with PostgresEventStore(postgres_url, schema=schema) as reader:
        seen: list[tuple[int, str]] = []
        done = asyncio.Event()

        async def tail() -> None:
            last = 0
            while not (done.is_set() and last == await reader.head()):
                await reader.wait_for_new(last, timeout=0.5)
                for record in await reader.read_all(after=last, limit=500):
                    assert record.position == last + 1, "the tail skipped or repeated"
                    last = record.position
                    seen.append((record.position, record.event.id))

        async with asyncio.timeout(HANG_GUARD):
            tailing = asyncio.create_task(tail())
            victim = await _spawn(postgres_url, schema, "--prefix", "victim", "--concurrency", "16")
            survivor = await _spawn(
                postgres_url, schema, "--prefix", "survivor", "--concurrency", "4", "--count", "150"
            )
            assert victim.stdout is not None
            early = [await victim.stdout.readline() for _ in range(300)]
            os.kill(victim.pid, signal.SIGKILL)  # mid-flood: commits queued and in flight
            rest, code = await _finish(victim)
            assert code == -signal.SIGKILL
            lines, code = await _finish(survivor)
            assert code == 0
            done.set()
            await tailing

    acknowledged = _acks(early + rest) | _acks(lines)
    assert len(_acks(lines)) == 4 * 150
    assert len(acknowledged) >= 300 + 4 * 150
    assert [p for p, _ in seen] == list(range(1, len(seen) + 1))
    stored = {event_id: position for position, event_id in seen}
    assert len(stored) == len(seen)
    for event_id, position in acknowledged.items():
        assert stored.get(event_id) == position
