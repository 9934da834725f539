"""What a handler gets besides the event: :class:`HandlerContext`."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol

from contexten.events.envelope import Event
from contexten.observability.logging import event_fields, get_logger
from contexten.store.base import AppendResult, EventStore, LeaseCheckpoint

if TYPE_CHECKING:
    from contexten.app import App

__all__ = ["HandlerContext", "Publisher"]


class Publisher(Protocol):
    """``publish(event, stream, dedup_key, lease=...)``: store an event (None stream: the
    default stream), fenced by ``lease`` when given (see
    :class:`~contexten.store.base.LeaseCheckpoint`)."""

    def __call__(
        self,
        event: Event,
        stream: str | None,
        dedup_key: str | None,
        /,
        lease: LeaseCheckpoint | None = None,
    ) -> Awaitable[AppendResult]:
        """Store ``event``; see the class docstring."""
        ...


_NO_AGENTS: Final[Mapping[str, Any]] = MappingProxyType({})


class HandlerContext:
    """The handler's view of the delivery it is working on.

    Attributes:
        event: the event being handled.
        subscription: the subscription's name.
        attempt: 1 for the first attempt, 2 for the first retry... (a redrive starts at 1).
        position: the log position this delivery came from.
        store: the event store (to read history; publish with :meth:`emit`).
        app: the :class:`~contexten.app.App` running the handler, if any.
        agents: the agents handlers act through: the App's
            :class:`~contexten.agents.AgentManager` (``ctx.agents.slack.post_message(...)``);
            an empty mapping for a dispatcher used without an App.
    """

    __slots__ = (
        "_emits",
        "_lease",
        "_logger",
        "_publish",
        "agents",
        "app",
        "attempt",
        "event",
        "position",
        "store",
        "subscription",
    )

    def __init__(
        self,
        event: Event,
        subscription: str,
        attempt: int,
        *,
        position: int,
        store: EventStore,
        publish: Publisher,
        app: App | None = None,
        agents: Any = _NO_AGENTS,
        lease: LeaseCheckpoint | None = None,
    ) -> None:
        self.event = event
        self.subscription = subscription
        self.attempt = attempt
        self.position = position
        self.store = store
        self.app = app
        self.agents: Any = agents
        self._publish = publish
        self._emits = 0
        self._lease = lease
        self._logger: Any = None

    @property
    def idempotency_key(self) -> str:
        """``{subscription}:{event id}``: the same for every (re)delivery of this event here.

        Use it as the idempotency key of outbound calls, or as a tracking-record key, to make
        at-least-once delivery take effect once.
        """
        return f"{self.subscription}:{self.event.id}"

    @property
    def logger(self) -> Any:
        """A structlog logger bound to this delivery (event id, type, correlation id)."""
        if self._logger is None:
            self._logger = get_logger(
                "contexten.handler",
                subscription=self.subscription,
                attempt=self.attempt,
                **event_fields(self.event),
            )
        return self._logger

    async def emit(
        self,
        event_or_type: Event | str,
        data: dict[str, Any] | None = None,
        *,
        stream: str | None = None,
        **fields: Any,
    ) -> AppendResult:
        """Publish a follow-up event caused by the one being handled.

        Give a type (plus ``data`` and envelope ``fields``) or a ready :class:`Event`. The new
        event inherits the correlation id (unless it sets one) and its ``causation_id`` is the
        handled event's id. Each emit is stored once per delivery, however often the handler
        is retried or redelivered: the n-th emit of a run carries the dedup key
        ``emit:{subscription}:{event id}:{n}``, so the store keeps the first one and returns
        its position to the repeats. Handlers that emit should therefore emit the same things
        in the same order on every run.

        The emit is fenced by the lease on the event's partition: once another worker took
        that partition over, it raises :class:`~contexten.exceptions.LeaseLost` and stores
        nothing, and the delivery is dropped here (the new owner makes it).
        """
        if isinstance(event_or_type, Event):
            if data is not None or fields:
                raise TypeError("emit(Event) takes no data or fields; build them into the event")
            event = event_or_type
            changes: dict[str, Any] = {}
            if event.causation_id is None:
                changes["causation_id"] = self.event.id
            if event.correlation_id is None and self.event.correlation_id is not None:
                changes["correlation_id"] = self.event.correlation_id
            if changes:
                event = event.replace(**changes)
        else:
            event = self.event.caused(event_or_type, data, **fields)
        index = self._emits
        self._emits += 1
        return await self._publish(
            event, stream, f"emit:{self.subscription}:{self.event.id}:{index}", lease=self._lease
        )

    def __repr__(self) -> str:
        return (
            f"HandlerContext(subscription={self.subscription!r}, event={self.event.id!r}, "
            f"attempt={self.attempt})"
        )
