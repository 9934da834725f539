"""Event-driven invalidation of the Linear client's cached lookups.

The :class:`~contexten.integrations.linear.LinearClient` caches workflow states (per team)
and issue labels for ``lookup_ttl`` seconds. When Linear reports a change to one of them
(``linear.workflow_state.*``, ``linear.issue_label.*``), the cached copy is stale: the
subscription made by :func:`lookup_invalidation` drops it at once, so the next lookup reads
Linear again instead of waiting out the ttl. Register it on an app::

    app.add_subscription(linear.lookup_invalidation())

It sees echoes too (a label our own action created changes the label list just the same)
and starts from ``"now"``: a cache is empty at start, so old events have nothing to drop.
"""

from __future__ import annotations

from typing import Final

from contexten.bus.context import HandlerContext
from contexten.bus.subscription import Subscription
from contexten.events.envelope import Event
from contexten.integrations.client import current_clients
from contexten.integrations.linear.client import LinearClient

__all__ = ["LOOKUP_EVENTS", "invalidate_lookups", "lookup_invalidation"]

LOOKUP_EVENTS: Final = ("linear.workflow_state.*", "linear.issue_label.*")
"""The event types that change what :class:`LinearClient` caches."""


async def invalidate_lookups(event: Event, ctx: HandlerContext) -> None:
    """Drop what ``event`` changes from the Linear client in force, if one was created.

    No client created yet means nothing cached: the handler then does nothing (it never
    builds one, which would fail where Linear is not configured).
    """
    client = current_clients().clients().get(LinearClient.platform)
    if isinstance(client, LinearClient):
        payload = event.data.get("data") if isinstance(event.data, dict) else None
        await client.invalidate(event.type, payload if isinstance(payload, dict) else None)


def lookup_invalidation(name: str = "contexten.linear.lookup-invalidation") -> Subscription:
    """The subscription that keeps Linear lookups fresh (see the module docstring)."""
    return Subscription(
        name=name,
        patterns=LOOKUP_EVENTS,
        handler=invalidate_lookups,
        start="now",
        echoes=True,
        key=None,
    )
