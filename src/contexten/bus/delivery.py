"""One delivery of one event to one subscription's handler: attempts, retries, parking.

:class:`Deliverer` runs the handler under the subscription's timeout, retries failures per its
:class:`~contexten.resilience.retry.RetryPolicy` (waiting on the :class:`~contexten.clock.Clock`,
so tests can skip the backoff), and parks the event in the dead-letter queue after the last
attempt. It returns only when the delivery is finished (handled or parked); a delivery cut
short by shutdown raises :class:`Abandoned` instead, so nothing half-done is acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from contexten.bus.context import HandlerContext, Publisher
from contexten.bus.dead_letters import DeadLetterQueue, park
from contexten.bus.partitions import PartitionLost
from contexten.bus.subscription import Subscription
from contexten.bus.timing import DurationHistogram
from contexten.bus.watchdog import Watchdog, WorkerSlot
from contexten.clock import Clock
from contexten.events.envelope import Event
from contexten.exceptions import HandlerCancelled, HandlerTimeout, LeaseLost, StoreError
from contexten.observability import tracing
from contexten.observability.logging import bind_event, event_fields, get_logger, reset_event
from contexten.store.base import EventStore, LeaseCheckpoint

if TYPE_CHECKING:
    from contexten.app import App

__all__ = ["Abandoned", "Deliverer", "Delivery", "DeliveryOwner", "DeliveryStats"]

_MAX_LOGGED_ERROR = 200


class Abandoned(Exception):
    """The consumer is stopping: the delivery was left unfinished, to be redelivered."""


class Delivery:
    """An event read from the log, on its way to the handler (or skipped: ``done`` at once).

    ``position`` is the log entry this delivery acknowledges; for a redrive it is the
    position of the ``redriven`` event, while ``event`` is the original event.
    """

    __slots__ = (
        "check_where",
        "done",
        "epoch",
        "event",
        "key",
        "letter_id",
        "partition",
        "position",
    )

    def __init__(
        self,
        position: int,
        event: Event | None,
        key: str | None = None,
        *,
        done: bool = False,
        check_where: bool = False,
        letter_id: str | None = None,
        partition: int = 0,
        epoch: int = 0,
    ) -> None:
        self.position = position
        self.event = event
        self.key = key
        self.done = done
        self.check_where = check_where
        self.letter_id = letter_id
        self.partition = partition
        self.epoch = epoch


class DeliveryOwner(Protocol):
    """Who a delivery belongs to: the consumer holding its partition's lease."""

    def owns(self, d: Delivery) -> bool:
        """Whether ``d``'s partition is still held, under the epoch ``d`` was read in."""
        ...

    def fence(self, d: Delivery) -> LeaseCheckpoint | None:
        """The fence the writes made for ``d`` carry (None: unfenced)."""
        ...


@dataclass
class DeliveryStats:
    """Counters of one subscription's deliveries since its dispatcher started."""

    handled: int = 0
    """Deliveries that ended with the handler succeeding (or the predicate declining)."""
    failed_attempts: int = 0
    parked: int = 0
    redriven: int = 0
    """Redriven letters delivered again (successfully or not)."""
    durations: DurationHistogram = field(default_factory=DurationHistogram)
    """How long handler attempts took (successful or not)."""


