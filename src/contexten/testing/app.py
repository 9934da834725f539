"""An in-memory app for tests: :class:`TestApp` and :func:`create_test_app`."""

from __future__ import annotations

import importlib
from typing import Any

from contexten.app import App
from contexten.clock import Clock, WallClock
from contexten.store.base import EventStore
from contexten.testing.capture import EventCapture

__all__ = ["TestApp", "create_test_app"]


def _default_clock() -> Clock:
    """The virtual clock when the test kit has one, else the wall clock."""
    try:
        module = importlib.import_module("contexten.testing.clock")
    except ImportError:
        return WallClock()
    clock: Clock = module.VirtualClock()
    return clock


class TestApp(App):
    """An :class:`App` on ``memory://`` with an :class:`EventCapture` attached.

    Use it like the real thing; ``await app.drain()`` waits until every handler is done with
    everything published so far, and ``app.capture`` holds every stored event::

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
        clock: default: the test kit's virtual clock if there is one, else the wall clock.
        capture: attach an :class:`EventCapture` as ``app.capture``.
        options: passed on to :class:`App` (``shutdown_grace``...).
    """

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
        super().__init__(store, clock=clock or _default_clock(), **options)
        self.capture = EventCapture()
        if capture:
            self.capture.attach(self)


def create_test_app(
    store: str | EventStore = "memory://", *, clock: Clock | None = None, **options: Any
) -> TestApp:
    """A :class:`TestApp`; see there for the arguments."""
    return TestApp(store, clock=clock, **options)
