"""The read API over the event log: ``GET /api/v1/events`` and ``GET /api/v1/events/{id}``.

Listing pages through the global log by position, newest first by default::

    GET /api/v1/events?type=github.pull_request.*&limit=50
    GET /api/v1/events?before=1234&limit=50        (older than position 1234)
    GET /api/v1/events?after=1234&limit=50         (newer than 1234, oldest first: tailing)

Every answer carries ``next``: the URL of the following page, or null when a newest-first
listing reached the start of the log. A type filter may match few events; each request scans
a bounded part of the log (:data:`SCAN_BUDGET` entries) and, when that runs out, answers with
what it found and a ``next`` that continues the scan, so no request is unbounded.

Store failures answer 503, bad parameters 400.

Every route needs a ``viewer`` token (the middleware checks it). The audit trail
(``$audit-...`` streams) is shown only to tokens allowed ``audit:read`` and the token
records (``$security-...``, hashes only) only to those allowed ``tokens:manage`` (admins);
for anyone else those events are not there (404 by id, skipped in listings).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from contexten.events.codec import encode_json
from contexten.events.patterns import Pattern, compile_pattern
from contexten.exceptions import InvalidPattern
from contexten.observability.logging import get_logger
from contexten.security.middleware import principal_of
from contexten.security.visibility import hidden_streams
from contexten.store.base import EventStore, RecordedEvent

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "SCAN_BUDGET", "EventsAPI", "recorded_to_json"]

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
SCAN_BUDGET: Final = 5_000
"""Log entries one listing request reads at most while filtering."""
_MAX_POSITION: Final = 2**63 - 1
_MAX_ID_LENGTH: Final = 200
_PATH: Final = "/api/v1/events"

_log = get_logger("contexten.ingress.api")

Visible = Callable[[RecordedEvent], bool]


def _visibility(request: Request) -> Visible | None:
    """What the request's principal may not see, as a filter (None: it may see it all)."""
    hidden = hidden_streams(principal_of(request))
    if not hidden:
        return None
    return lambda rec: not rec.stream.startswith(hidden)


class _BadRequest(Exception):
    pass


def recorded_to_json(rec: RecordedEvent) -> dict[str, Any]:
    """A stored event as the API shows it: where it is in the log, and the envelope."""
    return {
        "position": rec.position,
        "stream": rec.stream,
        "version": rec.version,
        "recorded_at": rec.recorded_at,
        "event": rec.event,
    }


def _json(content: Any, status: int = 200) -> Response:
    return Response(encode_json(content), status, media_type="application/json")


def _int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not low <= int(raw) <= high:
        raise _BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(raw)


async def _scan(
    read: Callable[[int | None, int], Awaitable[list[RecordedEvent]]],
    pattern: Pattern | None,
    cursor: int | None,
    limit: int,
    *,
    last_position: int | None,
    visible: Visible | None = None,
) -> tuple[list[RecordedEvent], int | None, bool]:
    """Read pages from ``cursor`` until ``limit`` matches, :data:`SCAN_BUDGET` or the log's end.

    ``read(cursor, want)`` returns the next ``want`` entries past ``cursor`` in the listing's
    direction; ``last_position`` is the final position in that direction, when there is one.
    Returns the matches, the last position looked at, and whether the end was reached.
    """
    found: list[RecordedEvent] = []
    scanned = 0
    want = limit if pattern is None and visible is None else max(limit, 200)
    while len(found) < limit and scanned < SCAN_BUDGET:
        page = await read(cursor, want)
        for rec in page:
            scanned += 1
            cursor = rec.position
            if (pattern is None or pattern.matches(rec.event.type)) and (
                visible is None or visible(rec)
            ):
                found.append(rec)
                if len(found) == limit:
                    return found, cursor, False
        # The whole page was looked at.
        if len(page) < want or page[-1].position == last_position:
            return found, cursor, True
    return found, cursor, False


class EventsAPI:
    """The ``/api/v1/events`` routes over one store."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        """The Starlette routes of this API."""
        return [
            Route(_PATH, self.list_events, methods=["GET"]),
            Route(_PATH + "/{id}", self.get_event, methods=["GET"]),
        ]

    async def list_events(self, request: Request) -> Response:
        """One page of the log, filtered by a type pattern (module docstring)."""
        try:
            limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
            before = _int_param(request, "before", None, 1, _MAX_POSITION)
            after = _int_param(request, "after", None, 0, _MAX_POSITION)
            if before is not None and after is not None:
                raise _BadRequest("give before or after, not both")
            type_param = request.query_params.get("type") or None
            pattern = compile_pattern(type_param) if type_param else None
        except (_BadRequest, InvalidPattern) as e:
            return JSONResponse({"error": "bad request", "detail": str(e)}, 400)
        assert limit is not None
        visible = _visibility(request)
        try:
            if after is not None:
                found, cursor = await self._forward(pattern, after, limit, visible)
                next_query: dict[str, Any] | None = {"after": cursor}
            else:
                found, cursor_or_none = await self._backward(pattern, before, limit, visible)
                next_query = None if cursor_or_none is None else {"before": cursor_or_none}
        except Exception as e:
            _log.error("events API: store failed", error=type(e).__name__)
            return JSONResponse({"error": "store unavailable"}, 503, headers={"Retry-After": "1"})
        next_url = None
        if next_query is not None:
            params = {**({"type": type_param} if type_param else {}), **next_query, "limit": limit}
            next_url = f"{_PATH}?{urlencode(params)}"
        return _json({"events": [recorded_to_json(r) for r in found], "next": next_url})

    async def _backward(
        self, pattern: Pattern | None, before: int | None, limit: int, visible: Visible | None
    ) -> tuple[list[RecordedEvent], int | None]:
        """Newest first below ``before``; the cursor is None once the log's start is reached."""

        async def read(cursor: int | None, want: int) -> list[RecordedEvent]:
            return await self.store.read_all_backwards(before=cursor, limit=want)

        found, cursor, at_end = await _scan(
            read, pattern, before, limit, last_position=1, visible=visible
        )
        return found, None if at_end else cursor

    async def _forward(
        self, pattern: Pattern | None, after: int, limit: int, visible: Visible | None
    ) -> tuple[list[RecordedEvent], int]:
        """Oldest first above ``after``; the cursor is the last position looked at."""

        async def read(cursor: int | None, want: int) -> list[RecordedEvent]:
            return await self.store.read_all(after=after if cursor is None else cursor, limit=want)

        found, cursor, _ = await _scan(
            read, pattern, after, limit, last_position=None, visible=visible
        )
        return found, after if cursor is None else cursor

    async def get_event(self, request: Request) -> Response:
        """One stored event by id, or 404."""
        event_id: str = request.path_params["id"]
        if len(event_id) > _MAX_ID_LENGTH:
            return JSONResponse({"error": "not found"}, 404)
        try:
            rec = await self.store.get_event(event_id)
        except Exception as e:
            _log.error("events API: store failed", error=type(e).__name__)
            return JSONResponse({"error": "store unavailable"}, 503, headers={"Retry-After": "1"})
        visible = _visibility(request)
        if rec is None or (visible is not None and not visible(rec)):
            return JSONResponse({"error": "not found"}, 404)
        return _json(recorded_to_json(rec))
