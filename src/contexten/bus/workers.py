"""Who is delivering what: live workers, the partitions they hold, lag and heartbeat age.

:func:`workers_report` reads it from the store (so any process, or ``contexten workers``, can
ask, not only a worker), for the CLI, ``App.health()`` and metrics.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from contexten.store.base import EventStore, PartitionLease, WorkerInfo

__all__ = ["GroupReport", "WorkerReport", "WorkersReport", "workers_report"]


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """One live worker and what it holds.

    Attributes:
        worker: the worker as registered.
        partitions: subscription (``sub:{name}``) -> the partition numbers it holds.
        lag: subscription -> log entries its partitions still have to do (head minus the
            lowest checkpoint among them).
    """

    worker: WorkerInfo
    partitions: dict[str, list[int]] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    projections: list[str] = field(default_factory=list)
    """The projections it folds (it holds their leases; see
    :mod:`contexten.projections.ownership`)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        w = self.worker
        return {
            "worker_id": w.worker_id,
            "host": w.worker_id.split("/", 1)[0],
            "meta": w.meta,
            "heartbeat_age": round(w.heartbeat_age, 3),
            "expires_in": round(w.expires_in, 3),
            "draining": w.draining,
            "partitions": {g: len(ns) for g, ns in self.partitions.items()},
            "lag": dict(self.lag),
            "projections": list(self.projections),
        }


@dataclass(frozen=True, slots=True)
class GroupReport:
    """One subscription's partitions: how many, how many held, its checkpoint and lag."""

    group: str
    partitions: int
    held: int
    checkpoint: int
    lag: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "subscription": self.group.removeprefix("sub:"),
            "partitions": self.partitions,
            "held": self.held,
            "checkpoint": self.checkpoint,
            "lag": self.lag,
        }


@dataclass(frozen=True, slots=True)
class WorkersReport:
    """Every live worker and every partitioned subscription, at one moment."""

    head: int
    workers: list[WorkerReport]
    groups: list[GroupReport]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "head": self.head,
            "workers": [w.to_dict() for w in self.workers],
            "subscriptions": [g.to_dict() for g in self.groups],
        }


def _lag(head: int, parts: list[PartitionLease]) -> int:
    return max(head - min(p.position for p in parts), 0) if parts else 0


async def workers_report(store: EventStore) -> WorkersReport:
    """Read the live workers and the partitions from ``store``."""
    head = await store.head()
    live = await store.workers()
    parts = await store.partitions()
    by_owner: dict[str, dict[str, list[PartitionLease]]] = defaultdict(lambda: defaultdict(list))
    by_group: dict[str, list[PartitionLease]] = defaultdict(list)
    projections: dict[str, list[str]] = defaultdict(list)
    for p in parts:
        if not p.group.startswith("sub:"):  # a projection's lease keeps no position here
            if p.held and p.owner is not None and p.group.startswith("projection:"):
                projections[p.owner].append(p.group.removeprefix("projection:"))
            continue
        by_group[p.group].append(p)
        if p.held and p.owner is not None:
            by_owner[p.owner][p.group].append(p)
    workers = [
        WorkerReport(
            w,
            {g: [p.partition for p in ps] for g, ps in sorted(by_owner[w.worker_id].items())},
            {g: _lag(head, ps) for g, ps in sorted(by_owner[w.worker_id].items())},
            sorted(projections[w.worker_id]),
        )
        for w in live
    ]
    groups = [
        GroupReport(
            g,
            len(ps),
            sum(1 for p in ps if p.held),
            min(p.position for p in ps),
            _lag(head, ps),
        )
        for g, ps in sorted(by_group.items())
    ]
    return WorkersReport(head, workers, groups)
