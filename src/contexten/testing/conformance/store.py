"""The event-store conformance suite: the contract of :class:`~contexten.store.EventStore`.

Every backend's tests subclass :class:`EventStoreConformance` and say how to make a store::

    class TestSqliteEventStore(EventStoreConformance):
        def make_store(self, directory: Path) -> EventStore:
            return SqliteEventStore(f"sqlite:///{directory}/events.db")

A backend is done when the whole suite passes. The suite needs pytest, pytest-asyncio (auto
mode) and Hypothesis, i.e. the ``dev`` extra.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from contexten.events.envelope import Event
from contexten.exceptions import InvalidEvent, StoreClosed, WrongExpectedVersion
from contexten.store.base import (
    Append,
    AppendResult,
    EventStore,
    RecordedEvent,
    StreamInfo,
    StreamState,
)
from contexten.testing.conformance._store_machine import store_machine
from contexten.testing.conformance.leases import LeaseConformance

__all__ = ["EventStoreConformance"]

_HANG_GUARD = 60.0  # seconds; only stops a hung test, never measures anything


def _event(**data: Any) -> Event:
    return Event(type="conformance.happened", source="conformance", data=data)


def _ids(records: list[RecordedEvent]) -> list[str]:
    return [r.event.id for r in records]


class EventStoreConformance(LeaseConformance):
    """The event-store contract as tests; subclass it once per backend.

    Override :meth:`make_store`. Set :attr:`supports_reopen` to False for a backend that
    keeps nothing after close (then the reopen tests are skipped and the stateful test
    never reopens).
    """

    supports_reopen: ClassVar[bool] = True
    """Whether a store made again for the same directory sees what the first one wrote."""
    stateful_examples: ClassVar[int] = 25
    """Hypothesis examples (command sequences) the stateful test runs."""
    stateful_steps: ClassVar[int] = 25
    """Most commands in one example of the stateful test."""

    def make_store(self, directory: Path) -> EventStore:
        """Return a new, unopened store keeping its data in ``directory``."""
        raise NotImplementedError

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[EventStore]:
        """An open store in a fresh directory, closed after the test."""
        async with self.make_store(tmp_path) as store:
            yield store

    def _require_reopen(self) -> None:
        if not self.supports_reopen:
            pytest.skip(f"{type(self).__name__}: this backend keeps nothing after close")

    # -- appends and expectations -------------------------------------------------------------

    async def test_append_returns_versions_and_positions(self, store: EventStore) -> None:
        first = await store.append("orders-1", [_event(n=1), _event(n=2)])
        second = await store.append("orders-2", [_event(n=3)])
        third = await store.append("orders-1", [_event(n=4)])
        assert first == AppendResult("orders-1", 2, 1, 2)
        assert second == AppendResult("orders-2", 1, 3, 3)
        assert third == AppendResult("orders-1", 3, 4, 4)
        assert await store.head() == 4
        assert await store.stream_version("orders-1") == 3
        assert await store.stream_version("nothing") == 0

    async def test_stored_event_equals_the_original(self, store: EventStore) -> None:
        event = Event(
            type="github.pull_request.opened",
            source="github",
            subject="acme/app#7",
            data={"title": "Füge ✓ hinzu", "n": 2**53 + 1, "x": 0.1, "nested": [{"a": None}]},
            correlation_id="LIN-1",
            causation_id="cause",
            delivery_id="d-1",
            actor="octocat",
            traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        await store.append("prs", [event])
        [record] = await store.read_stream("prs")
        assert record.event == event
        assert (record.position, record.stream, record.version) == (1, "prs", 1)
        assert record.recorded_at.utcoffset() == timedelta(0)
        assert await store.get_event(event.id) == record

    async def test_exact_expected_version(self, store: EventStore) -> None:
        await store.append("s", [_event()], expected_version=0)
        await store.append("s", [_event(), _event()], expected_version=1)
        with pytest.raises(WrongExpectedVersion) as caught:
            await store.append("s", [_event()], expected_version=1)
        assert (caught.value.stream, caught.value.expected, caught.value.actual) == ("s", 1, 3)
        assert await store.stream_version("s") == 3

    async def test_no_stream_expectation(self, store: EventStore) -> None:
        await store.append("s", [_event()], expected_version=StreamState.NO_STREAM)
        with pytest.raises(WrongExpectedVersion):
            await store.append("s", [_event()], expected_version=StreamState.NO_STREAM)
        assert await store.stream_version("s") == 1

    async def test_stream_exists_expectation(self, store: EventStore) -> None:
        with pytest.raises(WrongExpectedVersion):
            await store.append("s", [_event()], expected_version=StreamState.STREAM_EXISTS)
        assert await store.head() == 0
        await store.append("s", [_event()])
        await store.append("s", [_event()], expected_version=StreamState.STREAM_EXISTS)
        assert await store.stream_version("s") == 2

    async def test_any_expectation(self, store: EventStore) -> None:
        for _ in range(3):
            await store.append("s", [_event()], expected_version=StreamState.ANY)
        assert await store.stream_version("s") == 3

    @pytest.mark.parametrize(("bad", "error"), [(-1, ValueError), ("1", TypeError)])
    async def test_invalid_expectation_is_refused(
        self, store: EventStore, bad: Any, error: type[Exception]
    ) -> None:
        with pytest.raises(error):
            await store.append("s", [_event()], expected_version=bad)
        assert await store.head() == 0

    async def test_failing_commit_writes_nothing(self, store: EventStore) -> None:
        await store.append("b", [_event()])
        a1, a2, b1 = _event(), _event(), _event()
        with pytest.raises(WrongExpectedVersion):
            await store.commit(
                [Append("a", [a1, a2], StreamState.NO_STREAM), Append("b", [b1], 5)],
                dedup_key="delivery-1",
                checkpoint=("consumer", 7),
            )
        assert await store.head() == 1
        assert await store.stream_version("a") == 0
        assert await store.stream_version("b") == 1
        assert await store.get_event(a1.id) is None
        assert await store.get_checkpoint("consumer") is None
        assert [s.stream for s in await store.list_streams()] == ["b"]
        # The dedup key was not consumed: the corrected commit goes through.
        results = await store.commit(
            [Append("a", [a1, a2], StreamState.NO_STREAM), Append("b", [b1], 1)],
            dedup_key="delivery-1",
            checkpoint=("consumer", 7),
        )
        assert results == [AppendResult("a", 2, 2, 3), AppendResult("b", 2, 4, 4)]
        assert await store.get_checkpoint("consumer") == 7

    async def test_one_commit_may_append_to_a_stream_twice(self, store: EventStore) -> None:
        results = await store.commit([Append("s", [_event()], 0), Append("s", [_event()], 1)])
        assert results == [AppendResult("s", 1, 1, 1), AppendResult("s", 2, 2, 2)]
        with pytest.raises(WrongExpectedVersion):
            await store.commit([Append("s", [_event()], 2), Append("s", [_event()], 2)])
        assert await store.head() == 2

    async def test_duplicate_event_id_is_refused(self, store: EventStore) -> None:
        stored = _event()
        await store.append("s", [stored])
        fresh = _event()
        with pytest.raises(InvalidEvent):
            await store.commit([Append("t", [fresh]), Append("u", [stored])])
        twice = _event()
        with pytest.raises(InvalidEvent):
            await store.append("t", [twice, twice])
        assert await store.head() == 1
        assert await store.get_event(fresh.id) is None
        assert await store.stream_version("t") == 0

    async def test_empty_commit_and_empty_append(self, store: EventStore) -> None:
        assert await store.commit([]) == []
        assert await store.append("s", []) == AppendResult("s", 0, 0, 0)
        assert await store.list_streams() == []
        await store.append("s", [_event()])
        assert await store.append("s", [], expected_version=1) == AppendResult("s", 1, 0, 0)
        assert await store.head() == 1

    # -- the global log ------------------------------------------------------------------------

    async def test_positions_are_gapless_across_failures(self, store: EventStore) -> None:
        taken = _event()
        await store.append("s", [taken])
        for i in range(10):
            with pytest.raises(WrongExpectedVersion):
                await store.append("s", [_event()], expected_version=99)
            with pytest.raises(InvalidEvent):
                await store.append("t", [_event(), taken])
            await store.append(f"s{i % 3}", [_event(), _event()])
        positions = [r.position for r in await store.read_all(limit=100)]
        assert positions == list(range(1, 22))

    async def test_concurrent_commits_with_failures_stay_gapless(self, store: EventStore) -> None:
        taken = _event()
        await store.append("taken", [taken])

        async def attempt(i: int) -> AppendResult | Exception:
            if i % 3 == 0:
                commit = [Append(f"s{i % 4}", [_event()], 10_000)]
            elif i % 5 == 0:
                commit = [Append(f"s{i % 4}", [_event(), taken])]
            else:
                commit = [Append(f"s{i % 4}", [_event(i=i) for _ in range(1 + i % 3)])]
            try:
                return (await store.commit(commit))[0]
            except (WrongExpectedVersion, InvalidEvent) as e:
                return e

        outcomes = await asyncio.gather(*(attempt(i) for i in range(60)))
        for i, outcome in enumerate(outcomes):
            if i % 3 == 0:
                assert isinstance(outcome, WrongExpectedVersion)
            elif i % 5 == 0:
                assert isinstance(outcome, InvalidEvent)
            else:
                assert isinstance(outcome, AppendResult)
        records = await store.read_all(limit=1000)
        assert [r.position for r in records] == list(range(1, len(records) + 1))
        claimed = sorted(
            p
            for o in outcomes
            if isinstance(o, AppendResult)
            for p in range(o.first_position, o.last_position + 1)
        )
        assert claimed == list(range(2, len(records) + 1))
        for stream in {r.stream for r in records}:
            versions = [r.version for r in await store.read_stream(stream)]
            assert versions == list(range(1, len(versions) + 1))

    async def test_read_all_after_and_limit(self, store: EventStore) -> None:
        events = [_event(i=i) for i in range(10)]
        for i, e in enumerate(events):
            await store.append(f"s{i % 3}", [e])
        assert _ids(await store.read_all()) == [e.id for e in events]
        assert _ids(await store.read_all(after=3, limit=4)) == [e.id for e in events[3:7]]
        assert await store.read_all(after=10) == []
        assert await store.read_all(limit=0) == []

    async def test_read_all_backwards(self, store: EventStore) -> None:
        events = [_event(i=i) for i in range(10)]
        await store.append("s", events)
        newest = await store.read_all_backwards(limit=3)
        assert [r.position for r in newest] == [10, 9, 8]
        assert [r.position for r in await store.read_all_backwards(before=4)] == [3, 2, 1]
        assert [r.position for r in await store.read_all_backwards(before=6, limit=2)] == [5, 4]
        assert await store.read_all_backwards(before=1) == []
        assert await store.read_all_backwards(before=0) == []

    async def test_read_stream_from_version_and_limit(self, store: EventStore) -> None:
        events = [_event(i=i) for i in range(6)]
        await store.append("s", events[:3])
        await store.append("other", [_event()])
        await store.append("s", events[3:])
        records = await store.read_stream("s", from_version=2, limit=3)
        assert [(r.version, r.event.id) for r in records] == [
            (v + 1, events[v].id) for v in range(1, 4)
        ]
        assert [r.position for r in await store.read_stream("s", from_version=4)] == [5, 6, 7]
        assert await store.read_stream("s", from_version=7) == []
        assert await store.read_stream("missing") == []

    async def test_as_of_reads(self, store: EventStore) -> None:
        early = [_event(i=0), _event(i=1)]
        await store.append("s", early)
        await store.append("t", [_event(i=2)])
        recorded = (await store.read_all())[-1].recorded_at
        await asyncio.sleep(0.01)  # the next commit is recorded strictly later
        await store.append("s", [_event(i=3)])
        log = await store.read_all()
        assert [r.recorded_at for r in log] == sorted(r.recorded_at for r in log)
        assert log[-1].recorded_at > recorded
        assert [r.position for r in await store.read_all(as_of=recorded)] == [1, 2, 3]
        assert _ids(await store.read_stream("s", as_of=recorded)) == [e.id for e in early]
        before = log[0].recorded_at - timedelta(microseconds=1)
        assert await store.read_all(as_of=before) == []
        assert await store.read_stream("s", as_of=before) == []

    async def test_get_event(self, store: EventStore) -> None:
        events = [_event(i=i) for i in range(3)]
        await store.append("s", events)
        record = await store.get_event(events[1].id)
        assert record is not None
        assert (record.position, record.version, record.event) == (2, 2, events[1])
        assert await store.get_event("no-such-id") is None

    async def test_get_events_answers_in_log_order(self, store: EventStore) -> None:
        events = [_event(i=i) for i in range(5)]
        await store.append("s", events[:3])
        await store.append("t", events[3:])
        wanted = [events[4].id, "no-such-id", events[0].id, events[2].id, events[0].id]
        found = await store.get_events(wanted)
        assert [(r.position, r.event) for r in found] == [
            (1, events[0]),
            (3, events[2]),
            (5, events[4]),
        ]
        assert await store.get_events([]) == []

    async def test_list_streams(self, store: EventStore) -> None:
        for name in ["github:b", "github:a", "linear:x", "github:c", "githubx"]:
            await store.append(name, [_event()])
        await store.append("github:a", [_event()])
        assert await store.list_streams() == [
            StreamInfo("github:a", 2),
            StreamInfo("github:b", 1),
            StreamInfo("github:c", 1),
            StreamInfo("githubx", 1),
            StreamInfo("linear:x", 1),
        ]
        github = await store.list_streams("github:")
        assert [s.stream for s in github] == ["github:a", "github:b", "github:c"]
        assert [s.stream for s in await store.list_streams("github:", limit=2)] == [
            "github:a",
            "github:b",
        ]
        assert await store.list_streams("zzz") == []

    # -- dedup and checkpoints -------------------------------------------------------------

    async def test_dedup_returns_the_original_results(self, store: EventStore) -> None:
        first = await store.commit(
            [Append("s", [_event()]), Append("t", [_event(), _event()])], dedup_key="gh:1"
        )
        again = await store.commit([Append("s", [_event()])], dedup_key="gh:1")
        assert again == [
            AppendResult(r.stream, r.version, r.first_position, r.last_position, True)
            for r in first
        ]
        assert await store.head() == 3
        other = await store.append("s", [_event()], dedup_key="gh:2")
        assert other == AppendResult("s", 2, 4, 4)

    async def test_dedup_with_stale_expectation_still_deduplicates(self, store: EventStore) -> None:
        first = await store.append("s", [_event()], expected_version=0, dedup_key="k")
        again = await store.append("s", [_event()], expected_version=0, dedup_key="k")
        assert again.deduplicated
        assert again.last_position == first.last_position

    async def test_concurrent_copies_of_one_dedup_key_write_once(self, store: EventStore) -> None:
        copies = [
            store.append("deliveries", [_event(copy=i)], dedup_key="gh:same") for i in range(20)
        ]
        results = await asyncio.gather(*copies)
        assert [r.deduplicated for r in results].count(False) == 1
        assert {(r.version, r.first_position, r.last_position) for r in results} == {(1, 1, 1)}
        assert await store.head() == 1

    async def test_checkpoint_is_written_with_the_commit(self, store: EventStore) -> None:
        assert await store.get_checkpoint("projector") is None
        await store.append("out", [_event()], checkpoint=("projector", 41))
        assert await store.get_checkpoint("projector") == 41
        with pytest.raises(WrongExpectedVersion):
            await store.append("out", [_event()], expected_version=0, checkpoint=("projector", 42))
        assert await store.get_checkpoint("projector") == 41
        await store.commit([], checkpoint=("projector", 43))
        assert await store.get_checkpoint("projector") == 43

    async def test_save_checkpoint(self, store: EventStore) -> None:
        await store.save_checkpoint("a", 5)
        await store.save_checkpoint("b", 1)
        await store.save_checkpoint("a", 9)
        assert (await store.get_checkpoint("a"), await store.get_checkpoint("b")) == (9, 1)

    # -- waiting, lifecycle ---------------------------------------------------------------------

    async def test_wait_for_new_wakes_on_commit(self, store: EventStore) -> None:
        await store.append("s", [_event()])
        assert await store.wait_for_new(0, timeout=_HANG_GUARD) == 1
        waiters = [
            asyncio.create_task(store.wait_for_new(1, timeout=_HANG_GUARD)) for _ in range(3)
        ]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        await store.append("s", [_event(), _event()])
        async with asyncio.timeout(_HANG_GUARD):
            assert await asyncio.gather(*waiters) == [3, 3, 3]

    async def test_wait_for_new_times_out_with_the_head(self, store: EventStore) -> None:
        await store.append("s", [_event()])
        assert await store.wait_for_new(1, timeout=0.05) == 1

    async def test_wait_for_new_ends_when_the_store_closes(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        await store.open()
        try:
            waiter = asyncio.create_task(store.wait_for_new(0, timeout=_HANG_GUARD))
            await asyncio.sleep(0.01)
        finally:
            await store.close()
        with pytest.raises(StoreClosed):
            await waiter

    async def test_open_is_idempotent(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        await asyncio.gather(store.open(), store.open())
        try:
            await store.open()
            assert await store.append("s", [_event()]) == AppendResult("s", 1, 1, 1)
        finally:
            await store.close()
        await store.open()  # the same object opens again after close
        try:
            assert await store.read_all(limit=0) == []
            await store.ping()
        finally:
            await store.close()

    async def test_closed_store_refuses_work(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        async with store:
            await store.ping()
        await store.close()  # idempotent
        with pytest.raises(StoreClosed):
            await store.append("s", [_event()])
        with pytest.raises(StoreClosed):
            await store.read_all()
        with pytest.raises(StoreClosed):
            await store.wait_for_new(0, timeout=0)

    async def test_reopen_keeps_everything(self, tmp_path: Path) -> None:
        self._require_reopen()
        events = [_event(i=i) for i in range(3)]
        async with self.make_store(tmp_path) as store:
            await store.append("s", events[:2], dedup_key="k")
            await store.append("t", events[2:], checkpoint=("c", 2))
        async with self.make_store(tmp_path) as store:
            assert await store.head() == 3
            assert _ids(await store.read_all()) == [e.id for e in events]
            assert await store.get_checkpoint("c") == 2
            again = await store.append("s", [_event()], dedup_key="k")
            assert again == AppendResult("s", 2, 1, 2, True)
            assert await store.append("s", [_event()], expected_version=2) == AppendResult(
                "s", 3, 4, 4
            )

    # -- load ---------------------------------------------------------------------------------

    async def test_concurrent_writers_and_a_tailing_reader(self, store: EventStore) -> None:
        writers, transactions = 10, 100
        acknowledged: list[str] = []

        async def write(w: int) -> None:
            own = 0
            for t in range(transactions):
                events = [_event(w=w, t=t) for _ in range(1 + t % 2)]
                if t % 4:
                    await store.append(f"writer-{w}", events, expected_version=own)
                    own += len(events)
                else:
                    await store.append("shared", events)
                acknowledged.extend(e.id for e in events)

        total = sum(1 + t % 2 for t in range(transactions)) * writers
        seen: list[str] = []

        async def tail() -> None:
            last = 0
            while len(seen) < total:
                await store.wait_for_new(last, timeout=_HANG_GUARD)
                for record in await store.read_all(after=last, limit=64):
                    assert record.position == last + 1, "the tail skipped or repeated"
                    last = record.position
                    seen.append(record.event.id)

        async with asyncio.timeout(_HANG_GUARD * 2):
            await asyncio.gather(tail(), *(write(w) for w in range(writers)))
        assert len(seen) == len(set(seen)) == total
        assert set(seen) == set(acknowledged)

    def test_stateful_against_a_model(self, tmp_path: Path) -> None:
        machine = store_machine(self.make_store, tmp_path, supports_reopen=self.supports_reopen)
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=self.stateful_examples,
                stateful_step_count=self.stateful_steps,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
