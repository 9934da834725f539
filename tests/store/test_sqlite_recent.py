"""The SQLite store serves its own newest commits from memory: the same records as the file."""

from __future__ import annotations

import asyncio
from pathlib import Path

from contexten.events import Event
from contexten.store import Append, StreamState
from contexten.store.sqlite import SqliteEventStore


async def test_tail_reads_from_memory_equal_reads_from_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'recent.db'}"
    async with SqliteEventStore(url) as writer:
        assert await writer.read_all() == []  # a reader: from now on commits are remembered
        await asyncio.gather(
            *(
                writer.commit(
                    [
                        Append(f"s-{i % 7}", [Event(type="t.one", data={"i": i})]),
                        Append(
                            f"pair-{i}",
                            [Event(type="t.a"), Event(type="t.b")],
                            StreamState.NO_STREAM,
                        ),
                    ],
                    dedup_key=f"k-{i % 40}",
                )
                for i in range(60)
            )
        )
        remembered = await writer.read_all(after=0, limit=10_000)
    async with SqliteEventStore(url) as fresh:  # a new handle has nothing in memory
        from_file = await fresh.read_all(after=0, limit=10_000)
    assert len(from_file) == 40 * 3
    assert remembered == from_file


async def test_another_process_commits_are_never_skipped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gaps.db'}"
    async with SqliteEventStore(url) as ours, SqliteEventStore(url) as theirs:
        for i in range(30):
            store = ours if i % 3 else theirs
            await store.append("s", [Event(type="t.x", data={"i": i})])
        seen: list[int] = []
        after = 0
        while True:
            page = await ours.read_all(after=after, limit=7)
            if not page:
                break
            seen.extend(r.event.data["i"] for r in page)
            after = page[-1].position
    assert seen == list(range(30))


async def test_a_store_nobody_reads_remembers_nothing(tmp_path: Path) -> None:
    """An ingest-only process (``serve --no-dispatch``) keeps no window of its commits; one
    read starts it, and reads before the window's start come from the file."""
    url = f"sqlite:///{tmp_path / 'ingest.db'}"
    async with SqliteEventStore(url) as store:
        for i in range(20):
            await store.append("s", [Event(type="t.x", data={"i": i})])
        assert store._recent.read(0, 100) is None  # nothing held
        first = await store.read_all(after=0, limit=100)
        for i in range(20, 30):
            await store.append("s", [Event(type="t.x", data={"i": i})])
        held = store._recent.read(20, 100)
        assert held is not None
        assert [r.event.data["i"] for r in held] == list(range(20, 30))
        everything = await store.read_all(after=0, limit=100)
    assert [r.event.data["i"] for r in first] == list(range(20))
    assert [r.event.data["i"] for r in everything] == list(range(30))
