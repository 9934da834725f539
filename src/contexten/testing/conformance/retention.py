"""The retention part of the event-store contract (:mod:`contexten.store.retention`).

:class:`~contexten.testing.conformance.store.EventStoreConformance` includes these tests, so
every backend runs them. Ages are counted from a ``now`` moved forward (90 days, 7 days), so
nothing waits: the tests only need the store's clock and this process's to agree, as they
do on one machine (PostgreSQL on loopback included).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from contexten.events.envelope import Event
from contexten.store.base import Append, EventStore, RecordedEvent
from contexten.store.retention import (
    RETENTION_PRUNED,
    RETENTION_STREAM,
    Protected,
    PrunableStore,
    RetentionPolicy,
    RetentionRule,
    prune,
    pruned_marker,
)

__all__ = ["RetentionConformance"]

_TICK = 0.05  # seconds between "old" and "recent" writes, so a cut-off falls between them


def _push(n: int, **extra: Any) -> Event:
    return Event(
        type="github.push",
        source="github",
        subject=f"acme/app@{n}",
        data={"ref": "refs/heads/main", "n": n, "blob": "x" * 4000},
        correlation_id="ENG-1",
        delivery_id=f"d-{n}",
        **extra,
    )


async def _midpoint() -> datetime:
    await asyncio.sleep(_TICK)
    mid = datetime.now(UTC)
    await asyncio.sleep(_TICK)
    return mid


def _prunable(store: EventStore) -> PrunableStore:
    assert isinstance(store, PrunableStore), f"{type(store).__name__} cannot prune"
    return store


def _envelope(record: RecordedEvent) -> tuple[Any, ...]:
    e = record.event
    return (
        record.position,
        record.stream,
        record.version,
        record.recorded_at,
        e.id,
        e.type,
        e.source,
        e.subject,
        e.time,
        e.correlation_id,
        e.causation_id,
        e.delivery_id,
    )


class RetentionConformance:
    """Dedup keys past the window go, recent ones stay; data rules prune only what they
    should, keep the envelope, and are idempotent."""

    async def test_old_dedup_keys_go_recent_ones_stay(self, store: EventStore) -> None:
        _prunable(store)
        await store.append("github-acme", [_push(1)], dedup_key="github:old")
        mid = await _midpoint()
        await store.append("github-acme", [_push(2)], dedup_key="github:recent")
        window = RetentionPolicy(dedup_window=timedelta(days=7))
        later = mid + timedelta(days=7)

        dry = await prune(store, window, now=later, dry_run=True)
        assert dry.dedup_keys == 1
        again = await store.append("github-acme", [_push(3)], dedup_key="github:old")
        assert again.deduplicated, "a dry run removed a dedup key"

        report = await prune(store, window, now=later, dry_run=False)
        assert (report.dedup_keys, report.dry_run) == (1, False)
        recent = await store.append("github-acme", [_push(4)], dedup_key="github:recent")
        assert recent.deduplicated, "a redelivery within the window was stored again"
        old = await store.append("github-acme", [_push(5)], dedup_key="github:old")
        assert not old.deduplicated
        assert old.version == 3
        assert (await prune(store, window, now=later, dry_run=False)).dedup_keys == 0

    async def test_data_rules_keep_the_envelope_and_spare_what_is_protected(
        self, store: EventStore
    ) -> None:
        _prunable(store)
        await store.commit(
            [
                Append("github-acme", [_push(1), _push(2)]),
                Append("linear-eng", [Event(type="linear.issue.updated", data={"id": "x"})]),
                Append("$wf-run-1", [_push(3)]),  # a system stream: never pruned
                Append("github-parked", [_push(4)]),  # an open dead letter's stream
            ]
        )
        mid = await _midpoint()
        await store.append("github-acme", [_push(5)])
        before = {r.position: r for r in await store.read_all()}
        head = await store.head()
        policy = RetentionPolicy(rules=(RetentionRule("github.**", timedelta(days=90)),))
        later = mid + timedelta(days=90)

        async def protected() -> Protected:
            return Protected(streams=frozenset({"github-parked"}))

        dry = await prune(store, policy, protected=protected, now=later)
        assert (dry.dry_run, dry.events, dry.protected) == (True, {"github.**": 2}, 1)
        assert dry.data_bytes > 8000
        assert await store.read_all() == list(before.values())

        report = await prune(store, policy, protected=protected, now=later, dry_run=False)
        assert (report.events, report.protected) == ({"github.**": 2}, 1)
        log = await store.read_all()
        after = {r.position: r for r in log if r.position <= head}
        assert sorted(after) == sorted(before)
        [record] = [r for r in log if r.position > head]  # what read models follow
        assert record.stream == RETENTION_STREAM
        assert record.event.type == RETENTION_PRUNED
        assert record.event.data["work_items"] == [["ENG-1", 1], ["ENG-1", 2]]
        assert record.event.data["events"] == 2
        for position in (1, 2):
            marker = pruned_marker(after[position].event)
            assert marker is not None
            assert marker["rule"] == "github.**"
            assert marker["bytes"] > 4000
            assert _envelope(after[position]) == _envelope(before[position])
            assert await store.get_event(after[position].event.id) == after[position]
        assert [r.event for r in await store.read_stream("github-acme")][:2] == [
            after[1].event,
            after[2].event,
        ]
        for position in (3, 4, 5, 6):  # linear, system stream, protected, recent
            assert after[position] == before[position]
            assert pruned_marker(after[position].event) is None

        again = await prune(store, policy, protected=protected, now=later, dry_run=False)
        assert again.events == {}
        assert again.pruned_events == 0
        assert await store.head() == head + 1

    async def test_reclaiming_space_after_pruning(self, store: EventStore) -> None:
        _prunable(store)
        await store.append("github-acme", [_push(n) for n in range(200)])
        mid = await _midpoint()
        policy = RetentionPolicy(rules=(RetentionRule("github.*", timedelta(days=1)),))
        report = await prune(
            store, policy, now=mid + timedelta(days=1), dry_run=False, reclaim=True
        )
        assert report.pruned_events == 200
        assert report.size_before is not None
        assert report.size_after is not None
        assert report.size_after < report.size_before
        records = await store.read_all()
        assert len(records) == 201  # and the retention record
        assert all(pruned_marker(r.event) is not None for r in records[:200])
        await store.append("github-acme", [_push(1000)])  # still writable after the vacuum
        assert await store.head() == 202
