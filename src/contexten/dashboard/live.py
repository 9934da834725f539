"""The live stream of new events, as server-sent events of ready-made table rows.

Each message's ``id`` is the event's log position, so a browser that reconnects (the
``EventSource`` does so by itself, with ``Last-Event-ID``) continues exactly where it was:
nothing missed, nothing twice. A connection lasts a bounded time, then the browser
reconnects; a keep-alive comment goes out whenever nothing matched, so proxies keep the
connection open and a closed tab is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.requests import Request

from contexten.dashboard.data import DashboardData, EventFilter
from contexten.dashboard.render import Renderer
from contexten.exceptions import StoreError

__all__ = ["event_stream"]


async def event_stream(
    request: Request,
    data: DashboardData,
    renderer: Renderer,
    filters: EventFilter,
    after: int,
    seconds: float,
) -> AsyncIterator[str]:
    """The server-sent events of the events above ``after`` matching ``filters``, for
    ``seconds`` at most."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + seconds
    yield "retry: 1000\n\n"
    while loop.time() < ends:
        with contextlib.suppress(TimeoutError):
            await data.store.wait_for_new(after, timeout=min(2.0, ends - loop.time()))
        if await request.is_disconnected():
            return
        try:
            found, after = await data.events_after(after, filters)
        except StoreError:
            return  # the browser reconnects (Last-Event-ID) and tries again
        for rec in found:
            row = renderer.fragment("_event_row.html", {"rec": rec, "fresh": True})
            lines = "".join(f"data: {line}\n" for line in row.splitlines() if line.strip())
            yield f"id: {rec.position}\nevent: message\n{lines}\n"
        if not found:
            yield f"id: {after}\n: keep-alive\n\n"
