"""The SQLite store shared by processes: kill -9, concurrent writers, cross-process wake-up."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

from contexten.events import Event
from contexten.store.sqlite import SqliteEventStore

WRITER = Path(__file__).with_name("_writer_process.py")
HANG_GUARD = 120.0


async def _spawn(url: str, *args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WRITER),
        url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    assert line == b"ready\n", line + await _stderr(proc)
    return proc


async def _stderr(proc: asyncio.subprocess.Process) -> bytes:
    assert proc.stderr is not None
    return await proc.stderr.read()


def _acks(lines: list[bytes]) -> dict[str, int]:
    acks = {}
    for line in lines:
        if line.endswith(b"\n"):  # a line cut short by the kill was never acknowledged
            position, event_id = line.decode().split()
            acks[event_id] = int(position)
    return acks


async def _finish(proc: asyncio.subprocess.Process) -> tuple[list[bytes], int]:
    assert proc.stdout is not None
    lines = []
    while line := await proc.stdout.readline():
        lines.append(line)
    err = await _stderr(proc)
    code = await proc.wait()
    assert code in (0, -signal.SIGKILL), err.decode()
    return lines, code


async def _assert_gapless_log(url: str) -> list[tuple[int, str]]:
    async with SqliteEventStore(url) as store:
        records = await store.read_all(limit=1_000_000)
        assert [r.position for r in records] == list(range(1, len(records) + 1))
        for info in await store.list_streams():
            versions = [r.version for r in await store.read_stream(info.stream)]
            assert versions == list(range(1, info.version + 1))
        return [(r.position, r.event.id) for r in records]


async def test_kill_9_keeps_every_acknowledged_append(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    acknowledged: dict[str, int] = {}
    for _ in range(3):  # each round recovers the WAL the killed writer left behind
        async with asyncio.timeout(HANG_GUARD):
            proc = await _spawn(url, "--concurrency", "16")
            assert proc.stdout is not None
            seen = [await proc.stdout.readline() for _ in range(300)]
            os.kill(proc.pid, signal.SIGKILL)  # mid-flood: commits queued and in flight
            rest, code = await _finish(proc)
        assert code == -signal.SIGKILL
        acks = _acks(seen + rest)
        assert len(acks) >= 300
        acknowledged |= acks
        stored = {event_id: position for position, event_id in await _assert_gapless_log(url)}
        for event_id, position in acknowledged.items():
            assert stored.get(event_id) == position
    conn = sqlite3.connect(tmp_path / "events.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


async def test_processes_writing_one_file_lose_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}?busy_timeout=60"
    per_process = 4 * 150
    async with asyncio.timeout(HANG_GUARD):
        procs = [
            await _spawn(url, "--prefix", f"p{i}", "--concurrency", "4", "--count", "150")
            for i in range(2)
        ]
        local: list[str] = []
        async with SqliteEventStore(url) as store:
            for n in range(200):
                event = Event(type="test.appended", source="parent", data={"n": n})
                await store.append("parent", [event])
                local.append(event.id)
        outputs = [await _finish(p) for p in procs]
    acknowledged: dict[str, int] = {}
    for lines, code in outputs:
        assert code == 0
        acks = _acks(lines)
        assert len(acks) == per_process
        acknowledged |= acks
    log = await _assert_gapless_log(url)
    assert len(log) == 2 * per_process + 200
    stored = {event_id: position for position, event_id in log}
    for event_id, position in acknowledged.items():
        assert stored[event_id] == position
    assert set(local) <= set(stored)


async def test_another_process_commit_wakes_a_waiter(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    async with SqliteEventStore(url) as store, asyncio.timeout(HANG_GUARD):
        waiter = asyncio.create_task(store.wait_for_new(0, timeout=HANG_GUARD))
        await asyncio.sleep(0)
        proc = await _spawn(url, "--concurrency", "1", "--count", "1")
        lines, code = await _finish(proc)
        assert code == 0
        assert await waiter >= 1
        [(event_id, position)] = _acks(lines).items()
        [record] = await store.read_all()
        assert (record.event.id, record.position) == (event_id, position)


def test_many_first_opens_of_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Processes starting together on a new file (serve and worker, say) race to switch it to
    WAL; SQLite answers the losers "locked" without waiting, and the store must wait instead.
    Threads with their own connections race the same way as processes, more cheaply."""
    import threading

    from contexten.store._sqlite_schema import connect, prepare_schema

    for trial in range(40):
        path = str(tmp_path / f"new-{trial}.db")
        barrier = threading.Barrier(6)
        errors: list[BaseException] = []

        def open_store(
            path: str = path,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            conn = connect(path, busy_timeout=10)
            try:
                barrier.wait()
                prepare_schema(conn, path)
            except BaseException as e:
                errors.append(e)
            finally:
                conn.close()

        threads = [threading.Thread(target=open_store) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], f"trial {trial}: {errors!r}"
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
