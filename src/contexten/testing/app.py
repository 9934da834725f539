"""An in-memory app for tests: :class:`TestApp` and :func:`create_test_app`."""

from __future__ import annotations

from typing import Any

from contexten.app import App
from contexten.clock import Clock
from contexten.store.base import EventStore
from contexten.testing.capture import EventCapture
from contexten.testing.clock import VirtualClock

__all__ = ["TestApp", "create_test_app"]


class TestApp(App):
    """An :class:`App` on ``memory://`` with an :class:`EventCapture` attached.

    Use it like the real thing; ``await app.drain()`` waits until every handler is done with
    everything published so far, and ``app.capture`` holds every stored event. Time is
    virtual: retry backoffs and timers skip ahead whenever nothing else can run, so a handler
    retried with a one-hour backoff is retried at once. That includes timeouts: a test that
    sleeps on real time (polling for a workflow to reach ``waiting``, say) lets a
    ``wf.wait_for(..., timeout=...)`` expire at once; pass ``clock=WallClock()`` (or a manual
    ``VirtualClock()``) for such a test::

        app = create_test_app()

        @app.on("demo.ping")
        async def pong(event, ctx):
            await ctx.emit("demo.pong")

        async with app:
            await app.publish(Event(type="demo.ping"))
            await app.drain()
        assert [e.type for e in app.capture.of_type("demo.pong")] == ["demo.pong"]

    Args:
        store: ``memory://`` by default; pass a URL or a store to test another backend.
        clock: default: a :class:`~contexten.testing.VirtualClock` that advances by itself
            when the event loop is idle (closed when the app stops). Pass
            ``VirtualClock()`` to move time only with ``clock.advance(...)``.
        capture: attach an :class:`EventCapture` as ``app.capture``.
        options: passed on to :class:`App` (``shutdown_grace``...).
    """

    relay_from_env = False  # a test's events never go to a real broker

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        store: str | EventStore = "memory://",
        *,
        clock: Clock | None = None,
        capture: bool = True,
        **options: Any,
    ) -> None:
        options.setdefault("checkpoint_interval", 0.01)
        self._own_clock = VirtualClock(auto_advance=True) if clock is None else None
        super().__init__(store, clock=clock or self._own_clock, **options)
        self.capture = EventCapture()
        if capture:
            self.capture.attach(self)

    async def stop(self) -> None:
        """Stop like :meth:`App.stop`, then stop the virtual clock it made, if any."""
        try:
            await super().stop()
        finally:
            if self._own_clock is not None:
                await self._own_clock.aclose()


def create_test_app(
    store: str | EventStore = "memory://", *, clock: Clock | None = None, **options: Any
) -> TestApp:
    """A :class:`TestApp`; see there for the arguments."""
    return TestApp(store, clock=clock, **options)
