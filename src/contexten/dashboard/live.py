"""The live stream of new events, as server-sent events of ready-made table rows.

Each message's ``id`` is the event's log position, so a browser that reconnects (the
``EventSource`` does so by itself, with ``Last-Event-ID``) continues exactly where it was:
nothing missed, nothing twice. A connection lasts a bounded time, then the browser
reconnects; a keep-alive comment goes out whenever nothing matched, so proxies keep the
connection open and a closed tab is noticed.

The browser waits ``retry`` before reconnecting. A connection opens with
:data:`RETRY_MS` (the wait after a failure: a server that is down is not hammered) and, when
the server itself ends it, lowers it to :data:`PLANNED_RETRY_MS` just before, so the planned
reconnection leaves only a short gap: an event stored meanwhile shows well within the
dashboard's 500 ms target instead of a second late.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from starlette.requests import Request

from contexten.dashboard.data import DashboardData, EventFilter
from contexten.dashboard.render import Renderer
from contexten.exceptions import StoreError
from contexten.projections.event_search import follow_events

__all__ = ["KEEP_ALIVE", "PLANNED_RETRY_MS", "RETRY_MS", "event_stream"]

RETRY_MS: Final = 1000
"""How long a browser waits before reconnecting after a failed connection."""
PLANNED_RETRY_MS: Final = 50
"""How long it waits before reconnecting when the server ended the connection on purpose."""
KEEP_ALIVE: Final = 2.0
"""Seconds without a matching event before a keep-alive comment goes out."""


async def event_stream(
    request: Request,
    data: DashboardData,
    renderer: Renderer,
    filters: EventFilter,
    after: int,
    seconds: float,
) -> AsyncIterator[str]:
    """The server-sent events of the events above ``after`` matching ``filters``, for
    ``seconds`` at most (the read side's :func:`follow_events`, as the REST API's stream)."""
    yield f"retry: {RETRY_MS}\n\n"
    ticks = follow_events(
        data.store,
        filters.query(),
        after,
        seconds=seconds,
        heartbeat=KEEP_ALIVE,
        gone=request.is_disconnected,
    )
    try:
        async for tick in ticks:
            for rec in tick.events:
                row = renderer.fragment("_event_row.html", {"rec": rec, "fresh": True})
                lines = "".join(f"data: {line}\n" for line in row.splitlines() if line.strip())
                yield f"id: {rec.position}\nevent: message\n{lines}\n"
            if not tick.events:
                yield f"id: {tick.position}\n: keep-alive\n\n"
    except StoreError:
        return  # the browser reconnects (Last-Event-ID) and tries again
    yield f"retry: {PLANNED_RETRY_MS}\n\n"  # the connection's time is up: come back soon
