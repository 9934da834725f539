"""The dispatcher: one consumer per subscription, started and stopped together.

It is the in-process bus transport: each subscription tails the store's global log on its
own (see :mod:`contexten.bus.consumer`), so a slow or failing subscription never holds up
another, and each has its own checkpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from contexten.bus.consumer import Consumer, ConsumerStatus
from contexten.bus.context import Publisher
from contexten.bus.delivery import Deliverer
from contexten.bus.subscription import Subscription
from contexten.clock import Clock
from contexten.exceptions import AppNotRunning, ConfigurationError
from contexten.observability.logging import get_logger
from contexten.resilience.supervisor import Supervisor
from contexten.store.base import EventStore

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
    ) -> None:
        self._store = store
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
            batch_size=self._batch_size,
            checkpoint_interval=self._checkpoint_interval,
        )

    async def _start_one(self, subscription: Subscription) -> None:
        consumer = self._consumer(subscription)
        self._consumers[subscription.name] = consumer
        await consumer.start()

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
        for sub in list(self._subscriptions.values()):
            await self._start_one(sub)
        self._log.info("dispatcher started", subscriptions=len(self._consumers))

    async def stop(self, grace: float = 10.0) -> None:
        """Stop every consumer: stop reading, give in-flight handlers ``grace`` seconds, cancel
        the rest without acknowledging them, save checkpoints."""
        if not self._running:
            return
        self._running = False
        if self._starting:
            await asyncio.wait(set(self._starting))
        consumers = list(self._consumers.values())
        await asyncio.gather(*(c.stop(grace) for c in consumers))
        self._consumers.clear()
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
