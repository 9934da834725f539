"""The worker-registry and partition-lease part of the event-store contract.

:class:`~contexten.testing.conformance.store.EventStoreConformance` includes these tests, so
every backend runs them; they are kept apart because they are a concept of their own: who
delivers which partition of a subscription, and the fencing that keeps a worker that lost its
lease from writing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contexten.events.envelope import Event
from contexten.exceptions import LeaseLost, PartitionsHeld
from contexten.store.base import Append, EventStore, LeaseCheckpoint

__all__ = ["LeaseConformance"]

_TTL = 30.0  # seconds; long enough that no lease in these tests lapses unless meant to


def _event(**data: Any) -> Event:
    return Event(type="conformance.happened", source="conformance", data=data)


class LeaseConformance:
    """Workers, partitions, claims, releases and fenced commits, on any backend."""

    async def test_heartbeat_registers_a_worker(self, store: EventStore) -> None:
        held = await store.heartbeat("w1", ttl=_TTL, groups=["sub:a", "sub:b"], meta="host 1")
        assert held == []
        [worker] = await store.workers()
        assert worker.worker_id == "w1"
        assert worker.groups == ("sub:a", "sub:b")
        assert worker.meta == "host 1"
        assert worker.alive
        assert 0 < worker.expires_in <= _TTL
        assert 0 <= worker.heartbeat_age < 5
        assert not worker.draining
        # None keeps what was recorded; draining is reported.
        await store.heartbeat("w1", ttl=_TTL, draining=True)
        [worker] = await store.workers()
        assert worker.groups == ("sub:a", "sub:b")
        assert worker.meta == "host 1"
        assert worker.draining

    async def test_expired_workers_are_not_listed(self, store: EventStore) -> None:
        await store.heartbeat("short", ttl=0.05)
        await store.heartbeat("long", ttl=_TTL)
        await asyncio.sleep(0.15)
        assert [w.worker_id for w in await store.workers()] == ["long"]

    async def test_ensure_partitions_creates_once(self, store: EventStore) -> None:
        assert await store.ensure_partitions("g", 4, position=7) == 4
        assert await store.ensure_partitions("g", 8, position=0) == 4  # the count is fixed
        parts = await store.partitions("g")
        assert [(p.partition, p.owner, p.epoch, p.position) for p in parts] == [
            (n, None, 0, 7) for n in range(4)
        ]
        assert all(p.expires_in is None and not p.held for p in parts)
        await store.ensure_partitions("h", 2, position=0)
        assert [(p.group, p.partition) for p in await store.partitions()] == [
            ("g", 0),
            ("g", 1),
            ("g", 2),
            ("g", 3),
            ("h", 0),
            ("h", 1),
        ]

    async def test_claims_never_overlap(self, store: EventStore) -> None:
        await store.ensure_partitions("g", 8, position=0)
        a = await store.claim_partitions("g", "a", limit=3, ttl=_TTL)
        b = await store.claim_partitions("g", "b", limit=10, ttl=_TTL)
        c = await store.claim_partitions("g", "c", limit=10, ttl=_TTL)
        assert [p.partition for p in a] == [0, 1, 2]
        assert [p.partition for p in b] == [3, 4, 5, 6, 7]
        assert c == []
        assert all(p.epoch == 1 and p.held for p in a + b)
        owners = {p.partition: p.owner for p in await store.partitions("g")}
        assert owners == {0: "a", 1: "a", 2: "a", 3: "b", 4: "b", 5: "b", 6: "b", 7: "b"}

    async def test_concurrent_claims_never_overlap(self, store: EventStore) -> None:
        await store.ensure_partitions("g", 32, position=0)
        results = await asyncio.gather(
            *(store.claim_partitions("g", f"w{i}", limit=32, ttl=_TTL) for i in range(6))
        )
        claimed = [p.partition for r in results for p in r]
        assert sorted(claimed) == list(range(32))

    async def test_heartbeat_renews_and_returns_the_leases(self, store: EventStore) -> None:
        await store.ensure_partitions("g", 4, position=0)
        await store.heartbeat("a", ttl=0.2)
        await store.claim_partitions("g", "a", limit=2, ttl=0.2)
        held = await store.heartbeat("a", ttl=_TTL)
        assert [(p.group, p.partition, p.epoch) for p in held] == [("g", 0, 1), ("g", 1, 1)]
        await asyncio.sleep(0.3)  # past the first lease, not the renewed one
        assert await store.claim_partitions("g", "b", limit=4, ttl=_TTL) != []
        owners = {p.partition: p.owner for p in await store.partitions("g")}
        assert owners[0] == owners[1] == "a"

    async def test_expired_leases_are_claimed_with_a_new_epoch(self, store: EventStore) -> None:
        await store.ensure_partitions("g", 2, position=0)
        await store.claim_partitions("g", "a", limit=2, ttl=0.05)
        await asyncio.sleep(0.15)
        taken = await store.claim_partitions("g", "b", limit=2, ttl=_TTL)
        assert [(p.partition, p.owner, p.epoch) for p in taken] == [(0, "b", 2), (1, "b", 2)]
        # The old owner's heartbeat no longer returns (nor renews) them.
        assert await store.heartbeat("a", ttl=_TTL) == []

    async def test_release_frees_only_own_partitions(self, store: EventStore) -> None:
        await store.ensure_partitions("g", 4, position=0)
        await store.claim_partitions("g", "a", limit=2, ttl=_TTL)
        await store.claim_partitions("g", "b", limit=2, ttl=_TTL)
        await store.release_partitions("g", "a", [0, 2])  # 2 is b's: untouched
        owners = {p.partition: p.owner for p in await store.partitions("g")}
        assert owners == {0: None, 1: "a", 2: "b", 3: "b"}
        [again] = await store.claim_partitions("g", "c", limit=4, ttl=_TTL)
        assert (again.partition, again.epoch) == (0, 2)

    async def test_remove_worker_frees_its_partitions(self, store: EventStore) -> None:
        await store.ensure_partitions("g", 3, position=0)
        await store.heartbeat("a", ttl=_TTL)
        await store.claim_partitions("g", "a", limit=3, ttl=_TTL)
        await store.remove_worker("a")
        assert await store.workers() == []
        assert all(p.owner is None for p in await store.partitions("g"))

    async def test_fenced_commit_moves_the_checkpoint_with_the_appends(
        self, store: EventStore
    ) -> None:
        await store.ensure_partitions("g", 2, position=0)
        [lease, _] = await store.claim_partitions("g", "a", limit=2, ttl=_TTL)
        fence = LeaseCheckpoint("g", lease.partition, "a", lease.epoch, position=5)
        [result] = await store.commit([Append("out", [_event(n=1)])], lease=fence)
        assert result.version == 1
        parts = {p.partition: p.position for p in await store.partitions("g")}
        assert parts == {0: 5, 1: 0}
        # A fence without a position guards the appends and leaves the checkpoint.
        await store.append("out", [_event(n=2)], lease=LeaseCheckpoint("g", 0, "a", 1))
        assert {p.partition: p.position for p in await store.partitions("g")}[0] == 5

    async def test_a_zombie_cannot_write_after_losing_its_lease(self, store: EventStore) -> None:
        await store.ensure_partitions("g", 1, position=0)
        [old] = await store.claim_partitions("g", "zombie", limit=1, ttl=0.05)
        await asyncio.sleep(0.15)
        [new] = await store.claim_partitions("g", "heir", limit=1, ttl=_TTL)
        assert new.epoch == old.epoch + 1
        await store.commit([], lease=LeaseCheckpoint("g", 0, "heir", new.epoch, position=3))
        head = await store.head()
        stale = LeaseCheckpoint("g", 0, "zombie", old.epoch, position=99)
        with pytest.raises(LeaseLost) as caught:
            await store.commit([Append("out", [_event()])], lease=stale, dedup_key="emit:1")
        assert (caught.value.group, caught.value.partition) == ("g", 0)
        with pytest.raises(LeaseLost):
            await store.commit([], lease=stale)
        # Nothing of the zombie's commits was written: no event, no dedup key, no checkpoint.
        assert await store.head() == head
        assert [p.position for p in await store.partitions("g")] == [3]
        [fresh] = await store.commit(
            [Append("out", [_event()])],
            lease=LeaseCheckpoint("g", 0, "heir", new.epoch),
            dedup_key="emit:1",
        )
        assert not fresh.deduplicated

    async def test_same_owner_old_epoch_is_fenced(self, store: EventStore) -> None:
        await store.ensure_partitions("g", 1, position=0)
        [first] = await store.claim_partitions("g", "a", limit=1, ttl=_TTL)
        await store.release_partitions("g", "a", [0])
        [second] = await store.claim_partitions("g", "a", limit=1, ttl=_TTL)
        with pytest.raises(LeaseLost):
            await store.commit([], lease=LeaseCheckpoint("g", 0, "a", first.epoch, position=1))
        await store.commit([], lease=LeaseCheckpoint("g", 0, "a", second.epoch, position=1))
        assert [p.position for p in await store.partitions("g")] == [1]

    async def test_fence_on_unknown_partition_is_lost(self, store: EventStore) -> None:
        with pytest.raises(LeaseLost):
            await store.commit([Append("out", [_event()])], lease=LeaseCheckpoint("x", 0, "a", 1))
        assert await store.head() == 0

    async def test_fenced_commits_batch_with_others(self, store: EventStore) -> None:
        await store.ensure_partitions("g", 8, position=0)
        await store.claim_partitions("g", "a", limit=4, ttl=_TTL)
        await store.claim_partitions("g", "b", limit=4, ttl=_TTL)
        outcomes = await asyncio.gather(
            *(
                store.commit(
                    [Append(f"s{n}", [_event(n=n)])],
                    lease=LeaseCheckpoint("g", n, "a", 1, position=10 + n),
                )
                for n in range(8)
            ),
            return_exceptions=True,
        )
        assert [isinstance(o, LeaseLost) for o in outcomes] == [False] * 4 + [True] * 4
        assert await store.head() == 4
        positions = [p.position for p in await store.partitions("g")]
        assert positions == [10, 11, 12, 13, 0, 0, 0, 0]

    async def test_save_checkpoints_moves_each_partition_its_lease_still_holds(
        self, store: EventStore
    ) -> None:
        await store.ensure_partitions("g", 4, position=0)
        await store.ensure_partitions("h", 1, position=0)
        await store.claim_partitions("g", "a", limit=2, ttl=_TTL)  # 0 and 1, epoch 1
        await store.claim_partitions("g", "b", limit=2, ttl=_TTL)  # 2 and 3
        [h] = await store.claim_partitions("h", "a", limit=1, ttl=_TTL)
        outcomes = await store.save_checkpoints(
            [
                LeaseCheckpoint("g", 0, "a", 1, position=7),
                LeaseCheckpoint("g", 1, "a", 2, position=8),  # not its epoch
                LeaseCheckpoint("g", 2, "a", 1, position=9),  # b's partition
                LeaseCheckpoint("h", 0, "a", h.epoch, position=4),
                LeaseCheckpoint("x", 0, "a", 1, position=1),  # no such partition
            ]
        )
        assert [o is None for o in outcomes] == [True, False, False, True, False]
        assert all(isinstance(o, LeaseLost) for o in outcomes if o is not None)
        assert [(o.group, o.partition) for o in outcomes if o is not None] == [
            ("g", 1),
            ("g", 2),
            ("x", 0),
        ]
        assert [p.position for p in await store.partitions("g")] == [7, 0, 0, 0]
        assert [p.position for p in await store.partitions("h")] == [4]
        assert await store.save_checkpoints([]) == []
        with pytest.raises(ValueError, match="position"):
            await store.save_checkpoints([LeaseCheckpoint("g", 0, "a", 1)])
        assert await store.head() == 0  # checkpoints only: no event

    # -- concurrency slots -------------------------------------------------------------------

    async def test_slots_are_limited_per_group(self, store: EventStore) -> None:
        await store.heartbeat("w1", ttl=_TTL)
        await store.heartbeat("w2", ttl=_TTL)
        assert await store.acquire_slot("wf:a", "i1", "w1", limit=2)
        assert await store.acquire_slot("wf:a", "i2", "w2", limit=2)
        assert not await store.acquire_slot("wf:a", "i3", "w1", limit=2)
        assert await store.acquire_slot("wf:b", "i3", "w1", limit=2)  # another group
        assert await store.acquire_slot("wf:a", "i1", "w1", limit=2)  # held already
        await store.release_slot("wf:a", "i2")
        await store.release_slot("wf:a", "i2")  # releasing twice is harmless
        assert await store.acquire_slot("wf:a", "i3", "w1", limit=2)
        assert not await store.acquire_slot("wf:a", "i4", "w1", limit=2)

    async def test_a_removed_owners_slots_are_free(self, store: EventStore) -> None:
        await store.heartbeat("removed", ttl=_TTL)
        await store.heartbeat("live", ttl=_TTL)
        assert await store.acquire_slot("wf:a", "i1", "removed", limit=1)
        assert not await store.acquire_slot("wf:a", "i2", "live", limit=1)
        await store.remove_worker("removed")
        assert await store.acquire_slot("wf:a", "i2", "live", limit=1)
        # an adopted holder keeps its slot under its new owner
        assert await store.acquire_slot("wf:a", "i2", "live", limit=1)

    async def test_an_expired_owners_slots_are_free(self, store: EventStore) -> None:
        await store.heartbeat("dying", ttl=_TTL)
        await store.heartbeat("live", ttl=_TTL)
        assert await store.acquire_slot("wf:a", "i1", "dying", limit=1)
        assert not await store.acquire_slot("wf:a", "i2", "live", limit=1)
        await store.heartbeat("dying", ttl=0.05)  # its last heartbeat
        await asyncio.sleep(0.15)  # its registration lapses
        assert await store.acquire_slot("wf:a", "i2", "live", limit=1)
        assert not await store.acquire_slot("wf:a", "i1", "dying", limit=1)

    async def test_concurrent_slot_acquirers_never_exceed_the_limit(
        self, store: EventStore
    ) -> None:
        for w in range(4):
            await store.heartbeat(f"w{w}", ttl=_TTL)
        results = await asyncio.gather(
            *(store.acquire_slot("wf:c", f"i{i}", f"w{i % 4}", limit=3) for i in range(20))
        )
        assert sum(results) == 3

    async def test_reset_moves_every_partition_and_refuses_live_leases(
        self, store: EventStore
    ) -> None:
        assert await store.reset_partitions("nothing", 3) == []
        await store.ensure_partitions("g", 3, position=9)
        await store.ensure_partitions("other", 1, position=9)
        [held] = await store.claim_partitions("g", "a", limit=1, ttl=_TTL)
        with pytest.raises(PartitionsHeld) as caught:
            await store.reset_partitions("g", 2)
        assert caught.value.owners == ["a"]
        assert [p.position for p in await store.partitions("g")] == [9, 9, 9]
        # Forced: every partition moves, every epoch is bumped, every lease is revoked.
        parts = await store.reset_partitions("g", 2, force=True)
        assert [(p.partition, p.position, p.owner) for p in parts] == [
            (0, 2, None),
            (1, 2, None),
            (2, 2, None),
        ]
        assert [p.epoch for p in parts] == [held.epoch + 1, 1, 1]
        assert [p.position for p in await store.partitions("other")] == [9]
        # The old holder is fenced out; its next claim starts from the new position.
        with pytest.raises(LeaseLost):
            await store.commit([], lease=LeaseCheckpoint("g", 0, "a", held.epoch, position=10))
        assert await store.heartbeat("a", ttl=_TTL) == []
        [again] = await store.claim_partitions("g", "a", limit=1, ttl=_TTL)
        assert (again.position, again.epoch) == (2, held.epoch + 2)
        # Expired leases do not count as held.
        await store.ensure_partitions("h", 1, position=5)
        await store.claim_partitions("h", "gone", limit=1, ttl=0.05)
        await asyncio.sleep(0.15)
        [moved] = await store.reset_partitions("h", 0)
        assert moved.position == 0