class Deliverer:
    """Runs deliveries for one subscription.

    Args:
        subscription: whose handler, retry policy and timeout to use.
        store: where dead letters go.
        clock: what backoff waits on and failure times come from.
        publish: how ``ctx.emit`` stores events.
        app: handed to handlers as ``ctx.app``.
        agents: handed to handlers as ``ctx.agents``.
    """

    def __init__(
        self,
        subscription: Subscription,
        store: EventStore,
        *,
        clock: Clock,
        publish: Publisher,
        app: App | None,
        agents: Mapping[str, Any],
    ) -> None:
        self.subscription = subscription
        self.stats = DeliveryStats()
        self.stopping = False
        self.owner: DeliveryOwner | None = None
        """Set by the consumer: whether a delivery's partition is still held, and its fence."""
        self._store = store
        self._clock = clock
        self._publish = publish
        self._app = app
        self._agents = agents
        self._pausing: set[asyncio.Task[Any]] = set()
        timeout = subscription.timeout_seconds
        self._watchdog = Watchdog(timeout) if timeout is not None else None
        self._log = get_logger("contexten.dispatcher", subscription=subscription.name)

    def watch(self, task: asyncio.Task[None]) -> WorkerSlot:
        """Register a worker task; its attempts are timed through the returned slot."""
        return self._watchdog.add(task) if self._watchdog is not None else WorkerSlot(task)

    def unwatch(self, slot: WorkerSlot) -> None:
        """Forget a worker that ended."""
        if self._watchdog is not None:
            self._watchdog.remove(slot)

    def close(self) -> None:
        """Release the timeout timer."""
        if self._watchdog is not None:
            self._watchdog.close()

    async def deliver(self, d: Delivery, slot: WorkerSlot) -> None:
        """Handle ``d`` until it succeeds or is parked, on the worker that owns ``slot``.

        Raises:
            Abandoned: the consumer began stopping while the delivery waited to retry.
            PartitionLost: the delivery's partition moved to another worker (a fenced write
                was refused, or the lease was gone before a retry): drop it.
            asyncio.CancelledError: the consumer cancelled it (shutdown past the grace time).
        """
        sub = self.subscription
        event = d.event
        assert event is not None
        if d.letter_id is not None:
            self.stats.redriven += 1
        attempt = 0
        first_failure: datetime | None = None
        while True:
            attempt += 1
            if self.owner is not None and not self.owner.owns(d):
                raise PartitionLost
            error = await self._attempt(d, event, attempt, slot)
            if isinstance(error, LeaseLost):
                raise PartitionLost from error
            if error is None:
                self.stats.handled += 1
                if d.letter_id is not None:
                    await self._resolve(d.letter_id)
                return
            now = self._clock.now()
            first_failure = first_failure or now
            self.stats.failed_attempts += 1
            if not sub.retry.should_retry(attempt, error):
                await self._park(d, event, error, attempt, first_failure, now)
                return
            delay = sub.retry.delay(attempt)
            self._log.warning(
                "handler failed; will retry",
                attempt=attempt,
                retry_in=round(delay, 3),
                error_type=type(error).__name__,
                **event_fields(event),
            )
            self._log_traceback(event, error)
            await self.pause(delay)

    async def _attempt(
        self, d: Delivery, event: Event, attempt: int, slot: WorkerSlot
    ) -> BaseException | None:
        """Run the handler once; return the error it failed with, or None."""
        sub = self.subscription
        ctx = HandlerContext(
            event,
            sub.name,
            attempt,
            position=d.position,
            store=self._store,
            publish=self._publish,
            app=self._app,
            agents=self._agents,
            lease=self.owner.fence(d) if self.owner is not None else None,
        )
        watchdog = self._watchdog
        token = bind_event(event)
        try:
            if d.check_where and sub.where is not None and not sub.where(event):
                return None
            if watchdog is not None:
                watchdog.begin(slot)
            started = time.perf_counter()
            try:
                with tracing.process_span(sub.name, event, ctx.attempt):
                    await sub.handler(event, ctx)
            finally:
                self.stats.durations.observe(time.perf_counter() - started)
        except asyncio.CancelledError:
            if watchdog is not None and watchdog.end(slot):
                slot.task.uncancel()
                return HandlerTimeout(f"handler did not finish within {watchdog.timeout:g} s")
            if self.stopping or slot.task.cancelling():
                raise
            return HandlerCancelled("the handler was cancelled")
        except Exception as e:
            if watchdog is not None:
                watchdog.end(slot)
            return e
        finally:
            reset_event(token)
        if watchdog is not None and watchdog.end(slot):
            # The handler swallowed the timeout's cancellation and finished: it decided.
            slot.task.uncancel()
        if self.stopping and slot.task.cancelling():
            # The handler swallowed a shutdown cancellation: its work may be half done.
            raise asyncio.CancelledError
        return None

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` on the clock; a stop interrupts the wait (raises Abandoned)."""
        if self.stopping:
            raise Abandoned
        task = asyncio.current_task()
        assert task is not None
        self._pausing.add(task)
        try:
            await self._clock.sleep(seconds)
        except asyncio.CancelledError:
            if self._is_stopping():
                task.uncancel()
                raise Abandoned from None
            raise
        finally:
            self._pausing.discard(task)

    def _is_stopping(self) -> bool:
        return self.stopping

    def interrupt_pauses(self) -> None:
        """Stop every wait between attempts now (called once ``stopping`` is set)."""
        for task in list(self._pausing):
            task.cancel()

    async def _park(
        self,
        d: Delivery,
        event: Event,
        error: BaseException,
        attempts: int,
        first_failure: datetime,
        last_failure: datetime,
    ) -> None:
        delay = 0.05
        while True:
            try:
                letter_id = await park(
                    self._store,
                    subscription=self.subscription.name,
                    event=event,
                    position=d.position,
                    error=error,
                    attempts=attempts,
                    first_failure_at=first_failure,
                    last_failure_at=last_failure,
                    now=self._clock.now(),
                    redriven_from=d.letter_id,
                    lease=self.owner.fence(d) if self.owner is not None else None,
                )
                break
            except LeaseLost as e:
                raise PartitionLost from e
            except StoreError as e:
                self._log.error(
                    "could not park a failed event; will try again",
                    retry_in=delay,
                    error_type=type(e).__name__,
                    error=str(e)[:_MAX_LOGGED_ERROR],  # the store's own error, not user data
                    **event_fields(event),
                )
                await self.pause(delay)
                delay = min(delay * 2, 5.0)
        self.stats.parked += 1
        self._log.error(
            "handler failed; event parked in the dead-letter queue",
            letter_id=letter_id,
            attempts=attempts,
            error_type=type(error).__name__,
            **event_fields(event),
        )
        self._log_traceback(event, error)

    def _log_traceback(self, event: Event, error: BaseException) -> None:
        # Error messages and tracebacks may quote payloads or secrets, so they go to the DLQ
        # (which already holds the payload) and to DEBUG logs only, never to INFO and above.
        self._log.debug("handler error", exc_info=error, **event_fields(event))

    async def _resolve(self, letter_id: str) -> None:
        try:
            await DeadLetterQueue(self._store, clock=self._clock).resolve(letter_id)
        except Exception as e:  # only bookkeeping: the delivery itself succeeded
            self._log.warning(
                "could not mark a redriven dead letter resolved",
                letter_id=letter_id,
                error_type=type(e).__name__,
            )
