"""Which process runs which projection: one owner at a time, by lease.

Every dispatching process used to fold every projection over the whole log; with several
workers on one store, the copies did the same work and fought over each checkpoint. Now each
projection is a lease group of one partition, ``projection:{name}``, held through the same
worker registry as the subscriptions' partitions (see :mod:`contexten.bus.partitions`): the
dispatcher's heartbeat renews these leases with the others, a dead worker's lapse (or, for a
dead process of this host, are freed at once), and a draining worker releases them.

**Fair share.** A worker aims at ``ceil(projections / live workers)`` projections, claiming
free ones in registration order and releasing its extras when workers join, so the read
side's CPU is spread like the subscriptions' (one busy worker would otherwise carry all of
it), while each worker still reads the log once for all the projections it holds
(:class:`~contexten.projections.fanout.ProjectionFanout`).

**Why a zombie cannot do harm.** The read models live beside the event store but are
written through their own backend and connections, so their commits are not fenced by the
lease epoch. They need not be: every batch commits its rows and its checkpoint in one
transaction, conditional on the checkpoint it started from (a compare-and-swap). A former
owner that lost its lease (paused, partitioned) either commits before the new owner (a
correct batch straight after the checkpoint; the new owner's commit then meets the moved
checkpoint, drops its batch and re-reads) or after it (its own commit fails and writes
nothing). Either way no event is applied twice or skipped; the lease only makes sure that
one process does the work. The zombie notices at its next check (every heartbeat) and stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from contexten.bus.partitions import LeaseSettings, fair_share, local_worker_gone
from contexten.observability.logging import get_logger
from contexten.projections.fanout import ProjectionFanout
from contexten.projections.runner import ProjectionRunner
from contexten.store.base import EventStore

__all__ = ["GROUP_PREFIX", "ProjectionOwnership", "projection_group"]

GROUP_PREFIX = "projection:"


def projection_group(name: str) -> str:
    """The lease group of projection ``name`` (one partition: its only owner)."""
    return f"{GROUP_PREFIX}{name}"


class ProjectionOwnership:
    """Claims, keeps and hands back this worker's share of the projections.

    Args:
        store: the event store holding the worker registry and the leases.
        runners: every registered projection's runner, by name, in registration order.
        fanout: where the projections this worker holds are folded.
        worker_id: this process's worker (the dispatcher's: its heartbeat renews the leases).
        leases: lease and heartbeat times.
    """

    def __init__(
        self,
        store: EventStore,
        runners: Mapping[str, ProjectionRunner],
        fanout: ProjectionFanout,
        *,
        worker_id: str,
        leases: LeaseSettings,
    ) -> None:
        self.store = store
        self.runners = runners
        self.fanout = fanout
        self.worker_id = worker_id
        self.leases = leases
        self._ensured: set[str] = set()
        self._log = get_logger("contexten.projections").bind(worker=worker_id)

    @property
    def groups(self) -> list[str]:
        """The lease groups of the projections (for the worker's registration)."""
        return [projection_group(name) for name in self.runners]

    async def _held(self) -> dict[str, int]:
        """The projections whose lease this worker holds now, with the lease's epoch."""
        held: dict[str, int] = {}
        for name in self.runners:
            group = projection_group(name)
            if group not in self._ensured:
                await self.store.ensure_partitions(group, 1, position=0)
                self._ensured.add(group)
            for part in await self.store.partitions(group):
                if part.owner == self.worker_id and part.held:
                    held[name] = part.epoch
        return held

    async def rebalance(self) -> None:
        """One round: stop what this worker lost, hand back extras, claim its share."""
        live = await self.store.workers()
        others = [
            w
            for w in live
            if w.worker_id != self.worker_id
            and w.alive
            and not w.draining
            and any(g.startswith(GROUP_PREFIX) for g in w.groups)
            and not (self.leases.reap_local and local_worker_gone(w.worker_id))
        ]
        target = fair_share(len(self.runners), len(others) + 1)
        held = await self._held()
        for name in self.fanout.names:
            if name not in held:
                self._log.warning("projection lease lost; another worker runs it", projection=name)
                await self.fanout.leave(name)
        extra = [name for name in self.runners if name in held][target:]
        for name in extra:
            await self.fanout.leave(name)
            await self.store.release_partitions(projection_group(name), self.worker_id, [0])
            del held[name]
            self._log.info("projection handed back (workers joined)", projection=name)
        for name, runner in self.runners.items():
            if name in held:
                await self.fanout.join(runner)  # a no-op unless a join failed before
                continue
            if len(held) >= target:
                continue
            claimed = await self.store.claim_partitions(
                projection_group(name), self.worker_id, limit=1, ttl=self.leases.lease
            )
            if claimed:
                held[name] = claimed[0].epoch
                # debug: every start claims them all, and `contexten workers` shows who holds
                # which; losing one is a warning, handing one back is info.
                self._log.debug("projection claimed", projection=name, epoch=claimed[0].epoch)
                await self.fanout.join(runner)

    async def run(self) -> None:
        """Rebalance every heartbeat, forever (for the supervisor)."""
        while True:
            await self.rebalance()
            await asyncio.sleep(self.leases.heartbeat)

    async def release(self) -> None:
        """Stop every projection here and free their leases (a draining worker), so the
        other workers take them at their next heartbeat."""
        await self.fanout.leave_all()
        for name in self.runners:  # frees only what this worker holds
            try:
                await self.store.release_partitions(projection_group(name), self.worker_id, [0])
            except Exception as e:  # the lease lapses instead
                self._log.warning(
                    "could not release a projection's lease; it lapses",
                    projection=name,
                    error_type=type(e).__name__,
                )
