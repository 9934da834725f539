"""The dispatcher: this process's worker, and one consumer per subscription.

It is the in-process bus transport: each subscription tails the store's global log on its
own (see :mod:`contexten.bus.consumer`), so a slow or failing subscription never holds up
another, and each has its own checkpoints.

The dispatcher is also this process's *worker* (see :mod:`contexten.bus.partitions`): it
registers in the store, and every heartbeat renews its leases, removes workers of this host
whose process is gone, and lets each consumer rebalance its partitions. Any number of
processes with the same subscriptions share them; one alone owns every partition.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from contexten.bus.consumer import Consumer, ConsumerStatus
from contexten.bus.context import Publisher
from contexten.bus.delivery import Deliverer
from contexten.bus.partitions import LeaseSettings, local_worker_gone, new_worker_id
from contexten.bus.subscription import Subscription
from contexten.clock import Clock
from contexten.exceptions import AppNotRunning, ConfigurationError
from contexten.observability.logging import get_logger
from contexten.resilience.supervisor import Supervisor
from contexten.store.base import EventStore, PartitionLease, WorkerInfo

if TYPE_CHECKING:
    from contexten.app import App

__all__ = ["Dispatcher"]


class Dispatcher:
    """Delivers stored events to every subscription's handler.

    Args:
        store: the event store (opened by the caller before :meth:`start`).
        clock: for retry backoff and failure times.
        supervisor: runs each consumer's background loops.
        publish: how handlers' ``ctx.emit`` stores events.
        app: handed to handlers as ``ctx.app``.
        agents: handed to handlers as ``ctx.agents``.
        batch_size: log entries read per query.
        checkpoint_interval: seconds between checkpoint saves, at most.
        leases: partitions, lease and heartbeat times (default: from the environment, see
            :meth:`LeaseSettings.from_env`).
        worker_id: this process's worker id (default: ``host/pid/random``).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        clock: Clock,
        supervisor: Supervisor,
        publish: Publisher,
        app: App | None = None,
        agents: Mapping[str, Any] | None = None,
        batch_size: int = 500,
        checkpoint_interval: float = 0.05,
        leases: LeaseSettings | None = None,
        worker_id: str | None = None,
    ) -> None:
        self._store = store
        self._leases = leases
        self.worker_id = worker_id or new_worker_id()
        """This process's worker id: the owner its partition leases name."""
        self._heartbeat_task = f"dispatch:heartbeat:{self.worker_id}"
        self._live: list[WorkerInfo] = []
        self._held: list[PartitionLease] = []
        self._clock = clock
        self._supervisor = supervisor
        self._publish = publish
        self._app = app
        self._agents: Mapping[str, Any] = agents if agents is not None else MappingProxyType({})
        self._batch_size = batch_size
        self._checkpoint_interval = checkpoint_interval
        self._subscriptions: dict[str, Subscription] = {}
        self._consumers: dict[str, Consumer] = {}
        self._starting: set[asyncio.Task[None]] = set()
        self._running = False
        self._log = get_logger("contexten.dispatcher")
        self.extra_groups: list[str] = []
        """Lease groups of other parts of this process (the projections' ``projection:*``)
        that this worker takes part in; its heartbeat registers them with the
        subscriptions' and renews their leases with the rest."""

    @property
    def subscriptions(self) -> Mapping[str, Subscription]:
        """The registered subscriptions by name."""
        return MappingProxyType(self._subscriptions)

    @property
    def consumers(self) -> Mapping[str, Consumer]:
        """The running consumers by subscription name (empty when stopped)."""
        return MappingProxyType(self._consumers)

    @property
    def running(self) -> bool:
        """Whether :meth:`start` ran and :meth:`stop` did not."""
        return self._running

    def add(self, subscription: Subscription) -> None:
        """Register ``subscription``; if the dispatcher runs, start delivering to it now.

        Raises:
            ConfigurationError: another subscription has that name.
        """
        if subscription.name in self._subscriptions:
            raise ConfigurationError(
                f"a subscription named {subscription.name!r} already exists; "
                "give the handler a unique name=..."
            )
        self._subscriptions[subscription.name] = subscription
        if self._running:
            task = asyncio.get_running_loop().create_task(self._start_later(subscription))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    @property
    def leases(self) -> LeaseSettings:
        """The partition and lease settings in effect."""
        if self._leases is None:
            self._leases = LeaseSettings.from_env()
        return self._leases

    @property
    def live_workers(self) -> list[WorkerInfo]:
        """The live workers as of the last heartbeat (this one included)."""
        return list(self._live)

    async def _beat(self, *, draining: bool = False) -> list[WorkerInfo]:
        """Renew this worker and its leases; return the live workers (reaping dead local ones)."""
        settings = self.leases
        groups = [s.checkpoint_name for s in self._subscriptions.values()]
        groups.extend(self.extra_groups)
        held = await self._store.heartbeat(
            self.worker_id,
            ttl=settings.lease,
            groups=groups,
            meta=f"pid {os.getpid()} {os.path.basename(sys.argv[0]) if sys.argv else ''}".strip(),
            draining=draining,
        )
        live = await self._store.workers()
        if settings.reap_local:
            for worker in live:
                if local_worker_gone(worker.worker_id):
                    self._log.warning(
                        "removing a dead worker of this host", worker=worker.worker_id
                    )
                    await self._store.remove_worker(worker.worker_id)
            live = [w for w in live if not local_worker_gone(w.worker_id)]
        self._live = live
        self._held = held
        return live

    async def _heartbeat_loop(self) -> None:
        interval = self.leases.heartbeat
        while True:
            await asyncio.sleep(interval)
            live = await self._beat()
            for consumer in list(self._consumers.values()):
                if not consumer.stopping:
                    await consumer.rebalance(self._held, live)

    def _consumer(self, subscription: Subscription) -> Consumer:
        deliverer = Deliverer(
            subscription,
            self._store,
            clock=self._clock,
            publish=self._publish,
            app=self._app,
            agents=self._agents,
        )
        return Consumer(
            deliverer,
            self._store,
            supervisor=self._supervisor,
            worker_id=self.worker_id,
            leases=self.leases,
            batch_size=self._batch_size,
            checkpoint_interval=self._checkpoint_interval,
        )

    async def _start_one(self, subscription: Subscription) -> None:
        consumer = self._consumer(subscription)
        self._consumers[subscription.name] = consumer
        live = await self._beat()
        await consumer.start(self._held, live)

    async def _start_later(self, subscription: Subscription) -> None:
        try:
            await self._start_one(subscription)
        except Exception as e:
            self._consumers.pop(subscription.name, None)
            self._log.error(
                "could not start a subscription added at run time",
                subscription=subscription.name,
                exc_info=e,
            )

    async def start(self) -> None:
        """Start a consumer for every subscription (each from its checkpoint)."""
        if self._running:
            return
        self._running = True
        self._held = []
        if self._subscriptions or self.extra_groups:
            live = await self._beat()
            for sub in list(self._subscriptions.values()):
                consumer = self._consumer(sub)
                self._consumers[sub.name] = consumer
                await consumer.start(self._held, live)
        self._supervisor.start(self._heartbeat_task, self._heartbeat_loop)
        self._log.info(
            "dispatcher started", subscriptions=len(self._consumers), worker=self.worker_id
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop every consumer: stop reading, give in-flight handlers ``grace`` seconds, cancel
        the rest without acknowledging them, save checkpoints."""
        if not self._running:
            return
        self._running = False
        if self._starting:
            await asyncio.wait(set(self._starting))
        await self._supervisor.stop(self._heartbeat_task)
        consumers = list(self._consumers.values())
        if consumers or self.extra_groups:
            try:  # tell the others at once that this worker's share is theirs to take
                await self._beat(draining=True)
            except Exception as e:
                self._log.warning("could not announce draining", error_type=type(e).__name__)
        await asyncio.gather(*(c.stop(grace) for c in consumers))
        self._consumers.clear()
        try:
            await self._store.remove_worker(self.worker_id)
        except Exception as e:
            self._log.warning(
                "could not deregister the worker; its leases will lapse",
                error_type=type(e).__name__,
            )
        self._log.info("dispatcher stopped")

    async def drain(self) -> None:
        """Wait until every subscription is done with everything stored so far, including
        what its handlers emit meanwhile; then save the checkpoints.

        Raises:
            AppNotRunning: the dispatcher is not running (or stopped meanwhile).
        """
        if not self._running:
            raise AppNotRunning("the dispatcher is not running")
        while True:
            if self._starting:
                await asyncio.wait(set(self._starting))
            head = await self._store.head()
            for consumer in list(self._consumers.values()):
                await consumer.wait_until(head)
            if await self._store.head() == head and not self._starting:
                break
        for consumer in list(self._consumers.values()):
            await consumer.flush()

    def statuses(self) -> list[ConsumerStatus]:
        """A progress snapshot of every running subscription."""
        return [c.status() for c in self._consumers.values()]
