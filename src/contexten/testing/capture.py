"""Capture the events an app stores, to assert on them in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Self

from contexten.bus.context import HandlerContext
from contexten.bus.subscription import Subscription
from contexten.events.envelope import Event
from contexten.events.patterns import compile_pattern
from contexten.resilience.retry import RetryPolicy

if TYPE_CHECKING:
    from contexten.app import App

__all__ = ["EventCapture"]


def _one_lane(event: Event) -> str:
    return "capture"


class EventCapture:
    """Collects every event an app's store gets (published, emitted, ingested), in log order.

    It is an ordinary subscription (named ``name``) on the app, so it sees exactly what
    handlers see, from the beginning of the log::

        capture = EventCapture().attach(app)
        ...
        [reply] = await capture.wait_for("contexten.reply.sent")

    Args:
        patterns: which event types to keep (default: all).
        name: the subscription's name.
        include_system: also keep events of ``$`` system streams (dead letters...).
    """

    def __init__(
        self,
        patterns: str | Sequence[str] = "**",
        *,
        name: str = "contexten.testing.capture",
        include_system: bool = False,
    ) -> None:
        self.subscription = Subscription(
            name=name,
            patterns=patterns,
            handler=self._capture,
            retry=RetryPolicy.no_retries(),
            concurrency=1,
            timeout=None,
            key=_one_lane,
            include_system=include_system,
            echoes=True,  # every stored event, our own actions' webhooks included
        )
        self._events: list[Event] = []
        self._waiters: list[tuple[str, int, asyncio.Future[list[Event]]]] = []

    def attach(self, app: App) -> Self:
        """Subscribe to ``app``; returns self."""
        app.add_subscription(self.subscription)
        return self

    async def _capture(self, event: Event, ctx: HandlerContext) -> None:
        self._events.append(event)
        if self._waiters:
            still = []
            for pattern, count, fut in self._waiters:
                found = self.of_type(pattern)
                if len(found) >= count:
                    if not fut.done():
                        fut.set_result(found)
                else:
                    still.append((pattern, count, fut))
            self._waiters = still

    @property
    def events(self) -> list[Event]:
        """Everything captured so far, in log order (a copy)."""
        return list(self._events)

    def of_type(self, pattern: str = "**") -> list[Event]:
        """The captured events whose type matches ``pattern``."""
        matcher = compile_pattern(pattern)
        return [e for e in self._events if matcher.matches(e.type)]

    def caused_by(self, event: Event) -> list[Event]:
        """The captured events whose ``causation_id`` is ``event``'s id."""
        return [e for e in self._events if e.causation_id == event.id]

    def clear(self) -> None:
        """Forget what was captured."""
        self._events.clear()

    async def wait_for(
        self, pattern: str = "**", count: int = 1, *, timeout: float | None = 5.0
    ) -> list[Event]:
        """Wait until at least ``count`` events matching ``pattern`` are captured; return all
        the matching ones.

        Raises:
            TimeoutError: not enough arrived within ``timeout`` seconds (the message says what
                did arrive).
        """
        found = self.of_type(pattern)
        if len(found) >= count:
            return found
        fut: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        entry = (pattern, count, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            seen = sorted({e.type for e in self._events})
            raise TimeoutError(
                f"waited {timeout} s for {count} event(s) matching {pattern!r}, "
                f"got {len(self.of_type(pattern))}; captured types: {seen}"
            ) from None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(list(self._events))
