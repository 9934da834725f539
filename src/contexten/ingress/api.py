"""The events API over the log: list, one, what one caused, publish, and a live stream.

=============================================  =========  =====================================
route                                          action     what
=============================================  =========  =====================================
``GET /api/v1/events``                         viewer     a page of events, filtered
``POST /api/v1/events``                        operator   publish a CloudEvent (audited)
``GET /api/v1/events/stream``                  viewer     new events as server-sent events
``GET /api/v1/events/{id}``                    viewer     one stored event
``GET /api/v1/events/{id}/caused``             viewer     the events it caused (causation id)
=============================================  =========  =====================================

Listing pages through the global log by position, newest first by default::

    GET /api/v1/events?type=github.pull_request.*&correlation_id=ENG-123&limit=50
    GET /api/v1/events?before=1234        (older than position 1234: the next page)
    GET /api/v1/events?after=1234         (newer than 1234, oldest first: tailing)
    GET /api/v1/events?as_of=2026-01-05T14:00:00Z   (the log as it was then)

Filters (combined with AND): ``type`` (a pattern: ``*`` one segment, ``**`` the rest),
``source``, ``subject``, ``correlation_id``, ``causation_id``, ``since`` / ``until`` (recorded
at or after / before) and ``as_of`` (recorded at or before). Positions never move, so a page
read while events are appended is stable, and ``next`` (the following page's URL, null when a
newest-first listing reached the start) never skips or repeats an event. The filters read
the ``events`` read model's indexes (:mod:`contexten.projections.event_search`); each request
looks at a bounded number of entries and, when that runs out, answers with what it found and
a ``next`` that continues.

The stream (``text/event-stream``) sends each new matching event as one message whose ``id``
is its log position and whose ``data`` is the event as the list shows it. It starts after
``Last-Event-ID`` (what a reconnecting ``EventSource`` sends), else after the ``since``
position, else at the head; a comment ``: keep-alive`` (with the position reached) goes out
when nothing matched for a while, and a connection lasts ``IngressConfig.stream_seconds``,
then the client reconnects and misses nothing. One connection holds at most one batch of
events (:data:`~contexten.projections.event_search.FOLLOW_BATCH`) in memory.

Publishing: :mod:`contexten.ingress.publish`.

Store failures answer 503, bad parameters 400. The audit trail (``$audit-...`` streams) is
shown only to tokens allowed ``audit:read`` and the token records (``$security-...``, hashes
only) only to those allowed ``tokens:manage`` (admins); for anyone else those events are not
there (404 by id, skipped in listings and streams).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from contexten.events.codec import encode_json
from contexten.events.envelope import Event
from contexten.exceptions import InvalidPattern
from contexten.ingress.config import IngressConfig
from contexten.ingress.json_api import (
    BadRequest,
    Handler,
    NotFound,
    guard,
    json_response,
    time_param,
)
from contexten.ingress.publish import EventPublisher
from contexten.observability.logging import get_logger
from contexten.projections.event_search import (
    SCAN_BUDGET,
    EventQuery,
    follow_events,
    search_events,
)
from contexten.projections.manager import Projections
from contexten.security.middleware import RouteAction, principal_of
from contexten.security.visibility import hidden_streams
from contexten.store.base import EventStore, RecordedEvent

__all__ = [
    "DEFAULT_LIMIT",
    "FILTERS",
    "MAX_LIMIT",
    "SCAN_BUDGET",
    "EventsAPI",
    "recorded_to_json",
]

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
FILTERS: Final = ("type", "source", "subject", "correlation_id", "causation_id")
"""The text filters of a listing (and of the stream)."""
_TIMES: Final = ("since", "until", "as_of")
_MAX_POSITION: Final = 2**63 - 1
_MAX_ID_LENGTH: Final = 200
_MAX_FILTER: Final = 300
_PATH: Final = "/api/v1/events"

_log = get_logger("contexten.ingress.api")


def recorded_to_json(rec: RecordedEvent) -> dict[str, Any]:
    """A stored event as the API shows it: where it is in the log, and the envelope."""
    return {
        "position": rec.position,
        "stream": rec.stream,
        "version": rec.version,
        "recorded_at": rec.recorded_at,
        "event": rec.event,
    }


def _int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _query(request: Request, *, times: bool = True) -> EventQuery:
    """The listing's filters from the query string (400 for a bad one); ``times``: with the
    time filters (the live stream has none: its ``since`` is a position)."""
    text: dict[str, str | None] = {}
    for name in FILTERS:
        value = request.query_params.get(name) or None
        if value is not None and len(value) > _MAX_FILTER:
            raise BadRequest(f"{name} is too long")
        text[name] = value
    query = EventQuery(
        **text,
        since=time_param(request, "since") if times else None,
        until=time_param(request, "until") if times else None,
        as_of=time_param(request, "as_of") if times else None,
        hidden=hidden_streams(principal_of(request)),
    )
    try:
        query.predicate()
    except InvalidPattern as e:
        raise BadRequest(f"type: {e}") from None
    return query


class EventsAPI:
    """The ``/api/v1/events`` routes over one store.

    Args:
        store: the log.
        config: the publishing and streaming limits (and the clock audit events use).
        stream_for: the stream a published event goes to (as webhooks: ``App.publish``'s).
        projections: the read models holding the ``events`` index (an App's); without
            them, filters test the log entry by entry (bounded per request).
    """

    def __init__(
        self,
        store: EventStore,
        config: IngressConfig,
        stream_for: Callable[[Event], str],
        projections: Projections | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.projections = projections
        self.publisher = EventPublisher(store, config, stream_for)

    def routes(self) -> list[tuple[Route, RouteAction]]:
        """The Starlette routes of this API, each with the action it needs."""

        def r(path: str, handler: Handler, method: str, action: str) -> tuple[Route, str]:
            return Route(_PATH + path, guard(handler), methods=[method]), action

        return [
            r("", self.list_events, "GET", "events:read"),
            r("", self.publisher.publish, "POST", "events:publish"),
            r("/stream", self.stream, "GET", "events:read"),
            r("/{id}", self.get_event, "GET", "events:read"),
            r("/{id}/caused", self.caused, "GET", "events:read"),
        ]

    async def list_events(self, request: Request) -> Response:
        """One page of the log, filtered (module docstring)."""
        limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT
        before = _int_param(request, "before", None, 1, _MAX_POSITION)
        after = _int_param(request, "after", None, 0, _MAX_POSITION)
        if before is not None and after is not None:
            raise BadRequest("give before or after, not both")
        query = _query(request)
        page = await search_events(
            self.store,
            query,
            projections=self.projections,
            before=before,
            after=after,
            limit=limit,
        )
        next_url = None
        if page.cursor is not None:
            keep = {
                k: request.query_params[k]
                for k in (*FILTERS, *_TIMES)
                if request.query_params.get(k)
            }
            direction = {"after": page.cursor} if after is not None else {"before": page.cursor}
            next_url = f"{_PATH}?{urlencode({**keep, **direction, 'limit': limit})}"
        return json_response(
            {
                "events": [recorded_to_json(r) for r in page.events],
                "next": next_url,
                "head": page.head,
            }
        )

    async def _visible_event(self, request: Request) -> RecordedEvent:
        event_id: str = request.path_params["id"]
        if len(event_id) > _MAX_ID_LENGTH:
            raise NotFound
        as_of = time_param(request, "as_of")
        rec = await self.store.get_event(event_id)
        hidden = hidden_streams(principal_of(request))
        if (
            rec is None
            or (hidden and rec.stream.startswith(hidden))
            or (as_of is not None and rec.recorded_at > as_of)
        ):
            raise NotFound
        return rec

    async def get_event(self, request: Request) -> Response:
        """One stored event by id, or 404 (also when recorded after ``as_of``)."""
        return json_response(recorded_to_json(await self._visible_event(request)))

    async def caused(self, request: Request) -> Response:
        """The events whose ``causation_id`` is this event's id, oldest first (``after``: a
        position, to page on)."""
        rec = await self._visible_event(request)
        limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT
        after = _int_param(request, "after", None, 0, _MAX_POSITION)
        query = EventQuery(
            causation_id=rec.event.id,
            as_of=time_param(request, "as_of"),
            hidden=hidden_streams(principal_of(request)),
        )
        page = await search_events(
            self.store,
            query,
            projections=self.projections,
            after=rec.position if after is None else max(after, rec.position),
            limit=limit,
        )
        more = len(page.events) == limit or (page.cursor or 0) < page.head
        next_url = f"{_PATH}/{rec.event.id}/caused?after={page.cursor}&limit={limit}"
        return json_response(
            {
                "cause": recorded_to_json(rec),
                "events": [recorded_to_json(r) for r in page.events],
                "next": next_url if more else None,
            }
        )

    async def stream(self, request: Request) -> Response:
        """Server-sent events of new matching events (module docstring)."""
        query = _query(request, times=False)
        last_id = request.headers.get("last-event-id")
        if last_id:
            if not last_id.isascii() or not last_id.isdigit() or len(last_id) > 19:
                raise BadRequest("Last-Event-ID must be a log position")
            after = int(last_id)
        else:
            since = _int_param(request, "since", None, 0, _MAX_POSITION)
            after = since if since is not None else await self.store.head()
        return StreamingResponse(
            self._messages(request, query, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _messages(
        self, request: Request, query: EventQuery, after: int
    ) -> AsyncIterator[str]:
        yield f"retry: 1000\nid: {after}\n: stream starts after position {after}\n\n"
        ticks = follow_events(
            self.store,
            query,
            after,
            seconds=self.config.stream_seconds,
            heartbeat=self.config.stream_heartbeat,
            gone=request.is_disconnected,
        )
        try:
            async for tick in ticks:
                if not tick.events:
                    yield f"id: {tick.position}\n: keep-alive\n\n"
                for rec in tick.events:
                    data = encode_json(recorded_to_json(rec)).decode()
                    yield f"id: {rec.position}\ndata: {data}\n\n"
        except Exception as e:  # the client reconnects with Last-Event-ID and tries again
            _log.warning("event stream ended: store failed", error=type(e).__name__)
