"""The in-memory event store (``memory://``): the reference backend and the test double.

Same semantics as the durable backends, minus durability. Every commit is applied under one
lock in the event loop, so positions are gapless and in commit order trivially.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contexten.events.codec import encode_event
from contexten.events.envelope import utcnow
from contexten.exceptions import InvalidEvent, LeaseLost, PartitionsHeld, StoreClosed
from contexten.store.base import (
    Append,
    AppendResult,
    EventStore,
    HeadNotifier,
    LeaseCheckpoint,
    PartitionLease,
    RecordedEvent,
    StreamInfo,
    StreamState,
    WorkerInfo,
    check_expected_version,
    check_lease_checkpoint,
    is_system_stream,
)
from contexten.store.retention import Candidate, Pruned, without_data

__all__ = ["MemoryEventStore"]


@dataclass(slots=True)
class _Worker:
    groups: tuple[str, ...]
    meta: str
    started: float
    beat: float
    expires: float
    draining: bool


@dataclass(slots=True)
class _Partition:
    owner: str | None
    epoch: int
    position: int
    expires: float | None


class MemoryEventStore(EventStore):
    """Keeps everything in process memory; lost when the process ends."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._log: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._by_id: dict[str, RecordedEvent] = {}
        self._dedup: dict[str, list[AppendResult]] = {}
        self._dedup_at: dict[str, datetime] = {}
        self._pruned: set[int] = set()
        self._checkpoints: dict[str, int] = {}
        self._workers: dict[str, _Worker] = {}
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._slots: dict[str, dict[str, str]] = {}  # group -> holder -> owner
        self._notifier = HeadNotifier()
        self._closed = False

    async def open(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        self._notifier.fail(StoreClosed(f"{self.url} was closed"))

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"{self.url} is closed")

    async def commit(
        self,
        appends: Sequence[Append],
        *,
        dedup_key: str | None = None,
        checkpoint: tuple[str, int] | None = None,
        lease: LeaseCheckpoint | None = None,
    ) -> list[AppendResult]:
        self._check_open()
        # Runs without an await between check and write, so it is atomic in the event loop.
        if lease is not None:
            check_lease_checkpoint(lease)
            self._fence(lease)
        elif len(appends) == 1 and dedup_key is None and checkpoint is None:
            return [self._append_one(appends[0])]
        if dedup_key is not None and dedup_key in self._dedup:
            return [_deduplicated(r) for r in self._dedup[dedup_key]]
        pending: dict[str, int] = {}
        seen_ids: set[str] = set()
        for a in appends:
            actual = pending.get(a.stream, len(self._streams.get(a.stream, ())))
            check_expected_version(a.stream, a.expected_version, actual)
            pending[a.stream] = actual + len(a.events)
            for e in a.events:
                if e.id in self._by_id or e.id in seen_ids:
                    raise InvalidEvent(f"event id {e.id} is already stored")
                seen_ids.add(e.id)
        now = utcnow()
        results = []
        for a in appends:
            if not a.events:  # an empty append changes nothing (and creates no stream)
                version = len(self._streams.get(a.stream, ()))
                results.append(AppendResult(a.stream, version, 0, 0))
                continue
            stream = self._streams.setdefault(a.stream, [])
            first = len(self._log) + 1
            for e in a.events:
                rec = RecordedEvent(len(self._log) + 1, a.stream, len(stream) + 1, now, e)
                self._log.append(rec)
                stream.append(rec)
                self._by_id[e.id] = rec
            results.append(AppendResult(a.stream, len(stream), first, len(self._log)))
        if dedup_key is not None:
            self._dedup[dedup_key] = results
            self._dedup_at[dedup_key] = now
        if checkpoint is not None:
            self._checkpoints[checkpoint[0]] = checkpoint[1]
        if lease is not None and lease.position is not None:
            self._partitions[lease.group, lease.partition].position = lease.position
        self._notifier.advance(len(self._log))
        return results

    def _fence(self, lease: LeaseCheckpoint) -> None:
        part = self._partitions.get((lease.group, lease.partition))
        if part is None:
            raise LeaseLost(lease.group, lease.partition, "no such partition")
        if part.owner != lease.owner or part.epoch != lease.epoch:
            raise LeaseLost(lease.group, lease.partition, f"now at epoch {part.epoch}")

    def _append_one(self, a: Append) -> AppendResult:
        """The common case (one stream, no dedup key, no checkpoint), without the general
        path's bookkeeping; same checks, same result."""
        stream = self._streams.get(a.stream)
        version = len(stream) if stream is not None else 0
        if a.expected_version is not StreamState.ANY:
            check_expected_version(a.stream, a.expected_version, version)
        events = a.events
        if not events:
            return AppendResult(a.stream, version, 0, 0)
        by_id = self._by_id
        if len(events) == 1:
            if events[0].id in by_id:
                raise InvalidEvent(f"event id {events[0].id} is already stored")
        elif len({e.id for e in events}) != len(events) or any(e.id in by_id for e in events):
            raise InvalidEvent("an event id in the batch is already stored or repeated")
        if stream is None:
            stream = self._streams[a.stream] = []
        log = self._log
        now = utcnow()
        first = len(log) + 1
        for e in events:
            rec = RecordedEvent(len(log) + 1, a.stream, len(stream) + 1, now, e)
            log.append(rec)
            stream.append(rec)
            by_id[e.id] = rec
        self._notifier.advance(len(log))
        return AppendResult(a.stream, len(stream), first, len(log))

    async def read_stream(
        self,
        stream: str,
        *,
        from_version: int = 1,
        limit: int | None = None,
        as_of: datetime | None = None,
    ) -> list[RecordedEvent]:
        self._check_open()
        recs = self._streams.get(stream, [])[max(from_version, 1) - 1 :]
        if as_of is not None:
            recs = [r for r in recs if r.recorded_at <= as_of]
        return recs[:limit] if limit is not None else list(recs)

    async def read_all(
        self, *, after: int = 0, limit: int = 1000, as_of: datetime | None = None
    ) -> list[RecordedEvent]:
        self._check_open()
        recs = self._log[max(after, 0) : max(after, 0) + limit]
        if as_of is not None:
            recs = [r for r in recs if r.recorded_at <= as_of]
        return recs

    async def read_all_backwards(
        self, *, before: int | None = None, limit: int = 100
    ) -> list[RecordedEvent]:
        self._check_open()
        end = len(self._log) if before is None else max(min(before - 1, len(self._log)), 0)
        start = max(end - limit, 0)
        return list(reversed(self._log[start:end]))

    async def get_event(self, event_id: str) -> RecordedEvent | None:
        self._check_open()
        return self._by_id.get(event_id)

    async def stream_version(self, stream: str) -> int:
        self._check_open()
        return len(self._streams.get(stream, ()))

    async def list_streams(self, prefix: str = "", *, limit: int = 10_000) -> list[StreamInfo]:
        self._check_open()
        names = sorted(n for n in self._streams if n.startswith(prefix))
        return [StreamInfo(n, len(self._streams[n])) for n in names[:limit]]

    async def head(self) -> int:
        self._check_open()
        return len(self._log)

    async def wait_for_new(self, after: int, timeout: float | None = None) -> int:
        self._check_open()
        return await self._notifier.wait(after, timeout)

    async def get_checkpoint(self, name: str) -> int | None:
        self._check_open()
        return self._checkpoints.get(name)

    async def save_checkpoint(self, name: str, position: int) -> None:
        self._check_open()
        self._checkpoints[name] = position

    async def ping(self) -> None:
        self._check_open()
        await asyncio.sleep(0)

    # -- retention (contexten.store.retention.PrunableStore) -------------------------------

    async def prune_dedup(self, before: datetime, *, dry_run: bool = False) -> int:
        """Delete the dedup keys recorded before ``before`` (or count them)."""
        self._check_open()
        old = [key for key, at in self._dedup_at.items() if at < before]
        if not dry_run:
            for key in old:
                del self._dedup[key], self._dedup_at[key]
        return len(old)

    async def retention_candidates(
        self, *, before: datetime, after: int = 0, limit: int = 1000
    ) -> list[Candidate]:
        """Unpruned events outside system streams recorded before ``before``, in log order."""
        self._check_open()
        out: list[Candidate] = []
        for rec in self._log[max(after, 0) :]:
            if rec.recorded_at >= before or len(out) >= limit:
                break
            if rec.position in self._pruned or is_system_stream(rec.stream):
                continue
            size = len(encode_event(rec.event))
            out.append(Candidate(rec.position, rec.stream, rec.event.type, rec.recorded_at, size))
        return out

    async def prune_event_data(
        self, positions: Sequence[int], marker: Mapping[str, Any], *, at: datetime
    ) -> list[Pruned]:
        """Replace the data of the events at ``positions`` by the pruned marker."""
        self._check_open()
        done: list[Pruned] = []
        for position in positions:
            if position in self._pruned or not 0 < position <= len(self._log):
                continue
            old = self._log[position - 1]
            event = without_data(old.event, marker, len(encode_event(old.event)))
            rec = RecordedEvent(old.position, old.stream, old.version, old.recorded_at, event)
            self._log[position - 1] = rec
            self._streams[rec.stream][rec.version - 1] = rec
            self._by_id[event.id] = rec
            self._pruned.add(position)
            done.append(Pruned(position, event.correlation_id))
        return done

    async def storage_bytes(self) -> int:
        """The encoded size of every event and dedup key held (an estimate of memory)."""
        self._check_open()
        return sum(len(encode_event(r.event)) for r in self._log) + sum(
            len(key) for key in self._dedup
        )

    async def reclaim_space(self) -> None:
        """Nothing to do: memory freed by pruning is the garbage collector's."""
        self._check_open()

    # -- workers and partition leases ------------------------------------------------------

    async def heartbeat(
        self,
        worker_id: str,
        *,
        ttl: float,
        groups: Sequence[str] | None = None,
        meta: str | None = None,
        draining: bool = False,
    ) -> list[PartitionLease]:
        self._check_open()
        now = time.time()
        worker = self._workers.get(worker_id)
        if worker is None:
            worker = self._workers[worker_id] = _Worker((), "", now, now, now, draining)
        if groups is not None:
            worker.groups = tuple(groups)
        if meta is not None:
            worker.meta = meta
        worker.beat, worker.expires, worker.draining = now, now + ttl, draining
        held = []
        for (group, number), part in sorted(self._partitions.items()):
            if part.owner == worker_id:
                part.expires = now + ttl
                held.append(_lease(group, number, part, now))
        return held

    async def remove_worker(self, worker_id: str) -> None:
        self._check_open()
        self._workers.pop(worker_id, None)
        for holders in self._slots.values():
            for holder in [h for h, owner in holders.items() if owner == worker_id]:
                del holders[holder]
        for part in self._partitions.values():
            if part.owner == worker_id:
                part.owner, part.expires = None, None

    async def workers(self) -> list[WorkerInfo]:
        self._check_open()
        now = time.time()
        return [
            WorkerInfo(
                worker_id,
                w.groups,
                w.meta,
                _utc(w.started),
                _utc(w.beat),
                now - w.beat,
                w.expires - now,
                w.draining,
            )
            for worker_id, w in sorted(self._workers.items())
            if w.expires > now
        ]

    async def ensure_partitions(self, group: str, count: int, *, position: int) -> int:
        self._check_open()
        existing = sum(1 for g, _ in self._partitions if g == group)
        if existing:
            return existing
        for number in range(count):
            self._partitions[group, number] = _Partition(None, 0, position, None)
        return count

    async def claim_partitions(
        self, group: str, worker_id: str, *, limit: int, ttl: float
    ) -> list[PartitionLease]:
        self._check_open()
        now = time.time()
        claimed: list[PartitionLease] = []
        for (g, number), part in sorted(self._partitions.items()):
            if len(claimed) >= limit:
                break
            if g != group or (part.expires is not None and part.expires > now and part.owner):
                continue
            part.owner, part.epoch, part.expires = worker_id, part.epoch + 1, now + ttl
            claimed.append(_lease(group, number, part, now))
        return claimed

    async def release_partitions(
        self, group: str, worker_id: str, partitions: Sequence[int]
    ) -> None:
        self._check_open()
        for number in partitions:
            part = self._partitions.get((group, number))
            if part is not None and part.owner == worker_id:
                part.owner, part.expires = None, None

    async def reset_partitions(
        self, group: str, position: int, *, force: bool = False
    ) -> list[PartitionLease]:
        self._check_open()
        now = time.time()
        mine = sorted((n, p) for (g, n), p in self._partitions.items() if g == group)
        held = [p.owner for _, p in mine if p.owner and p.expires is not None and p.expires > now]
        if held and not force:
            raise PartitionsHeld(group, sorted(set(held)))
        for _, part in mine:
            part.position, part.epoch = position, part.epoch + 1
            part.owner, part.expires = None, None
        return [_lease(group, number, part, now) for number, part in mine]

    async def partitions(self, group: str | None = None) -> list[PartitionLease]:
        self._check_open()
        now = time.time()
        return [
            _lease(g, number, part, now)
            for (g, number), part in sorted(self._partitions.items())
            if group is None or g == group
        ]

    async def acquire_slot(self, group: str, holder: str, owner: str, *, limit: int) -> bool:
        self._check_open()
        now = time.time()
        holders = self._slots.setdefault(group, {})
        for dead in [h for h, o in holders.items() if not self._live(o, now)]:
            del holders[dead]
        if holder not in holders and len(holders) >= limit:
            return False
        holders[holder] = owner
        return True

    async def release_slot(self, group: str, holder: str) -> None:
        self._check_open()
        holders = self._slots.get(group)
        if holders is not None:
            holders.pop(holder, None)
            if not holders:
                del self._slots[group]

    def _live(self, worker_id: str, now: float) -> bool:
        worker = self._workers.get(worker_id)
        return worker is not None and worker.expires > now


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _lease(group: str, number: int, part: _Partition, now: float) -> PartitionLease:
    expires_in = None if part.expires is None else part.expires - now
    return PartitionLease(group, number, part.owner, part.epoch, part.position, expires_in)


def _deduplicated(r: AppendResult) -> AppendResult:
    return AppendResult(r.stream, r.version, r.first_position, r.last_position, True)
