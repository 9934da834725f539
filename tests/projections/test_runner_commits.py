"""A running projection commits batches that write rows, not every batch it reads; stopped
with folded-but-unsaved events, it folds them again and counts each event once. Under a
stream of events it commits about once per linger, and at once after a quiet spell."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from contexten import App
from contexten.events.envelope import Event
from contexten.exceptions import ConfigurationError
from contexten.projections import Projection, ProjectionBatch, Table, create_read_models
from contexten.projections.base import Commit, ReadModels, Write
from contexten.projections.fanout import ProjectionFanout
from contexten.projections.manager import DEFAULT_LINGER, LINGER_ENV
from contexten.projections.runner import ProjectionRunner
from contexten.store import create_store
from contexten.store.base import Append, EventStore, RecordedEvent

HANG_GUARD = 30


class Pushes(Projection):
    name = "pushes"
    tables = (Table("pushes", {"repo": "text", "n": "int"}, key=("repo",)),)
    patterns = ("github.push",)

    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        row = await batch.get("pushes", "acme") or {"repo": "acme", "n": 0}
        batch.put("pushes", {"repo": "acme", "n": row["n"] + 1})


class CountingModels:
    """The real read models, counting the transactions committed through them."""

    def __init__(self, inner: ReadModels) -> None:
        self.inner = inner
        self.commits: list[int] = []  # rows written by each commit

    async def commit(self, projection: Projection, writes: Sequence[Write], **kw: Any) -> None:
        self.commits.append(len(writes))
        await self.inner.commit(projection, writes, **kw)

    async def commit_many(self, commits: Sequence[Commit]) -> set[str]:
        self.commits.extend(len(c.writes) for c in commits)
        return await self.inner.commit_many(commits)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextlib.asynccontextmanager
async def counted_models(
    tmp_path: Path,
) -> AsyncIterator[tuple[EventStore, ReadModels, CountingModels]]:
    """A SQLite store, its read models, and the same read models counting their commits."""
    async with create_store(f"sqlite:///{tmp_path / 'events.db'}") as store:
        inner = create_read_models(store)
        await inner.open()
        try:
            yield store, inner, CountingModels(inner)
        finally:
            await inner.close()


async def _eventually(predicate: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``predicate`` until it is true (a hang guard, not a timing assertion)."""
    async with asyncio.timeout(HANG_GUARD):
        while not await predicate():  # noqa: ASYNC110 - polling the read models
            await asyncio.sleep(0.01)


async def _until_caught_up(runner: ProjectionRunner) -> None:
    async def caught_up() -> bool:
        return not (await runner.status()).lag

    await _eventually(caught_up)


async def test_empty_batches_are_not_committed_and_a_restart_counts_once(tmp_path: Path) -> None:
    async with counted_models(tmp_path) as (store, inner, models):
        runner = ProjectionRunner(store, models, Pushes(), batch_size=100)  # type: ignore[arg-type]
        runner.checkpoint_interval = 0.5  # writes save at once, the rest within 0.5 s
        # 2,000 events the projection ignores: 20 batches, folded back to back.
        await store.commit(
            [Append(f"s-{i}", [Event(type="other.thing") for _ in range(100)]) for i in range(20)]
        )
        task = asyncio.create_task(runner.run(idle_wait=0.05))
        try:
            await _until_caught_up(runner)
            assert len(models.commits) <= 3, models.commits  # not once per batch (20)
            assert set(models.commits) == {0}
            await store.append("github-acme", [Event(type="github.push") for _ in range(3)])
            await _until_caught_up(runner)
            assert await inner.get(Pushes.tables[0], ("acme",)) == {"repo": "acme", "n": 3}
            assert models.commits[-1] == 1  # the batch with the push rows

            # More of both, then the runner is stopped wherever it is (saved or not).
            await store.commit([Append("s-x", [Event(type="other.thing") for _ in range(50)])])
            await store.append("github-acme", [Event(type="github.push")])
            await asyncio.sleep(0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        again = ProjectionRunner(store, inner, Pushes())  # from the saved checkpoint
        await again.catch_up()
        assert await inner.get(Pushes.tables[0], ("acme",)) == {"repo": "acme", "n": 4}


@pytest.mark.parametrize("reader", ["fanout", "runner"])
async def test_a_stream_is_committed_once_per_linger_and_a_quiet_spell_at_once(
    tmp_path: Path, reader: str
) -> None:
    """A running projection (alone, or in the fan-out that is an app's read side) keeps
    ``linger`` between two commits: the first event after a quiet spell is committed at
    once, a full batch at once, and a short batch inside the linger waits for more."""
    async with counted_models(tmp_path) as (store, inner, models):
        runner = ProjectionRunner(store, models, Pushes(), batch_size=5)  # type: ignore[arg-type]
        runner.linger = 3600.0  # nothing in this test may wait for it
        if reader == "fanout":
            fanout = ProjectionFanout(store, batch_size=5)
            await fanout.join(runner)
            task = asyncio.create_task(fanout.run(idle_wait=0.05))
        else:
            await runner.prepare()  # its tables exist before the test reads them
            task = asyncio.create_task(runner.run(idle_wait=0.05))

        async def pushes_folded(n: int) -> None:
            async def folded() -> bool:
                return await inner.get(Pushes.tables[0], ("acme",)) == {"repo": "acme", "n": n}

            await _eventually(folded)

        try:
            await store.append("github-acme", [Event(type="github.push")])
            await pushes_folded(1)  # the first after a quiet spell: at once
            assert models.commits == [1]
            for _ in range(7):  # one commit each, as webhooks arrive
                await store.append("github-acme", [Event(type="github.push")])
            await pushes_folded(6)  # five make a full batch: at once
            assert models.commits == [1, 1]
            await asyncio.sleep(0.3)  # the last two wait for more (or for the linger)
            assert models.commits == [1, 1]
            assert await inner.get(Pushes.tables[0], ("acme",)) == {"repo": "acme", "n": 6}
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def test_an_app_lingers_by_default_and_as_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LINGER_ENV, raising=False)
    assert App("memory://").projections.runner("events").linger == DEFAULT_LINGER
    monkeypatch.setenv(LINGER_ENV, "0")
    assert App("memory://").projections.runner("events").linger == 0
    monkeypatch.setenv(LINGER_ENV, "a while")
    with pytest.raises(ConfigurationError, match=LINGER_ENV):
        App("memory://")
