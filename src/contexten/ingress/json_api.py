"""What the JSON API's route handlers share (``/api/v1``: the events routes here and the
read API in :mod:`contexten.api.v1`): the two refusals a handler raises, JSON answers, a
time parameter, and the guard that turns errors into status codes.

One place, so every route answers a bad parameter, an unknown id and a failing store the
same way: ``400 {"error": "bad request", "detail": ...}``, ``404 {"error": "not found"}``
and ``503 {"error": "store unavailable"}`` with ``Retry-After`` (the failure's type is
logged, never its text: it can carry payload or connection details).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from contexten.events.cloudevents import clamp_time
from contexten.events.codec import encode_json
from contexten.exceptions import StoreError
from contexten.observability.logging import get_logger

__all__ = [
    "BadRequest",
    "Handler",
    "NotFound",
    "error_response",
    "guard",
    "json_response",
    "time_param",
]

Handler = Callable[[Request], Awaitable[Response]]
"""A route's handler."""

_MAX_TIME: Final = 64

_log = get_logger("contexten.api")


class BadRequest(Exception):
    """A parameter or the body is not valid: 400 with this message."""


class NotFound(Exception):
    """What the path names does not exist, or is not visible to the caller: 404."""


def json_response(content: Any, status: int = 200) -> Response:
    """``content`` as JSON (the store's codec: times, ids and events as the log has them)."""
    return Response(encode_json(content), status, media_type="application/json")


def error_response(status: int, error: str, detail: str | None = None) -> Response:
    """An error answer; a 503 also says when to try again."""
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(body, status, headers=headers)


def time_param(request: Request, name: str) -> datetime | None:
    """Query parameter ``name`` as an ISO 8601 time with an offset, in UTC (None: absent);
    a time UTC cannot hold is clamped to the earliest or latest (as a filter bound it means
    "before everything" or "after everything").

    Raises:
        BadRequest: not such a time.
    """
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        parsed = datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if len(raw) > _MAX_TIME or parsed is None or parsed.tzinfo is None:
        raise BadRequest(f"{name} must be an ISO 8601 time with a UTC offset")
    return clamp_time(parsed)


def _raised_at(error: BaseException) -> str | None:
    """``module:function:line`` of the innermost frame of ``error``'s traceback."""
    tb = error.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    module = tb.tb_frame.f_globals.get("__name__", "?")
    return f"{module}:{code.co_name}:{tb.tb_lineno}"


def guard(handler: Handler, *, not_found: tuple[type[Exception], ...] = ()) -> Handler:
    """``handler`` answering 400 for :class:`BadRequest` (and ``ValueError``), 404 for
    :class:`NotFound` and the ``not_found`` exceptions, and 503 for anything else (the store
    failed; logged with the route and the error's type)."""
    missing: tuple[type[Exception], ...] = (NotFound, *not_found)

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except (BadRequest, ValueError) as e:
            return error_response(400, "bad request", str(e))
        except missing:
            return error_response(404, "not found")
        except Exception as e:
            # A store failure is expected; anything else is a bug, and its type alone would
            # not find it: say where it was raised (never the message: it can carry data).
            where = None if isinstance(e, StoreError) else _raised_at(e)
            _log.error(
                "API request failed", path=request.url.path, error=type(e).__name__, where=where
            )
            return error_response(503, "store unavailable")

    guarded.__name__ = handler.__name__
    return guarded
